"""Helper program for test_reliability_faults_trainer.py: saves one LoRA adapter of the project's
embedded VLM (``embedded:random``: the real network with untrained weights) through the real
``AdapterHost.save`` (``rls3_ros/vlm/lora.py``), so the test can SIGKILL it mid write.

    python reliability_adapter_writer.py DIRECTORY VALUE [--pause]

The adapter's LoRA B matrices are all set to VALUE (so the test can tell which save it reads).
With ``--pause``, after peft wrote the files into the temp directory and before the rename,
it prints ``PAUSE`` and sleeps, so the test's SIGKILL lands mid write. Prints ``SAVED <path>``.
"""

from __future__ import annotations

import signal
import sys

import peft
import torch

from rls3_ros.vlm.answers import load_model


def main() -> int:
    directory, value = sys.argv[1], float(sys.argv[2])
    pausing = "--pause" in sys.argv
    torch.set_num_threads(1)
    model = load_model("embedded:random")
    host = model.host
    host.ensure_adapter()
    with torch.no_grad():
        for name, p in host.model.named_parameters():
            if "lora_B" in name:
                p.fill_(value)
    orig = peft.PeftModel.save_pretrained

    def save_pretrained(self, d, *a, **kw):
        out = orig(self, d, *a, **kw)
        if pausing:
            print(f"PAUSE {d}", flush=True)
            while True:  # until the test kills this process mid-save
                signal.pause()
        return out

    peft.PeftModel.save_pretrained = save_pretrained
    print(f"SAVED {model.save_adapter(directory)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
