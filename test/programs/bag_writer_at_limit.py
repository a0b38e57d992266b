"""Write a bag of N std_msgs/String messages (1000 characters each, 1 ms apart) with the
project's AtomicBagWriter, optionally under a file size limit (RLIMIT_FSIZE: writes past it
fail with EFBIG), the way ``rls3 record``'s writer thread does: on a failure ``writer.fail``.

    python bag_writer_at_limit.py OUT --count N [--storage mcap|sqlite3] [--limit BYTES]

Prints ``CLOSED <path>`` after a clean close, else ``FAILED <one-line reason>``.
"""

import argparse
import resource
import sys

from rls3_ros.bags.bagio import AtomicBagWriter


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--storage", default="mcap")
    p.add_argument("--limit", type=int, default=0)
    a = p.parse_args()
    if a.limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (a.limit, a.limit))
    w = AtomicBagWriter(a.out, storage=a.storage).open()
    try:
        w.add_topic("/text", "std_msgs/msg/String")
        w.checkpoint()
        String = w.typestore.types["std_msgs/msg/String"]
        for i in range(a.count):
            raw = w.typestore.serialize_cdr(String(data=f"{i:08d}" + "x" * 992), "std_msgs/msg/String")
            w.write("/text", 1_000_000_000 + i * 1_000_000, raw)
        print(f"CLOSED {w.close()}", flush=True)
    except Exception as exc:  # noqa: BLE001 - what the recorder's writer thread does
        print(f"FAILED {w.fail(exc) if w.is_open else exc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
