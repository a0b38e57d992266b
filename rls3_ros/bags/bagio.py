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

from rls3_ros.bags.checks import printable
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

    def first_message(self, connection: Connection) -> Optional[Tuple[int, bytes]]:
        """(bag time ns, raw CDR) of the first message of ``connection``; None if it has none."""
        gen = self.messages([connection])
        try:
            for _conn, t, raw in gen:
                return t, bytes(raw)
        finally:
            gen.close()
        return None

    def decode_problem(self, connection: Connection, store: Optional[Typestore] = None) -> Optional[str]:
        """Does the first message of ``connection`` decode as its declared type? None if it does
        (or the topic has no message), else a one-line reason. ``store`` defaults to the bag's
        own definitions (:attr:`typestore`); BagError if the data cannot be read at all."""
        from rls3_ros.bags.checks import payload_problem

        first = self.first_message(connection)
        if first is None:
            return None
        return payload_problem(store if store is not None else self.typestore, first[1], connection.msgtype)

    def deserialize(self, raw: bytes, msgtype: str):
        from rls3_ros.bags.checks import size_problem

        assert self.typestore is not None
        problem = size_problem(self.typestore, raw, msgtype)  # a hostile definition decodes nothing
        if problem is not None:
            raise BagError(f"bag {str(self.path)!r}: a {printable(msgtype)} message {problem}")
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

    @property
    def is_open(self) -> bool:
        return self._writer is not None

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

    def checkpoint(self) -> None:
        """Make what was written so far readable if a later write fails (disk full, file size
        limit, killed): sqlite3 commits its open transaction, MCAP flushes its file buffer
        (closed chunks reach the file; the open chunk, at most ~1 MB, stays in memory)."""
        storage = getattr(self._writer, "storage", None)
        conn = getattr(storage, "conn", None)
        if conn is not None:
            conn.commit()
        bio = getattr(storage, "bio", None)
        if bio is not None and not bio.closed:
            bio.flush()

    def salvage(self) -> Tuple[Optional[Path], int, bool]:
        """After a write failure (disk full, file too large): keep what reached the file.

        First a complete close with only that data (:func:`_close_after_failure`: MCAP drops the
        chunk it was writing, is cut after its last indexed chunk and gets its summary; sqlite3
        rolls the open transaction back, every :meth:`checkpoint` commit stays, and gets its
        metadata row; then metadata.yaml), checked by reading it back. If that does not fit or
        does not read back, the file is only made readable: an MCAP file is cut after its last
        complete record and closed with DataEnd + footer (no summary: readers scan it; records
        go from the end until even that fits), sqlite3 is rolled back and closed; no
        metadata.yaml (:class:`BagReader`, rosbags on the storage file, ``ros2 bag reindex`` read
        it). The bag directory is then moved to ``out``. Returns (``out``, messages it holds,
        whether it got its summary and metadata.yaml), or (None, 0, False) after removing what
        does not read back.
        """
        w, self._writer = self._writer, None
        storage = getattr(w, "storage", None) if w is not None else None
        bagdir = self.partial / self.out.name
        complete = False
        if storage is not None:
            try:
                expected = _close_after_failure(w, self.storage)
                with BagReader(bagdir) as bag:
                    complete = sum(1 for _ in bag.messages()) == expected
            except Exception as exc:  # noqa: BLE001 - no room for it, or rosbags' state was off
                log.info("no complete close after the failure (%s): keeping the data without a summary", _reason(exc))
        try:
            if not complete:
                _close_storage_quietly(storage, self.storage)
                files = [f for f in bagdir.iterdir() if f.suffix in (".mcap", ".db3")]
                if len(files) != 1:
                    raise BagError("no storage file was written")
                if self.storage == "mcap":
                    _finish_partial_mcap(files[0])
                for extra in bagdir.iterdir():  # a half-written metadata.yaml or temp file: not part of the bag
                    if extra.suffix in (".yaml", ".tmp"):
                        extra.unlink()
            os.rename(bagdir, self.out)
        except Exception as exc:  # noqa: BLE001 - nothing could be kept
            log.warning("could not keep the partial bag %s: %s", self.out, _reason(exc))
            self._cleanup()
            return None, 0, False
        self._cleanup()
        try:
            with BagReader(self.out) as bag:
                n = sum(1 for _ in bag.messages())
        except BagError as exc:
            log.warning("the partial bag %s does not read back (%s); removing it", self.out, exc)
            shutil.rmtree(self.out, ignore_errors=True)
            return None, 0, False
        return self.out, n, complete

    def close(self) -> Path:
        """Finish the bag and move it to ``out``; returns ``out``."""
        if self._writer is None:
            return self.out
        w = self._writer
        try:
            w.close()
        except Exception as exc:
            raise BagError(self.fail(exc)) from None
        self._writer = None
        try:
            os.rename(self.partial / self.out.name, self.out)
        except Exception as exc:
            self._cleanup()
            raise _bag_problem(self.out, "cannot finish", exc) from None
        self._cleanup()
        return self.out

    def fail(self, exc: BaseException) -> str:
        """End the bag after ``exc`` broke a write or the close; returns a one-line reason.

        The storage running out of room or failing to write (:func:`storage_failure`) keeps
        what reached the file (:meth:`salvage`); anything else drops the bag (:meth:`abort`)."""
        reason = storage_failure(exc)
        if reason is None:
            self.abort()
            return f"bag {str(self.out)!r}: writing failed: {_reason(exc)}; nothing kept"
        kept, n, complete = self.salvage()
        if kept is None:
            return f"bag {str(self.out)!r}: writing failed: {reason}; nothing could be kept"
        return (f"bag {str(self.out)!r}: writing failed: {reason}; kept the {n} message(s) written before it "
                + ("(a complete bag)" if complete else "(without summary and metadata.yaml: no room for them; readable as it is)"))

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


_MCAP_MAGIC = b"\x89MCAP0\r\n"
# MCAP opcodes a rosbags data section holds: schema, channel, message, chunk, message index,
# attachment, metadata, metadata index... (header 0x01 and footer 0x02 excluded)
_MCAP_DATA_OPS = frozenset(range(0x03, 0x0F))
_MCAP_END = (
    b"\x0f" + (4).to_bytes(8, "little") + (0).to_bytes(4, "little")  # DataEnd (crc 0 = none)
    + b"\x02" + (20).to_bytes(8, "little") + bytes(20)  # Footer: no summary, no summary offsets, crc 0
    + _MCAP_MAGIC
)


def _mcap_record_ends(path: Path) -> List[int]:
    """File offsets where each complete record after the header ends (header end first)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(8) != _MCAP_MAGIC:
            raise BagError(f"{str(path)!r} does not start as an MCAP file")
        ends: List[int] = []
        pos = 8
        while pos + 9 <= size:
            f.seek(pos)
            head = f.read(9)
            op, length = head[0], int.from_bytes(head[1:9], "little")
            end = pos + 9 + length
            if end > size or (ends and op not in _MCAP_DATA_OPS) or (not ends and op != 0x01):
                break
            ends.append(end)
            pos = end
    if not ends:
        raise BagError(f"{str(path)!r} has no complete MCAP header")
    return ends


def _close_storage_quietly(storage, kind: str) -> None:
    """Close rosbags' storage object without writing anything more (errors ignored)."""
    if storage is None:
        return
    if kind == "mcap":
        try:
            storage.bio.close()  # flushing its buffer fails again: the raw file closes anyway
        except Exception:  # noqa: BLE001
            pass
        return
    for step in ("rollback", "close"):
        try:
            getattr(storage.conn, step)()
        except Exception:  # noqa: BLE001
            pass


def _close_after_failure(w, kind: str) -> int:
    """Close rosbags' Writer ``w`` properly with only the data that reached its file; returns
    the number of messages the closed bag holds. Raises if it cannot (then nothing is promised
    about the file: the caller makes it readable another way)."""
    storage = w.storage
    if kind == "mcap":
        from collections import defaultdict
        from io import BytesIO

        from rosbags.rosbag2.storage_mcap import PendingChunk

        # the chunk being written when it failed is lost: forget its messages
        dropped = storage.chunk
        kept = dict(storage.channel_stats)
        for cid, msgs in dropped.msgs.items():
            kept[cid] = kept.get(cid, 0) - len(msgs)
        end, t_min, t_max = None, 2**63 - 1, 0
        for rec in storage.chunks:  # ChunkIndex records of the chunks fully written
            raw = rec.getvalue()
            t_min = min(t_min, int.from_bytes(raw[0:8], "little"))
            t_max = max(t_max, int.from_bytes(raw[8:16], "little"))
            start, length = int.from_bytes(raw[16:24], "little"), int.from_bytes(raw[24:32], "little")
            n_off = int.from_bytes(raw[32:36], "little")
            index_len = int.from_bytes(raw[36 + n_off:44 + n_off], "little")
            end = start + length + index_len
        _close_storage_quietly(storage, kind)
        path = Path(storage.path)
        if end is None:
            end = _mcap_record_ends(path)[0]  # no chunk made it: only the header
        if path.stat().st_size < end:
            raise BagError("the last chunk's index did not reach the file")
        bio = open(path, "r+b")
        bio.truncate(end)
        bio.seek(end)
        storage.bio = bio
        storage.chunk = PendingChunk(2**63 - 1, 0, BytesIO(), defaultdict(list))
        storage.channel_stats = kept
        storage.message_start_time, storage.message_end_time = t_min, t_max
        w.counts = {c.id: kept.get(c.id, 0) for c in w.connections}
        w.min_timestamp, w.max_timestamp = t_min, t_max
    else:
        conn = storage.conn
        conn.rollback()  # what the last checkpoint committed stays
        rows = conn.execute("SELECT topic_id, count(*), min(timestamp), max(timestamp) FROM messages GROUP BY topic_id").fetchall()
        counts = {int(r[0]): int(r[1]) for r in rows}
        w.counts = {c.id: counts.get(c.id, 0) for c in w.connections}
        w.min_timestamp = min([int(r[2]) for r in rows] or [2**63 - 1])
        w.max_timestamp = max([int(r[3]) for r in rows] or [0])
    w.close()  # summary / metadata row, then metadata.yaml: raises if there is no room
    return sum(w.counts.values())


def _finish_partial_mcap(path: Path) -> None:
    """Cut an MCAP file whose writing failed after its last complete record and close it with
    DataEnd + footer, dropping records from the end while even that does not fit."""
    ends = _mcap_record_ends(path)
    last: Optional[BaseException] = None
    for end in reversed(ends[-64:]):
        try:
            with open(path, "r+b") as f:
                f.truncate(end)
                f.seek(end)
                f.write(_MCAP_END)
                f.flush()
                os.fsync(f.fileno())
            return
        except OSError as exc:  # still no room: give up one more record
            last = exc
    raise BagError(f"cannot close {str(path)!r}: {_reason(last) if last else 'no room'}")


def storage_failure(exc: BaseException) -> Optional[str]:
    """A short reason when ``exc`` is the storage running out of room or failing to write
    (ENOSPC, EFBIG, EDQUOT, other OS errors, sqlite3 full / I/O errors); None otherwise."""
    import errno
    import sqlite3

    if isinstance(exc, OSError):
        code = errno.errorcode.get(exc.errno or 0, "")
        return f"{os.strerror(exc.errno) if exc.errno else exc} ({code})" if code else _reason(exc)
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "")
        return f"sqlite3: {' '.join(str(exc).split())}" + (f" ({name})" if name else f" ({exc.__class__.__name__})")
    return None


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
    except BagError as exc:  # names from a bag may hold control characters: escaped, one line
        print(f"rls3 {name}: error: {printable(' '.join(str(exc).split()), 2000)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: never a traceback
        print(f"rls3 {name}: error: {exc.__class__.__name__}: {printable(' '.join(str(exc).split()), 2000)}",
              file=sys.stderr, flush=True)
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
