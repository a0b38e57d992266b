"""What a bag may make us do: type names, payloads and topic types checked before use (no rclpy).

A bag is untrusted input (DESIGN.md, "Trust boundaries"): its message type names select no code,
its payloads are checked against their declared type before they are published, and a topic
the project knows carries only the types its subscribers expect.

- :func:`normalise_msgtype` — ``pkg/msg/Name`` (or ``pkg/Name``) checked against the ROS naming
  rules; anything else (paths, quotes, control characters, ``a.b``) is refused with a reason.
- :data:`PUBLISHABLE_PACKAGES` — the interface packages whose Python classes ``rls3 replay`` and
  ``rls3 record`` may use (a fixed list: a bag or the graph never names a module to import).
- :func:`payload_problem` — does a raw CDR payload decode as its declared type (no trailing
  bytes)? ``None`` when it does, else a one-line reason.
- :func:`expected_types` — the types a project topic name stands for (``image_raw`` -> Image or
  CompressedImage, ``camera_info`` -> CameraInfo, ...), ``None`` for names the project has no
  rule for.
- :func:`printable` — a name from a file made safe to print on one line (control characters
  escaped, length capped).
"""

from __future__ import annotations

import re
from typing import FrozenSet, Optional

from rls3_ros.core.image_codec import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE

# ROS 2 interface names: package = lower-case letters, digits, underscores (starting with a letter,
# no double or trailing underscore), type = CamelCase alphanumerics.
_PKG = r"[a-z](?:[a-z0-9]|_(?!_))*(?<!_)"
_TYPE = r"[A-Z][A-Za-z0-9]*"
MSGTYPE_RE = re.compile(rf"({_PKG})/(?:msg/)?({_TYPE})")  # use with fullmatch
MAX_NAME_LEN = 256

# Interface packages whose generated Python message classes may be loaded to publish or
# subscribe raw CDR. Only these: the package part of a name read from a bag or the graph
# selects an entry of this list, never a module by itself.
PUBLISHABLE_PACKAGES = (
    "builtin_interfaces",
    "std_msgs",
    "sensor_msgs",
    "geometry_msgs",
    "rosgraph_msgs",
    "rls3_msgs",
    "action_msgs",
    "unique_identifier_msgs",
    "lifecycle_msgs",
    "rcl_interfaces",
    "nav_msgs",
    "diagnostic_msgs",
    "visualization_msgs",
    "shape_msgs",
    "stereo_msgs",
    "trajectory_msgs",
    "tf2_msgs",
)

SCENE_TYPE = "rls3_msgs/msg/SceneState"
SAMPLE_MSG_TYPE = "rls3_msgs/msg/Sample"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"

# last name segment(s) of the topics the project's nodes use -> the types their endpoints have
_TOPIC_RULES = (
    (re.compile(r"(^|/)image_raw/compressed$"), frozenset({COMPRESSED_IMAGE_TYPE})),
    (re.compile(r"(^|/)compressed$"), frozenset({COMPRESSED_IMAGE_TYPE})),
    (re.compile(r"(^|/)(image_raw|image|image_rect|image_rect_color|image_color|image_mono)$"),
     frozenset({IMAGE_TYPE, COMPRESSED_IMAGE_TYPE})),
    (re.compile(r"(^|/)camera_info$"), frozenset({CAMERA_INFO_TYPE})),
    (re.compile(r"^/clock$"), frozenset({CLOCK_TYPE})),
    (re.compile(r"(^|/)scene_state$"), frozenset({SCENE_TYPE})),
    (re.compile(r"(^|/)samples$"), frozenset({SAMPLE_MSG_TYPE})),
    (re.compile(r"(^|/)training_metrics$"), frozenset({"rls3_msgs/msg/TrainingMetrics"})),
    (re.compile(r"(^|/)adapter$"), frozenset({"rls3_msgs/msg/AdapterInfo"})),
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class BadTypeName(ValueError):
    """A message type name that is not a ROS 2 interface name; ``str()`` is a one-line reason."""


def printable(text: object, limit: int = 120) -> str:
    """``text`` on one printable line: control and bidi characters escaped, cut to ``limit``."""
    s = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", str(text))
    return s if len(s) <= limit else s[: limit - 3] + "..."


def normalise_msgtype(name: str) -> str:
    """``pkg/msg/Name`` for a valid message type name (``pkg/Name`` accepted); BadTypeName else."""
    if not isinstance(name, str) or not name:
        raise BadTypeName("empty message type name")
    if len(name) > MAX_NAME_LEN:
        raise BadTypeName(f"message type name longer than {MAX_NAME_LEN} characters ({printable(name, 40)!s})")
    m = MSGTYPE_RE.fullmatch(name)
    if m is None:
        raise BadTypeName(f"{printable(name)!r} is not a ROS 2 message type name (pkg/msg/Name)")
    return f"{m.group(1)}/msg/{m.group(2)}"


def split_msgtype(name: str):
    """(package, Name) of a valid message type name; BadTypeName else."""
    pkg, _msg, typ = normalise_msgtype(name).split("/")
    return pkg, typ


def publishable_problem(name: str) -> Optional[str]:
    """``None`` if ``name`` is a message type of an allowed interface package, else the reason."""
    try:
        pkg, _typ = split_msgtype(name)
    except BadTypeName as exc:
        return str(exc)
    if pkg not in PUBLISHABLE_PACKAGES:
        return (f"message type {printable(name)!r} is not in an allowed interface package "
                f"({', '.join(PUBLISHABLE_PACKAGES[:6])}, ...)")
    return None


def expected_types(topic: str) -> Optional[FrozenSet[str]]:
    """Types the project's nodes use on a topic of this name (first rule that matches), or None."""
    for rx, types in _TOPIC_RULES:
        if rx.search(topic):
            return types
    return None


_PRIMITIVE_SIZES = {
    "bool": 1, "byte": 1, "char": 1, "int8": 1, "uint8": 1, "octet": 1,
    "int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "float32": 4,
    "int64": 8, "uint64": 8, "float64": 8, "float128": 16,
    "string": 4, "wstring": 4,  # the length prefix
}
_INFINITE = float("inf")


def min_cdr_size(store, msgtype: str) -> float:
    """A lower bound of the CDR size of a ``msgtype`` message (without the 4-byte header).

    Fixed arrays count ``n x element``, sequences and strings their 4-byte length, every struct
    element at least 1 byte (so no definition can make a few bytes stand for millions of
    elements). A type that contains itself outside a sequence can have no finite message:
    ``inf``. Cached per store. KeyError for an unknown type.
    """
    cache = store.__dict__.setdefault("_rls3_min_cdr_size", {})
    if msgtype in cache:
        return cache[msgtype]
    visiting = set()

    def struct(name: str) -> float:
        if name in cache:
            return cache[name]
        if name in visiting:
            return _INFINITE
        visiting.add(name)
        _consts, fields = store.fielddefs[name]
        total = 0.0
        for _fname, desc in fields:
            total += field(desc)
            if total == _INFINITE:
                break
        visiting.discard(name)
        cache[name] = max(1.0, total)
        return cache[name]

    def field(desc) -> float:
        kind, arg = int(desc[0]), desc[1]
        if kind == 1:  # BASE: (type, string bound)
            return float(_PRIMITIVE_SIZES.get(arg[0], 1))
        if kind == 2:  # NAME
            return struct(arg)
        if kind == 3:  # ARRAY: (element, n)
            n = int(arg[1])
            elem = field(arg[0])
            return elem * n if n > 0 else 0.0
        return 4.0  # SEQUENCE: its element count (elements themselves bounded by the payload)

    return struct(msgtype)


def payload_problem(store, raw, msgtype: str) -> Optional[str]:
    """``None`` if ``raw`` (CDR with its 4-byte encapsulation header) decodes as ``msgtype`` with
    ``store`` and nothing is left over; else a one-line reason (never raises).

    The payload's size is checked against the definition's minimum first: a definition from a
    bag can describe millions of elements (``string[99999999]``) that a short payload cannot
    hold, and decoding it would take the memory of all of them before failing."""
    if store is None or msgtype not in store.fielddefs:
        return f"no definition of {printable(msgtype)!r} to check it against"
    problem = size_problem(store, raw, msgtype)
    if problem is not None:
        return problem
    try:
        store.deserialize_cdr(raw, msgtype)
    except RecursionError:
        return f"does not decode as {printable(msgtype)}: definition nests too deep"
    except MemoryError:
        return f"does not decode as {printable(msgtype)}: it claims more memory than there is"
    except Exception as exc:  # noqa: BLE001 - rosbags SerdeError, struct/unicode/numpy errors
        text = printable(" ".join(str(exc).split()), 160)
        return f"does not decode as {printable(msgtype)} ({len(raw)} bytes): {text or exc.__class__.__name__}"
    return None


def size_problem(store, raw, msgtype: str) -> Optional[str]:
    """A one-line reason when ``raw`` is too short for any ``msgtype`` message (or the type
    cannot have a finite message); None otherwise or when the type is unknown."""
    try:
        need = min_cdr_size(store, msgtype)
    except (KeyError, RecursionError, TypeError, ValueError, IndexError):
        return None
    if need == _INFINITE:
        return f"does not decode as {printable(msgtype)}: its definition contains itself (no message can be that type)"
    have = max(0, len(raw) - 4)
    if need > have:
        return f"does not decode as {printable(msgtype)}: it needs at least {need:.0f} bytes, the payload has {have}"
    return None
