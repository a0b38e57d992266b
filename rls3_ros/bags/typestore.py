"""rosbags typestores that know the project's messages (no rclpy needed).

- :func:`base_typestore` — a fresh copy of the newest ROS 2 store in rosbags
  (Kilted in rosbags 0.11.9) with every ``rls3_msgs`` type registered from its ``.msg`` file.
- :func:`ensure_type` — register a type (and what it references) from the ``.msg`` files of
  installed ROS packages (``$AMENT_PREFIX_PATH``/share, the venv's share dir).
- :func:`typestore_for_connections` — a store for reading one bag: the base store plus every
  type the bag defines itself (embedded ``ros2msg``/``ros2idl`` definitions) that the base does
  not know; if a bag's definition of a known type differs, the bag's own definition wins.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from rls3_ros.bags.checks import printable
from rls3_ros.core.share_dir import SOURCE_ROOT, share_dirs

log = logging.getLogger(__name__)

RLS3_PACKAGE = "rls3_msgs"
_PKG_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")
_FILE_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}")
_REPO_ROOT = SOURCE_ROOT


def newest_ros2_store() -> Stores:
    """Stores.ROS2_KILTED when rosbags has it, else the newest ROS 2 store it ships."""
    if hasattr(Stores, "ROS2_KILTED"):
        return Stores.ROS2_KILTED
    ros2 = [s for s in Stores if s.value.startswith("ros2_")]
    return ros2[-1] if ros2 else Stores.LATEST


def find_msg_file(msgtype: str) -> Optional[Path]:
    """The ``.msg`` file of ``pkg/msg/Name`` among installed packages (or this repo's rls3_msgs)."""
    parts = msgtype.split("/") if isinstance(msgtype, str) else []
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        return None
    pkg, kind, name = parts
    # a name from a bag picks a file only among installed packages: no path parts, no dots
    if not (_PKG_NAME.fullmatch(pkg) and kind in ("msg", "srv", "action") and _FILE_TYPE_NAME.fullmatch(name)):
        return None
    candidates = [d / pkg / kind / f"{name}.msg" for d in share_dirs()]
    if pkg == RLS3_PACKAGE:
        candidates.append(_REPO_ROOT / RLS3_PACKAGE / kind / f"{name}.msg")
    for c in candidates:
        if c.is_file():
            return c
    return None


def rls3_msg_dir() -> Path:
    """Directory holding rls3_msgs' ``.msg`` files (installed share dir first, else the repo)."""
    for d in share_dirs():
        p = d / RLS3_PACKAGE / "msg"
        if p.is_dir() and any(p.glob("*.msg")):
            return p
    p = _REPO_ROOT / RLS3_PACKAGE / "msg"
    if p.is_dir():
        return p
    raise FileNotFoundError(f"cannot find the {RLS3_PACKAGE} .msg files (looked in {share_dirs()} and {p})")


def _referenced_types(fielddefs: dict) -> set:
    """Message type names referenced by the fields of parsed definitions."""
    refs = set()

    def visit(desc) -> None:
        kind, arg = desc
        # Nodetype: BASE=1, NAME=2, ARRAY=3, SEQUENCE=4 (rosbags.interfaces.Nodetype)
        if int(kind) == 2:
            refs.add(arg)
        elif int(kind) in (3, 4):
            visit(arg[0])

    for _consts, fields in fielddefs.values():
        for _fname, desc in fields:
            visit(desc)
    return refs


def ensure_types(store: Typestore, msgtypes: Iterable[str]) -> List[str]:
    """Register ``msgtypes`` (and the types they reference) from installed ``.msg`` files.

    Returns the names that had to be registered. Raises ``KeyError`` when a type is neither
    in the store nor found as a ``.msg`` file.
    """
    pending = [t for t in msgtypes if t not in store.fielddefs]
    typs: Dict[str, tuple] = {}
    while pending:
        name = pending.pop()
        if name in typs or name in store.fielddefs:
            continue
        path = find_msg_file(name)
        if path is None:
            raise KeyError(f"message type {name!r} is unknown: not in the typestore and no .msg file found in {share_dirs()}")
        parsed = get_types_from_msg(path.read_text(encoding="utf8"), name)
        typs.update(parsed)
        pending.extend(r for r in _referenced_types(parsed) if r not in typs and r not in store.fielddefs)
    if typs:
        store.register(typs)
    return sorted(typs)


def ensure_type(store: Typestore, msgtype: str) -> List[str]:
    """:func:`ensure_types` for one type."""
    return ensure_types(store, [msgtype])


def base_typestore() -> Typestore:
    """A fresh store: newest ROS 2 types + every rls3_msgs message (registered from .msg files)."""
    store = get_typestore(newest_ros2_store())
    msg_dir = rls3_msg_dir()
    names = [f"{RLS3_PACKAGE}/msg/{p.stem}" for p in sorted(msg_dir.glob("*.msg"))]
    typs: Dict[str, tuple] = {}
    for n in names:
        typs.update(get_types_from_msg((msg_dir / f"{n.rsplit('/', 1)[1]}.msg").read_text(encoding="utf8"), n))
    store.register(typs)
    missing = sorted(r for r in _referenced_types(typs) if r not in store.fielddefs)
    if missing:
        ensure_types(store, missing)
    return store


MAX_DEFINITION_CHARS = 64 * 1024  # one connection's embedded definition (real ones: a few kB)
MAX_BAG_DEFINITION_CHARS = 512 * 1024  # all of a bag's embedded definitions together


def types_from_connection(conn: Connection) -> Dict[str, tuple]:
    """Types defined by a connection's embedded message definition ({} when it has none).

    ValueError for a definition over :data:`MAX_DEFINITION_CHARS` (parsing and registering
    grow faster than its length: 200 kB took 12 s)."""
    fmt, data = conn.msgdef.format, conn.msgdef.data
    if data and len(data) > MAX_DEFINITION_CHARS:
        raise ValueError(f"embedded definition of {len(data)} characters, over the limit of {MAX_DEFINITION_CHARS}")
    if fmt == MessageDefinitionFormat.MSG and data:
        return dict(get_types_from_msg(data, conn.msgtype))
    if fmt == MessageDefinitionFormat.IDL and data:
        sep = "=" * 80 + "\n"
        typs: Dict[str, tuple] = {}
        if data.startswith(f"{sep}IDL: "):
            for chunk in data.split(sep)[1:]:
                _hdr, idl = chunk.split("\n", 1)
                typs.update(get_types_from_idl(idl))
        else:
            typs.update(get_types_from_idl(data))
        return typs
    return {}


def _same(a: tuple, b: tuple) -> bool:
    fa = [(x[0].lower(), x[1]) for x in a[1]]
    fb = [(x[0].lower(), x[1]) for x in b[1]]
    return fa == fb


def typestore_for_connections(connections: Iterable[Connection], base: Optional[Typestore] = None) -> Typestore:
    """A store able to deserialize every connection of a bag.

    Types the base store does not know are registered from the bag's embedded definitions.
    When the bag defines a known type differently (another distro, a changed rls3_msgs), the
    bag's definitions are used for every type it defines, and the base fills in the rest.
    """
    conns = list(connections)
    bag_typs: Dict[str, tuple] = {}
    seen_defs: set = set()
    budget = MAX_BAG_DEFINITION_CHARS
    for c in conns:
        key = (c.msgtype, c.msgdef.data)
        if key in seen_defs:  # many topics of one type: parsed once
            continue
        seen_defs.add(key)
        budget -= len(c.msgdef.data or "")
        if budget < 0:
            log.warning("the bag's embedded definitions exceed %d characters: %s (%s) and later ones are not used",
                        MAX_BAG_DEFINITION_CHARS, printable(c.topic), printable(c.msgtype))
            break
        try:
            bag_typs.update(types_from_connection(c))
        except Exception as exc:  # a broken embedded definition: fall back on the base store
            log.warning("cannot parse the embedded definition of %s (%s): %s", printable(c.topic), printable(c.msgtype),
                        printable(" ".join(str(exc).split()), 160))
    store = base if base is not None else base_typestore()
    conflicts = sorted(n for n, d in bag_typs.items() if n in store.fielddefs and not _same(store.fielddefs[n], d))
    if not conflicts:
        unknown = {n: d for n, d in bag_typs.items() if n not in store.fielddefs}
        if unknown:
            log.info("registering %d message types from the bag's own definitions: %s", len(unknown),
                     printable(", ".join(sorted(unknown)), 300))
            store.register(unknown)
    else:
        log.warning("the bag defines %s differently from this install; using the bag's definitions",
                    printable(", ".join(conflicts), 300))
        fresh = get_typestore(Stores.EMPTY)
        fresh.register(bag_typs)
        rest = {n: d for n, d in store.fielddefs.items() if n not in fresh.fielddefs}
        try:
            fresh.register(rest)
        except Exception as exc:  # pragma: no cover - exotic: base types depending on redefined ones
            log.warning("could not add the remaining base types: %s", exc)
        store = fresh
    missing = sorted({c.msgtype for c in conns} - set(store.fielddefs))
    for m in missing:
        try:
            ensure_type(store, m)
        except KeyError:
            log.warning("no definition for %s: its messages stay raw (not decoded)", printable(m))
    return store
