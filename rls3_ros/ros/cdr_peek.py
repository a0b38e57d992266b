"""Read a few fields of a serialized (CDR) message without deserializing it.

rclpy turns a received message into Python objects before a callback sees it, holding the GIL the
whole time: a ``rls3_msgs/SceneState`` with 10,000 objects took 1.1 s of that (measured), during
which no other callback of the process runs. A subscription created with ``raw=True`` gets the
serialized bytes instead; ``scene_state_prefix`` reads the header stamp and the object count from
them (microseconds), so an oversize scene state is dropped before any deserialization.

Layout read (``SceneState.msg``): a 4-byte encapsulation header, then ``header.stamp.sec`` (int32),
``header.stamp.nanosec`` (uint32), ``header.frame_id``, ``scene_id``, ``scene_type`` (strings:
uint32 length incl. NUL + bytes), ``seed`` (uint32), ``backend`` (string), then the ``objects``
sequence length (uint32). Every field before it is 4-byte aligned, so the layout is the same in
XCDR1 and plain XCDR2, either byte order. Other encapsulations (delimited / parameter-list
XCDR2) give None: the caller then deserializes as usual.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

# encapsulation id (2 bytes, big-endian) -> little-endian payload?
_PLAIN_ENCAPSULATIONS = {0x0000: False, 0x0001: True, 0x0006: False, 0x0007: True}


class ScenePrefix(NamedTuple):
    sec: int
    nanosec: int
    scene_id: str
    n_objects: int


class _Reader:
    def __init__(self, data: memoryview, little: bool) -> None:
        self.data, self.order, self.pos = data, "little" if little else "big", 4  # after the encapsulation

    def u32(self) -> int:
        self.pos = 4 + ((self.pos - 4 + 3) & ~3)  # alignment counts from the end of the encapsulation
        if self.pos + 4 > len(self.data):
            raise ValueError("truncated")
        v = int.from_bytes(self.data[self.pos: self.pos + 4], self.order)
        self.pos += 4
        return v

    def string(self, keep: int = 0) -> bytes:
        """Skip a string; return its first ``keep`` bytes."""
        n = self.u32()
        if n > len(self.data) - self.pos:
            raise ValueError("truncated string")
        s = bytes(self.data[self.pos: self.pos + min(n, keep)])
        self.pos += n
        return s.rstrip(b"\x00")


def scene_state_prefix(data: bytes) -> Optional[ScenePrefix]:
    """(stamp sec, nanosec, scene_id, object count) of a serialized SceneState; None when the
    bytes are not plain CDR or are too short (the caller deserializes them to find out)."""
    try:
        mv = memoryview(data).cast("B")
        if len(mv) < 8:
            return None
        little = _PLAIN_ENCAPSULATIONS.get(int.from_bytes(mv[0:2], "big"))
        if little is None:
            return None
        r = _Reader(mv, little)
        sec = r.u32()
        sec = sec - (1 << 32) if sec >= 1 << 31 else sec  # int32
        nanosec = r.u32()
        r.string()  # header.frame_id
        scene_id = r.string(keep=80).decode("utf-8", "replace")
        r.string()  # scene_type
        r.u32()  # seed
        r.string()  # backend
        return ScenePrefix(sec, nanosec, scene_id, r.u32())
    except (ValueError, TypeError):
        return None
