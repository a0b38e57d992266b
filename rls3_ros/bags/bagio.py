"""Opening and writing rosbag2 bags with clear errors (no rclpy).

- :class:`BagError` — every failure to read or write a bag, with a one-line reason.
- :class:`BagReader` — a rosbag2 directory, or a bare ``.mcap`` / ``.db3`` file, opened with a
  typestore that knows the project's types and registers the bag's own definitions.
- :class:`AtomicBagWriter` — a rosbags ``Writer`` that writes into ``<out>.partial/`` and
  renames to ``<out>`` only on a clean close: a stopped or failed run leaves no half bag at
  ``<out>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from rosbags.interfaces import Connection, Qos
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from rls3_ros.bags.typestore import base_typestore, typestore_for_connections

log = logging.getLogger(__name__)

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagError(Exception):
    """A bag cannot be read or written; ``str(err)`` is a one-line reason for the user."""


def _reason(exc: BaseException, limit: int = 300) -> str:
    """One short line: the exception's text (cut to ``limit`` chars) and its class name."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    name = exc.__class__.__name__
    if not text:
        return name
    return f"{text} ({name})" if name not in text else text


def _bag_problem(path: Path, what: str, exc: BaseException) -> BagError:
    return BagError(f"bag {str(path)!r}: {what}: {_reason(exc)}")


class BagReader:
    """Read a rosbag2 bag (directory with metadata.yaml, or a bare .mcap/.db3 file).

    Use as a context manager. Every rosbags/sqlite/mcap/IO failure, at open or while
    iterating, comes out as :class:`BagError`.
    """

    def __init__(self, path: os.PathLike | str, typestore: Optional[Typestore] = None):
        self.path = Path(path)
        self._base = typestore
        self._reader: Optional[Reader] = None
        self.typestore: Optional[Typestore] = None

    # -- open / close
    def open(self) -> "BagReader":
        p = self.path
        if not p.exists():
            raise BagError(f"no bag at {str(p)!r} (path does not exist)")
        if p.is_dir() and not (p / "metadata.yaml").exists():
            files = sorted(x.name for x in p.iterdir())
            storage = [p / f for f in files if f.endswith((".mcap", ".db3"))]
            if len(storage) == 1 and not p.name.endswith(".partial"):
                p = storage[0]  # a directory holding one bare storage file (e.g. another tool's .mcap)
            else:
                hint = " (an unfinished recording: it has a .partial name)" if p.name.endswith(".partial") else ""
                raise BagError(f"{str(p)!r} is not a rosbag2 directory: no metadata.yaml{hint}; it holds {files[:5]}")
        try:
            reader = Reader(p)
            reader.open()
        except Exception as exc:  # rosbags ReaderError, sqlite3/mcap/yaml/OS errors
            if isinstance(exc, FileNotFoundError):
                raise _bag_problem(p, "cannot open (a file it lists is missing)", exc) from None
            raise _bag_problem(p, "cannot open (truncated, corrupted or not a rosbag2 bag?)", exc) from None
        self._reader = reader
        try:
            self.typestore = typestore_for_connections(reader.connections, self._base)
        except Exception as exc:
            self.close()
            raise _bag_problem(p, "cannot load its message definitions", exc) from None
        return self

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # noqa: BLE001 - closing a broken bag
                pass
            self._reader = None

    def __enter__(self) -> "BagReader":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- info
    @property
    def reader(self) -> Reader:
        if self._reader is None:
            raise BagError(f"bag {str(self.path)!r} is not open")
        return self._reader

    @property
    def connections(self) -> List[Connection]:
        return list(self.reader.connections)

    @property
    def topics(self) -> Dict[str, str]:
        """topic -> message type."""
        return {c.topic: c.msgtype for c in self.reader.connections}

    @property
    def start_time(self) -> int:
        return int(self.reader.start_time)

    @property
    def end_time(self) -> int:
        return int(self.reader.end_time)

    @property
    def message_count(self) -> int:
        return int(self.reader.message_count)

    def topic_counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for c in self.reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount)
        return counts

    def can_decode(self, msgtype: str) -> bool:
        return self.typestore is not None and msgtype in self.typestore.fielddefs

    # -- messages
    def connections_for(self, topics: Optional[Iterable[str]] = None, msgtypes: Optional[Iterable[str]] = None) -> List[Connection]:
        conns = self.connections
        if topics is not None:
            wanted = set(topics)
            unknown = wanted - {c.topic for c in conns}
            if unknown:
                raise BagError(f"bag {str(self.path)!r} has no topic {', '.join(sorted(unknown))} (it has {', '.join(sorted(self.topics)) or 'none'})")
            conns = [c for c in conns if c.topic in wanted]
        if msgtypes is not None:
            types = set(msgtypes)
            conns = [c for c in conns if c.msgtype in types]
        return conns

    def messages(
        self,
        connections: Optional[Sequence[Connection]] = None,
        start: Optional[int] = None,
        stop: Optional[int] = None,
    ) -> Iterator[Tuple[Connection, int, bytes]]:
        """(connection, bag time ns, raw CDR bytes) in time order; BagError if the data is damaged.

        ``connections=None`` reads every topic; an empty list reads nothing.
        """
        if connections is not None and len(connections) == 0:
            return
        try:
            for conn, t, raw in self.reader.messages(connections=list(connections or ()), start=start, stop=stop):
                yield conn, int(t), raw
        except BagError:
            raise
        except GeneratorExit:
            raise
        except Exception as exc:
            raise _bag_problem(self.path, "damaged data while reading messages (truncated or corrupted?)", exc) from None

    def deserialize(self, raw: bytes, msgtype: str):
        assert self.typestore is not None
        try:
            return self.typestore.deserialize_cdr(raw, msgtype)
        except Exception as exc:
            raise _bag_problem(self.path, f"cannot decode a {msgtype} message", exc) from None


class AtomicBagWriter:
    """rosbags ``Writer`` that only creates ``out`` on a clean :meth:`close`.

    Data goes to ``<out>.partial/<name>/``; ``close`` finishes the bag (index, metadata.yaml)
    and renames it to ``out``; ``abort`` removes the partial directory.
    """

    def __init__(self, out: os.PathLike | str, storage: str = "mcap", typestore: Optional[Typestore] = None):
        if storage not in STORAGES:
            raise BagError(f"unknown storage {storage!r} (use {' or '.join(STORAGES)})")
        self.out = Path(out).absolute()
        if self.out.exists():
            raise BagError(f"output {str(self.out)!r} exists already; not overwriting")
        self.partial = self.out.parent / f"{self.out.name}.partial"
        if self.partial.exists():
            raise BagError(f"{str(self.partial)!r} exists (left by a killed recording?); remove it first")
        self.storage = storage
        self.typestore = typestore if typestore is not None else base_typestore()
        self._writer: Optional[Writer] = None
        self.lock = threading.RLock()  # guards the typestore when topics are added from threads
        self.connections: Dict[str, Connection] = {}
        self.counts: Dict[str, int] = {}

    def open(self) -> "AtomicBagWriter":
        try:
            self.partial.mkdir(parents=True)
            self._writer = Writer(self.partial / self.out.name, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[self.storage])
            self._writer.open()
        except Exception as exc:
            self._cleanup()
            raise _bag_problem(self.out, "cannot create", exc) from None
        return self

    def add_topic(self, topic: str, msgtype: str, qos: Sequence[Qos] = ()) -> Connection:
        """Register a topic; its message definition is embedded from the typestore."""
        assert self._writer is not None, "open() first"
        if topic in self.connections:
            return self.connections[topic]
        try:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore, offered_qos_profiles=list(qos))
        except Exception as exc:
            raise _bag_problem(self.out, f"cannot add topic {topic} ({msgtype})", exc) from None
        self.connections[topic] = conn
        self.counts[topic] = 0
        return conn

    def write(self, topic: str, t_ns: int, data: bytes | memoryview) -> None:
        assert self._writer is not None
        self._writer.write(self.connections[topic], int(t_ns), data)
        self.counts[topic] += 1

    def set_custom_data(self, key: str, value: str) -> None:
        assert self._writer is not None
        self._writer.set_custom_data(key, value)

    def close(self) -> Path:
        """Finish the bag and move it to ``out``; returns ``out``."""
        if self._writer is None:
            return self.out
        w, self._writer = self._writer, None
        try:
            w.close()
            os.rename(self.partial / self.out.name, self.out)
        except Exception as exc:
            self._cleanup()
            raise _bag_problem(self.out, "cannot finish", exc) from None
        self._cleanup()
        return self.out

    def abort(self) -> None:
        """Drop everything written; nothing is left at ``out`` nor ``out.partial``."""
        w, self._writer = self._writer, None
        if w is not None:
            try:
                w.abort()
            except Exception:  # noqa: BLE001
                pass
        self._cleanup()

    def _cleanup(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)

    def __enter__(self) -> "AtomicBagWriter":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def qos_from_rosbags(q: Qos) -> dict:
    """Plain dict of a rosbags Qos (for logging)."""
    return {
        "reliability": q.reliability.name.lower(),
        "durability": q.durability.name.lower(),
        "history": q.history.name.lower(),
        "depth": int(q.depth),
    }


def cli_boundary(name: str, body: Callable[[], int]) -> int:
    """Run a CLI body: BagError / bad input -> one line on stderr and exit 2, never a traceback."""
    try:
        return body()
    except BagError as exc:
        print(f"rls3 {name}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: never a traceback
        print(f"rls3 {name}: error: {exc.__class__.__name__}: {exc}", file=sys.stderr, flush=True)
        return 1


def run_cli(
    name: str, parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
    body: Callable[[argparse.Namespace, List[str]], int],
) -> int:
    """Entry point of ``rls3 <name>``: the ``--ros-args ...`` tail is split off ``argv`` (default
    ``sys.argv[1:]``), the rest parsed by ``parser`` (--help / a usage error: argparse's exit
    code), then ``body(args, ros_args)`` runs inside :func:`cli_boundary`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_args: List[str] = []
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        argv, ros_args = argv[:i], argv[i:]
    try:
        a = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return cli_boundary(name, lambda: body(a, ros_args))
