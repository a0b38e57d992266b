"""``rls3 bag``: look into bags and convert datasets (no rclpy).

    rls3 bag info BAG                       topics, types, counts, duration, whether each topic's first
                                            message decodes as its declared type (exit 2 if one does not)
    rls3 bag export DATASET_DIR --out BAG [--storage mcap|sqlite3] [--topic /rls3/samples]
                                            a caption dataset (rls3 captions) as rls3_msgs/Sample
    rls3 bag samples BAG [--topic T] [--only-valid]
                                            decode every Sample (a check before offline training)

Exit 0 on success, 2 with a one-line reason for a missing/damaged bag or bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import List, Optional

from rls3_ros.bags.bagio import BagError, BagReader, cli_boundary
from rls3_ros.bags.checks import printable


def _info(a) -> int:
    """Topics, types, counts; the first message of every topic is decoded with the bag's own
    definitions (or this install's): a topic whose payload does not match its declared type
    makes it exit 2 with one line on stderr after the table."""
    bad = []
    with BagReader(a.bag) as bag:
        counts = bag.topic_counts()
        dur = max(0, bag.end_time - bag.start_time) / 1e9 if bag.message_count else 0.0
        print(f"bag:       {printable(a.bag, 300)}")
        print(f"messages:  {bag.message_count}")
        print(f"duration:  {dur:.3f} s")
        if bag.message_count:
            print(f"start:     {bag.start_time} ns")
        print("topics:")
        for c in sorted(bag.connections, key=lambda c: c.topic):
            label = f"{printable(c.topic)}  [{printable(c.msgtype)}]  {counts.get(c.topic, 0)} msgs"
            if not bag.can_decode(c.msgtype):
                print(f"  {label}  raw only (no definition)")
                continue
            problem = bag.decode_problem(c)
            if problem is None:
                print(f"  {label}  decodable" + ("" if counts.get(c.topic, 0) else " (no message to check)"))
            else:
                print(f"  {label}  NOT DECODABLE: first message {problem}")
                bad.append(f"{printable(c.topic)}: {problem}")
    if bad:
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise BagError(f"bag {str(a.bag)!r}: {len(bad)} topic(s) hold messages that do not match their declared type: {shown}")
    return 0


def _export(a) -> int:
    from rls3_ros.bags.dataset_export import export_samples_to_bag
    from rls3_ros.captions.dataset import iter_dataset

    src = Path(a.dataset)
    if not (src / "samples.jsonl").exists():
        raise BagError(f"{str(src)!r} is not a caption dataset (no samples.jsonl)")
    try:
        samples = iter_dataset(src)
        n = export_samples_to_bag(samples, a.out, storage=a.storage, topic=a.topic)
    except BagError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise BagError(f"cannot read dataset {str(src)!r}: {exc}") from None
    print(f"exported {n} samples to {a.out} ({a.storage}, topic {a.topic})")
    return 0


def _samples(a) -> int:
    from rls3_ros.bags.sample_reader import iter_samples

    n = 0
    terms: Counter = Counter()
    invalid = 0
    for s in iter_samples(a.bag, topic=a.topic, only_valid=a.only_valid):
        n += 1
        invalid += not s.valid
        for r in s.relations:
            terms.update(r.terms)
    print(f"{n} samples ({invalid} invalid), {sum(terms.values())} relation terms: "
          + printable(", ".join(f"{t} {k}" for t, k in terms.most_common()), 2000))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rls3 bag", description="Inspect bags and export datasets to bags.")
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("info", help="topics, types and counts of a bag")
    i.add_argument("bag")
    e = sub.add_parser("export", help="a caption dataset directory as a bag of rls3_msgs/Sample")
    e.add_argument("dataset")
    e.add_argument("-o", "--out", required=True)
    e.add_argument("-s", "--storage", choices=["mcap", "sqlite3"], default="mcap")
    e.add_argument("--topic", default="/rls3/samples")
    s = sub.add_parser("samples", help="decode the Samples of a bag")
    s.add_argument("bag")
    s.add_argument("--topic", default=None)
    s.add_argument("--only-valid", action="store_true")
    return p


def cli_bag(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``rls3 bag``; returns the exit code (never a traceback)."""
    try:
        a = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    return cli_boundary("bag", lambda: {"info": _info, "export": _export, "samples": _samples}[a.cmd](a))


if __name__ == "__main__":
    sys.exit(cli_bag())
