"""Core ``Sample``s from a bag of ``rls3_msgs/msg/Sample`` (offline fine-tuning; no rclpy).

    for s in iter_samples("run_bag"):          # every Sample topic, in bag-time order
        ...
    samples = read_samples("run_bag", topic="/rls3/samples", only_valid=True, limit=500)

Messages are deserialized with the project typestore (bags of other versions of rls3_msgs
are read with their own embedded definitions) and converted by :mod:`rls3_ros.bags.convert`.
A missing/truncated/corrupted bag raises :class:`~rls3_ros.bags.bagio.BagError`.
"""

from __future__ import annotations

import os
from typing import Iterator, List, Optional

from rls3_ros.bags.bagio import BagError, BagReader
from rls3_ros.bags.convert import SAMPLE_TYPE, BagConversionError, bagmsg_to_sample
from rls3_ros.core.image_codec import ImageConversionError
from rls3_ros.core.scene import Sample


def sample_topics(path: os.PathLike | str) -> List[str]:
    """Topics of ``path`` that carry rls3_msgs/msg/Sample."""
    with BagReader(path) as bag:
        return sorted(t for t, ty in bag.topics.items() if ty == SAMPLE_TYPE)


def iter_samples(
    path: os.PathLike | str,
    topic: Optional[str] = None,
    only_valid: bool = False,
    limit: Optional[int] = None,
    skip_unconvertible: bool = False,
) -> Iterator[Sample]:
    """Yield core Samples from ``path`` (all Sample topics, or ``topic``) in bag-time order.

    ``skip_unconvertible``: skip messages whose content cannot become a core Sample (e.g. an
    unsupported image encoding) instead of raising BagError.
    """
    with BagReader(path) as bag:
        conns = bag.connections_for([topic] if topic else None, [SAMPLE_TYPE])
        if not conns:
            raise BagError(f"bag {str(path)!r} has no {SAMPLE_TYPE} topic (it has {bag.topics})")
        n = 0
        for conn, _t, raw in bag.messages(conns):
            msg = bag.deserialize(raw, conn.msgtype)
            try:
                s = bagmsg_to_sample(msg)
            except (BagConversionError, ImageConversionError, AttributeError, TypeError, ValueError, KeyError,
                    IndexError, OverflowError) as exc:
                # the last ones: a bag whose own Sample definition differs from this install's
                if skip_unconvertible:
                    continue
                what = exc if isinstance(exc, (BagConversionError, ImageConversionError)) else (
                    f"does not convert to a core Sample ({exc.__class__.__name__}: {exc}); "
                    f"the bag's definition of {SAMPLE_TYPE} differs from this install's?")
                raise BagError(f"bag {str(path)!r}: sample {str(getattr(msg, 'sample_id', '?'))[:80]!r} on {conn.topic}: {what}") from None
            if only_valid and not s.valid:
                continue
            yield s
            n += 1
            if limit is not None and n >= limit:
                return


def read_samples(path: os.PathLike | str, **kwargs) -> List[Sample]:
    """``list(iter_samples(path, **kwargs))``."""
    return list(iter_samples(path, **kwargs))


def iter_episodes(path: os.PathLike | str, topic: Optional[str] = None, only_valid: bool = True) -> Iterator[tuple]:
    """(episode, [Sample, ...]) for each run of consecutive samples with the same ``episode``,
    in bag order: a recorded RL run replayed as the episodes the scheduler saw (offline
    fine-tuning batches of E episodes x T0 samples)."""
    current: Optional[int] = None
    batch: List[Sample] = []
    for s in iter_samples(path, topic=topic, only_valid=only_valid):
        if current is not None and s.episode != current:
            yield current, batch
            batch = []
        current = s.episode
        batch.append(s)
    if batch:
        yield current, batch
