"""Write core ``Sample``s to a rosbag2 bag as ``rls3_msgs/msg/Sample`` (no rclpy).

The caption dataset's MCAP export and the way to make reproducible offline training sets:
``export_samples_to_bag(samples, "ds_bag")`` then :mod:`rls3_ros.bags.sample_reader` (or
``rls3 replay ds_bag``) gives them back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from rls3_ros.bags.bagio import AtomicBagWriter, BagError
from rls3_ros.bags.convert import SAMPLE_TYPE, make_header, sample_to_bagmsg
from rls3_ros.core.scene import Sample

DEFAULT_TOPIC = "/rls3/samples"
# bag time of samples whose scene has no stamp: a fixed epoch + 1 ms per sample
_SYNTHETIC_T0 = 1_700_000_000_000_000_000
_SYNTHETIC_DT = 1_000_000


def export_samples_to_bag(
    samples: Iterable[Sample],
    path: os.PathLike | str,
    storage: str = "mcap",
    topic: str = DEFAULT_TOPIC,
) -> int:
    """Write ``samples`` to a new bag at ``path``; returns the number written.

    Bag time and header stamp of a sample = ``sample.scene.stamp_ns``; samples without a
    stamp (0) or out of order get a synthetic, strictly increasing time (1 ms apart) that is
    also written into their header, so the bag is in time order. The bag appears at ``path``
    only once complete (written to ``path.partial`` first). Raises :class:`BagError`.
    """
    writer = AtomicBagWriter(Path(path), storage=storage)
    writer.open()
    n = 0
    last = -1
    try:
        writer.add_topic(topic, SAMPLE_TYPE)
        store = writer.typestore
        for s in samples:
            t = int(s.scene.stamp_ns)
            if t <= 0 and last < 0:
                t = _SYNTHETIC_T0
            elif t <= last:
                t = last + _SYNTHETIC_DT
            header = make_header(store, t) if t != int(s.scene.stamp_ns) else None
            msg = sample_to_bagmsg(store, s, header)
            writer.write(topic, t, store.serialize_cdr(msg, SAMPLE_TYPE))
            last = t
            n += 1
    except BagError:
        writer.abort()
        raise
    except BaseException as exc:
        writer.abort()
        if isinstance(exc, Exception):
            raise BagError(f"cannot export samples to {str(path)!r}: {exc}") from exc
        raise
    writer.set_custom_data("rls3.content", "samples")
    writer.close()
    return n
