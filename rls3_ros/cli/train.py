"""``rls3 train``: the RLS3 loop in one process on the embedded default (the main job).

    rls3 train                      # full run (< 15 min on 2 CPU cores), writes runs/<timestamp>/
    rls3 train --quick              # ~2 min smoke run of the same pipeline
    rls3 train --agent random       # the paper's baseline (also: sac, ppo, miner, upper, teacher)
    rls3 train --resume runs/<ts>   # continue a stopped run from its last fine-tune
    rls3 train --config my.yaml --set loop.E=2 --set run.seed=3

Defaults come from the schema ``rls3_ros.loop.config`` (``python -m rls3_ros.loop.config`` lists every
key), then ``config/train.yaml`` (shipped next to the package; ``--config`` overrides any subset),
``--quick`` applies its ``quick:`` section on top, then ``--set``; the result is validated against
the schema (a bad value names the key, the value and the allowed range; unknown keys are refused), and
that validated ``TrainConfig`` is what the loop receives. The configuration actually used is written
to ``runs/<ts>/config.yaml``; ``--resume`` reads it back from there (and validates it again).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List

import yaml

from rls3_ros.loop.config_files import apply_sets, load_train_config  # noqa: F401 - part of this module's API


def train_config(config: str = "", quick: bool = False, sets: List[str] = ()):
    """The validated run configuration (``rls3_ros.loop.config.TrainConfig``) of ``rls3 train``: the
    schema's defaults, ``config/train.yaml``, ``--config``, ``--quick``, ``--set``; ``ValueError``
    naming every bad or unknown key."""
    from rls3_ros.loop.config import validate_config

    return validate_config(load_train_config(config, quick, list(sets)))


def cli_train(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="rls3 train", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="~2 min smoke run (the quick: section of the config)")
    from rls3_ros.loop.config import AGENT_KEYS

    ap.add_argument("--agent", choices=tuple(AGENT_KEYS), help="sampler (default: config/train.yaml's run.agent)")
    ap.add_argument("--seed", type=int, help="run seed")
    ap.add_argument("--config", default="", help="YAML overriding config/train.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one parameter, e.g. --set loop.E=2 (repeatable)")
    ap.add_argument("--runs", default="runs", help="parent directory of run directories (default: runs)")
    ap.add_argument("--out", default="", help="exact run directory to create (default: <runs>/<timestamp>)")
    ap.add_argument("--resume", default="", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last fine-tune")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--no-pretrain", action="store_true", help="do not build the base VLM if it is missing")
    args = ap.parse_args(argv)

    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from rls3_ros.loop.config import validate_config
    from rls3_ros.loop.runner import run_inprocess
    from rls3_ros.loop.run_dir import RunDir, new_run_dir, read_yaml

    def log(msg: str) -> None:
        print(f"[rls3 train] {msg}", file=sys.stderr, flush=True)

    if args.resume:
        run = RunDir(args.resume)
        if not os.path.exists(run.config_path):
            print(f"rls3 train: {args.resume} is not a run directory (no config.yaml)", file=sys.stderr)
            return 2
        from rls3_ros.loop.run_dir import CheckpointError

        try:  # before building anything: ours, current format, one checkpoint verifies (run_dir docstring)
            cfg = validate_config(read_yaml(run.config_path))
            resumable = run.check_resumable()
        except (OSError, ValueError, yaml.YAMLError, CheckpointError) as e:
            print(f"rls3 train: {_one_line(e)}", file=sys.stderr)
            return 2
        if not resumable:
            log("no checkpoint yet: starting this run from the beginning")
        path, resume = run.path, bool(resumable)
    else:
        try:
            sets = list(args.set)
            if args.agent:
                sets.append(f"run.agent={args.agent}")
            if args.seed is not None:
                sets.append(f"run.seed={args.seed}")
            cfg = train_config(args.config, args.quick, sets)
        except (OSError, ValueError, yaml.YAMLError) as e:
            print(f"rls3 train: {e}", file=sys.stderr)
            return 2
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            path = args.out
        else:
            path = new_run_dir(args.runs)
        resume = False
    log(f"run directory: {path}")
    t0 = time.monotonic()
    try:
        summary = run_inprocess(cfg, path, resume=resume, progress=not args.no_progress, log=log,
                                pretrain=not args.no_pretrain)
    except KeyboardInterrupt:
        log(f"interrupted; continue with: rls3 train --resume {path}")
        return 130
    except ValueError as e:
        print(f"rls3 train: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a full disk while saving: one line (the last checkpoint is intact), else re-raise
        from rls3_ros.core.atomic_io import disk_full_message

        msg = disk_full_message(e)
        if msg is None:
            raise
        print(f"rls3 train: {msg}; the last complete checkpoint is kept (free space, then: "
              f"rls3 train --resume {path})", file=sys.stderr)
        return 2
    dt = time.monotonic() - t0
    log(f"done ({summary['stop_reason']}) in {dt / 60:.1f} min: {summary['iterations']} fine-tunes, "
        f"{summary['valid_samples']} valid samples, {summary['renders']} renders")
    log(f"test accuracy: base {summary['base_accuracy']:.3f} -> last adapter {summary['final_accuracy']:.3f}")
    run = RunDir(path)
    if summary.get("served") is not None:
        it = summary["served"]["served_iteration"]
        log(f"serve it: rls3 query --run {run.path} ... (adapter {summary['served']['adapter']})" if it else
            "no adapter beat the base on validation: the base stays served")
    log(f"report: {run.report_path}")
    log(f"plot:   {run.plot_path}")
    print(run.path)
    return 0


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(cli_train(sys.argv[1:]))
