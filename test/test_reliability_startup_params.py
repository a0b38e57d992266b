"""Every node refuses bad parameters at startup with a one-line reason and a non-zero exit, never a
traceback: bad YAML / missing params file, unknown backend, missing model path, wrongly typed
values, out-of-range values, a bad namespace remap.

Table-driven; the node processes run a few at a time (each only imports and exits).

Not in the table, by design (tested in test_vlm_nodes.py): ``spatial_query`` with a model that
does not exist (yet) stays up, answers "model not ready" and loads the model when it appears;
``spatial_query`` with out-of-range values (e.g. ``frame_buffer:=0``) is a lifecycle node whose
configure transition fails: it logs "bad parameter: ..." and stays unconfigured (answering
"not active"), so a lifecycle manager can reconfigure it. A *wrongly typed* value, which rclpy
refuses before configure, exits like every other node (in the table).
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reliability_common import TEST_MODEL, node_env
from ros_harness import startup_failure_problems

pytestmark = pytest.mark.timeout(300)

BAD_YAML = "/**:\n  ros__parameters:\n    image_size: [1, 2\n    seed: {\n"
WRONG_TYPES_YAML = "/**:\n  ros__parameters:\n    buffer_size: lots\n"


def _cases(tmp: Path):
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text(BAD_YAML)
    typed = tmp / "typed.yaml"
    typed.write_text(WRONG_TYPES_YAML)
    missing = tmp / "no_such_params.yaml"
    no_model = tmp / "no_such_model_dir"
    q = TEST_MODEL
    return [
        # (node module, ros args, expected text in the reason)
        ("sim_bridge", ["--params-file", str(bad_yaml)], "parse params file"),
        ("sim_bridge", ["--params-file", str(missing)], "parse params file"),
        ("sim_bridge", ["-p", "backend:=unity"], "unknown simulator backend 'unity'"),
        ("sim_bridge", ["-p", "image_size:=big"], "parameter 'image_size'"),
        ("sim_bridge", ["-p", "image_qos:=fastest"], "image_qos must be"),
        ("sim_bridge", ["-p", "seed:=-4"], "seed must be >= 0"),
        ("sim_bridge", ["-r", "__ns:=/bad-ns"], "remap"),
        ("caption_oracle", ["--params-file", str(bad_yaml)], "parse params file"),
        ("caption_oracle", ["-p", "max_pairs:=many"], "max_pairs"),
        ("vlm_trainer", ["--params-file", str(bad_yaml)], "parse params file"),
        ("vlm_trainer", ["-p", f"model:=embedded:{no_model}"], "cannot load model"),
        ("vlm_trainer", ["-p", "model:=unknownfamily:/x"], "unknown VLM family"),
        ("vlm_trainer", ["-p", f"model:={q}", "--params-file", str(typed)], "parameter 'buffer_size'"),
        ("vlm_trainer", ["-p", f"model:={q}", "-p", "train_instance:=sideways"], "train_instance must be"),
        ("vlm_trainer", ["-p", f"model:={q}", "-p", f"adapter:={no_model}"], "cannot load model"),
        ("spatial_query", ["--params-file", str(bad_yaml)], "parse params file"),
        ("spatial_query", ["-p", f"model:={q}", "-p", "frame_buffer:=thirty"], "parameter 'frame_buffer'"),
        ("rl_sampler", ["--params-file", str(bad_yaml)], "parse params file"),
        ("rl_sampler", ["-p", "agent:=dqn"], "agent must be"),
        ("rl_sampler", ["-p", "T:=eight"], "parameter 'T'"),
        ("rl_sampler", ["-p", "resume:=true"], "resume needs run_dir"),
        ("rl_sampler", ["-p", "T0:=0"], "T0"),
    ]


def _run(module: str, args, env, timeout=120.0):
    p = subprocess.run([sys.executable, "-m", f"rls3_ros.ros.nodes.{module}", "--ros-args", *args], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def test_every_node_refuses_bad_parameters_with_one_line_and_nonzero_exit(tmp_path):
    env = node_env(tmp_path)
    cases = _cases(tmp_path)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda c: _run(c[0], c[1], env), cases))
    problems = []
    print()
    for (module, args, expected), (code, out) in zip(cases, results):
        reason = [line for line in out.splitlines() if "startup failed" in line]
        shown = reason[0] if reason else out.strip().splitlines()[-1:] or ["(no output)"]
        print(f"  {module:15s} {' '.join(args)[-60:]:60s} -> exit {code}: {str(shown)[:150]}")
        problems += startup_failure_problems(f"{module} {args}", code, out, expected)
    assert not problems, "\n".join(problems)
