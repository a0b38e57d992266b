"""``rls3 finetune``: offline LoRA fine-tuning from a recorded bag or a caption dataset.

    rls3 finetune --bag runs/bag_20261125 --out adapters/from_bag [--steps 100] [--model embedded]
    rls3 finetune --dataset data/captions --out adapters/from_dataset --eval-fraction 0.2

Reproducible datasets for robot teams: the samples come from a rosbag2 of
``rls3_msgs/Sample`` (``rls3 record`` of the caption oracle's ``samples`` topic, or
``rls3 bag export``) or from a ``rls3 captions`` dataset directory instead of the live
simulator. Valid samples with relations are used; a held-out fraction (by sample order) is
evaluated before and after. The adapter is saved atomically in peft format and can be given
to ``spatial_query`` (``adapter:=DIR`` or the ``~/set_adapter`` service).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List


def load_samples(bag: str = "", dataset: str = "", topic: str = "", limit: int = 0):
    if bool(bag) == bool(dataset):
        raise ValueError("give exactly one of --bag or --dataset")
    if bag:
        from rls3_ros.bags.sample_reader import read_samples

        samples = read_samples(bag, topic=topic or None, only_valid=True, limit=limit or None)
    else:
        from rls3_ros.captions.dataset import read_dataset

        if not Path(dataset, "samples.jsonl").is_file():
            raise ValueError(f"{dataset} is not a caption dataset (no samples.jsonl)")
        samples = [s for s in read_dataset(dataset) if s.valid]
        samples = samples[:limit] if limit else samples
    samples = [s for s in samples if s.relations]
    if not samples:
        raise ValueError("no valid captioned samples found")
    return samples


def cli_finetune(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="rls3 finetune", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", help="rosbag2 directory/file with rls3_msgs/Sample messages")
    src.add_argument("--dataset", help="caption dataset directory (rls3 captions --out DIR)")
    p.add_argument("--topic", default="", help="Sample topic in the bag (default: all Sample topics)")
    p.add_argument("--out", required=True, help="adapter output directory")
    p.add_argument("--model", default="grounded", help="model spec (default: grounded)")
    p.add_argument("--adapter", default="", help="adapter to continue from")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--limit", type=int, default=0, help="use at most N samples (0 = all)")
    p.add_argument("--eval-fraction", type=float, default=0.2, help="held-out share evaluated before/after")
    a = p.parse_args(argv)
    if not 0.0 <= a.eval_fraction < 1.0:
        print("rls3 finetune: --eval-fraction must be in [0, 1)", file=sys.stderr)
        return 2
    from rls3_ros.bags.bagio import BagError
    from rls3_ros.vlm.answers import load_model

    try:
        samples = load_samples(a.bag or "", a.dataset or "", a.topic, a.limit)
    except (BagError, ValueError, OSError) as e:
        print(f"rls3 finetune: {e}", file=sys.stderr)
        return 2
    n_eval = int(round(len(samples) * a.eval_fraction))
    train, held = samples[: len(samples) - n_eval], samples[len(samples) - n_eval:]
    if not train:
        print("rls3 finetune: no samples left to train on (lower --eval-fraction)", file=sys.stderr)
        return 2
    try:
        vlm = load_model(a.model, a.adapter)
    except (FileNotFoundError, ValueError) as e:
        print(f"rls3 finetune: cannot load model {a.model!r}: {e}", file=sys.stderr)
        return 2
    print(f"rls3 finetune: {len(train)} training samples, {len(held)} held out, {a.steps} steps", flush=True)
    before = vlm.evaluate(held) if held else None
    from tqdm import tqdm

    bar = tqdm(total=a.steps, unit="step", desc="fine-tune")

    def progress(step, total, loss):
        bar.n = step
        bar.set_postfix(loss=f"{loss:.3f}", refresh=True)

    t0 = time.monotonic()
    res = vlm.fine_tune(train, a.steps, progress=progress)
    bar.close()
    path = vlm.save_adapter(a.out)
    after = vlm.evaluate(held) if held else None
    summary = {"adapter": path, "train_samples": len(train), "held_out": len(held), "steps": res.steps,
               "final_loss": res.final_loss, "seconds": round(time.monotonic() - t0, 1),
               "held_out_accuracy_before": before.accuracy if before else None,
               "held_out_accuracy_after": after.accuracy if after else None}
    Path(a.out, "finetune_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0
