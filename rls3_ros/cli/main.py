"""``rls3``: the one entry point (see README, "Commands").

Each subcommand lives in its own module and is imported only when used, so
``rls3 --help`` is instant and a broken optional part cannot break the others.
"""

from __future__ import annotations

import importlib
import sys
from typing import Dict, List, Optional, Tuple

from rls3_ros.bench import BENCHMARKS  # the names only: each benchmark module loads when run

# name -> (module, function, one-line help)
COMMANDS: Dict[str, Tuple[str, str, str]] = {
    "launch": ("rls3_ros.ros.launcher", "cli_launch", "start the node graph: rls3 launch training|query"),
    "pretrain": ("rls3_ros.cli.pretrain", "cli_pretrain", "build and cache a base VLM (--model grounded (default) | embedded)"),
    "train": ("rls3_ros.cli.train", "cli_train", "the RLS3 loop in one process (the main job)"),
    "finetune": ("rls3_ros.cli.finetune", "cli_finetune", "offline LoRA fine-tuning from a bag or caption dataset"),
    "query": ("rls3_ros.cli.query", "cli_query", "one spatial query: --image F --subject A --reference B"),
    "sim": ("rls3_ros.cli.main", "cli_sim", "simulator tools: rls3 sim sheet --out F.png"),
    "captions": ("rls3_ros.cli.dataset", "cli_captions", "a captioned dataset: --n N --out DIR"),
    "record": ("rls3_ros.ros.recorder", "cli_record", "record topics to a rosbag2 (MCAP/sqlite3)"),
    "replay": ("rls3_ros.ros.replayer", "cli_replay", "replay a rosbag2 with its original timing"),
    "bag": ("rls3_ros.cli.bag", "cli_bag", "bag tools: rls3 bag info|export|samples"),
    "bench": ("rls3_ros.bench", "cli_bench", "benchmarks: rls3 bench " + "|".join(BENCHMARKS)),
}


def cli_sim(argv: List[str]) -> int:
    """``rls3 sim sheet ...``: contact sheet of random valid scenes."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: rls3 sim sheet --out F.png [--n 16] [--size 224] [--seed 0]")
        return 0
    if argv[0] != "sheet":
        print(f"rls3 sim: unknown tool {argv[0]!r} (known: sheet)", file=sys.stderr)
        return 2
    from rls3_ros.sim.contact_sheet import cli_sim_sheet

    return cli_sim_sheet(argv[1:])


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: rls3 <command> [options]   (rls3 <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"rls3: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as e:
        print(f"rls3 {name}: not available in this install ({e})", file=sys.stderr)
        return 2
    try:
        return int(func(rest) or 0)
    except KeyboardInterrupt:
        print(f"rls3 {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
