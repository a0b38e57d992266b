"""Crash-safe writes: the one place every atomic write of the project goes through.

A file or directory is written under a hidden temporary name next to its final one, flushed and
``fsync``ed (every file, then every directory of the tree), renamed into place with
``os.replace``/``os.rename`` and the parent directory ``fsync``ed, so after a crash or power loss
the final name holds either the complete old content or the complete new one, never a torn mix.

Names of the temporaries (hidden, so no reader that lists a directory picks them up):

- ``.<name>.tmp-<pid>-<random>``: a write in progress (a file or a directory);
- ``.<name>.old-<pid>-<random>``: the previous directory while a new one replaces it;
- ``.<name>.del-<pid>-<random>``: a directory being removed (:func:`remove_tree`: renamed first, so
  it disappears from its name at once, then deleted).

:func:`clean_stale` removes the ones a killed process left behind (owned by this user and older
than this process), and puts a ``.old-`` directory back under its name when the kill landed
between the two renames of a replacement (the old content is then the latest complete one).

A full disk (``ENOSPC``, a quota ``EDQUOT``, a file size limit ``EFBIG``) while writing raises
:class:`DiskFullError` naming the final path (its ``str`` is the one-line reason a CLI prints); the
temporary is removed and the previous content stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from typing import Any, Iterator, List, Optional

PROCESS_START = time.time()  # temporaries older than this are not this process' own
DISK_FULL_ERRNOS = frozenset(e for e in (getattr(errno, "ENOSPC", None), getattr(errno, "EDQUOT", None),
                                         getattr(errno, "EFBIG", None)) if e is not None)
# how third-party writers (safetensors' Rust io, torch's C++ writer) word a full disk
_DISK_FULL_TEXT = ("no space left on device", "storagefull", "file too large", "disk quota exceeded",
                   "quota exceeded")


class DiskFullError(OSError):
    """No space left (or a size limit hit) while writing ``path``; ``str()`` is a one-line reason."""

    def __init__(self, path: str, code: int = errno.ENOSPC):
        super().__init__(code, f"no space left on device while writing {path}")
        self.path = path

    def __str__(self) -> str:
        return f"no space left on device while writing {self.path}"


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` itself reports a full disk, a quota or a file size limit."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    text = str(exc).lower()
    return any(t in text for t in _DISK_FULL_TEXT)


def disk_full_cause(exc: BaseException) -> Optional[BaseException]:
    """The first exception in ``exc``'s chain (itself, ``__cause__``, ``__context__``) that reports a
    full disk (a :class:`DiskFullError` preferred), else None. A fine-tune in a background thread, a
    writer wrapped by a library: the reason travels in the chain."""
    seen, found, e = set(), None, exc
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return e
        if found is None and is_disk_full(e):
            found = e
        stack.extend([e.__context__, e.__cause__])
    return found


def disk_full_message(exc: BaseException, path: str = "") -> Optional[str]:
    """One line for a full disk anywhere in ``exc``'s chain (None when it is something else)."""
    cause = disk_full_cause(exc)
    if cause is None:
        return None
    if isinstance(cause, DiskFullError):
        return str(cause)
    where = getattr(cause, "filename", None) or path
    return f"no space left on device while writing {where}" if where else "no space left on device"


def _disk_full(path: str, exc: BaseException) -> BaseException:
    if isinstance(exc, DiskFullError):
        return exc
    if is_disk_full(exc):
        code = exc.errno if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS else errno.ENOSPC
        return DiskFullError(path, code)
    return exc


# ------------------------------------------------------------------------------ fsync
def fsync_dir(path: str) -> None:
    """fsync a directory (its entries: a rename or a new file in it is durable afterwards)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems refuse fsync on directories: nothing more to do there
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str) -> None:
    """fsync every regular file under ``root``, then every directory bottom-up, then ``root``."""
    for d, dirs, files in os.walk(root, topdown=False):
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                fsync_file(p)
        fsync_dir(d)


def _tmp_name(parent: str, name: str, kind: str) -> str:
    return os.path.join(parent, f".{name}.{kind}-{os.getpid()}-{os.urandom(4).hex()}")


# ------------------------------------------------------------------------------ files
@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb", encoding: Optional[str] = None) -> Iterator[Any]:
    """Open a temporary next to ``path`` for writing; on a clean exit it is flushed, fsynced and
    renamed to ``path`` (the directory fsynced). On an error the temporary is removed, ``path`` is
    untouched and a full disk becomes :class:`DiskFullError`."""
    if "w" not in mode:
        raise ValueError("atomic_file writes: mode must contain 'w'")
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    tmp = _tmp_name(parent, name, "tmp")
    f = None
    try:
        f = open(tmp, mode, encoding=encoding if "b" not in mode else None)
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
        fsync_dir(parent)
    except BaseException as e:
        if f is not None and not f.closed:
            with contextlib.suppress(OSError):
                f.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        err = _disk_full(path, e)
        if err is e:
            raise
        raise err from e


def atomic_write_bytes(path: str, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str, text: str) -> None:
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_json(path: str, obj: Any, **kw: Any) -> None:
    atomic_write_text(path, json.dumps(obj, **kw))


def append_line(path: str, line: str) -> None:
    """Append one line and fsync it (a log that must survive a crash up to its last full line)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line if line.endswith("\n") else line + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        err = _disk_full(path, e)
        if err is e:
            raise
        raise err from e


# ------------------------------------------------------------------------------ directories
@contextlib.contextmanager
def atomic_dir(path: str, mode: int = 0o755) -> Iterator[str]:
    """Yield a temporary directory next to ``path`` to fill; on a clean exit every file and directory
    in it is fsynced and it is renamed to ``path`` (an existing ``path`` is first renamed to a hidden
    ``.old-`` name, removed after the swap; :func:`clean_stale` restores it if a kill lands between
    the two renames). On an error the temporary is removed and ``path`` is untouched."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = ""
    try:
        tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=parent)
        os.chmod(tmp, mode)
        yield tmp
        fsync_tree(tmp)
        old = ""
        if os.path.lexists(path):
            old = _tmp_name(parent, name, "old")
            os.rename(path, old)
        os.rename(tmp, path)
        tmp = ""
        fsync_dir(parent)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        if disk_full_cause(e) is None:
            raise
        raise DiskFullError(path) from e  # named by the directory being written, not its temporary


# ------------------------------------------------------------------------------ leftovers
def remove_tree(path: str) -> None:
    """Remove a directory so that it vanishes from its name at once (rename to a hidden ``.del-``
    name, then delete; :func:`clean_stale` finishes a deletion a kill interrupted)."""
    path = os.path.abspath(path)
    if not os.path.lexists(path):
        return
    parent, name = os.path.split(path)
    gone = _tmp_name(parent, name, "del")
    try:
        os.rename(path, gone)
    except OSError:
        gone = path
    shutil.rmtree(gone, ignore_errors=True)


def _temp_kind(entry: str) -> str:
    """"tmp" / "old" / "del" for the temporaries of a write (ours and the project's earlier names), else ""."""
    if entry.startswith(".") and ".del-" in entry:
        return "del"
    if entry.startswith(".") and ".tmp-" in entry:
        return "tmp"
    if entry.startswith(".") and ".old-" in entry:
        return "old"
    if entry.endswith(".tmp") and entry.startswith("."):
        return "tmp"
    if not entry.startswith(".") and ".old-" in entry:  # an earlier writer's visible "<name>.old-<hex>"
        return "old"
    return ""


def _original_name(entry: str) -> str:
    """The name an ``.old-`` directory replaced (``.<name>.old-*`` / ``<name>.old-*``), else ""."""
    base = entry[1:] if entry.startswith(".") else entry
    return base.rsplit(".old-", 1)[0] if ".old-" in base else ""


def clean_stale(parent: str, older_than: Optional[float] = None) -> List[str]:
    """Remove the temporaries killed writes left in ``parent`` (``.*.tmp-*``, ``.tmp-*``, ``*.old-*``,
    ``.*.del-*``):
    only entries owned by this user and last modified before ``older_than`` (default: this process'
    start, so no write of this process is touched). An ``.old-`` directory whose final name is
    missing is renamed back to it (the kill hit between the two renames of a replacement). Returns
    what was removed or restored."""
    if not os.path.isdir(parent):
        return []
    limit = PROCESS_START if older_than is None else float(older_than)
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    done: List[str] = []
    for entry in sorted(os.listdir(parent)):
        kind = _temp_kind(entry)
        if not kind:
            continue
        p = os.path.join(parent, entry)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if (uid is not None and st.st_uid != uid) or st.st_mtime >= limit:
            continue
        orig_name = _original_name(entry) if kind == "old" else ""
        if orig_name:
            orig = os.path.join(parent, orig_name)
            if orig != p and not os.path.lexists(orig) and os.path.isdir(p):
                try:
                    os.rename(p, orig)
                    done.append(f"restored {orig}")
                    continue
                except OSError:
                    pass
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(p)
        if not os.path.lexists(p):
            done.append(f"removed {p}")
    if done:
        with contextlib.suppress(OSError):
            fsync_dir(parent)
    return done
