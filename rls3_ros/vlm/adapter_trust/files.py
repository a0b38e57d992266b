"""Reading an adapter's files without trusting them: regular files only (no symlink, FIFO or
device: refused without blocking on it), under a size cap, read in chunks that release the GIL;
JSON files must hold an object."""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Dict, Optional, Tuple

from rls3_ros.vlm.adapter_trust.policy import AdapterRefused

_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def open_regular(directory: str, name: str, cap: int) -> Tuple[int, int]:
    """(fd, size) of ``directory/name`` opened read-only if it is a regular file of at most ``cap`` bytes."""
    p = os.path.join(directory, name)
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        raise AdapterRefused(f"{name} missing") from None
    except OSError as e:
        raise AdapterRefused(f"{name} unreadable ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise AdapterRefused(f"{name} is {_kind(st.st_mode)}, not a regular file")
    if st.st_size > cap:
        raise AdapterRefused(f"{name} is too large ({st.st_size} bytes > {cap})")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except OSError as e:
        raise AdapterRefused(f"{name} unreadable ({e.strerror})") from None
    try:
        st = os.fstat(fd)  # the file opened, not the one lstat saw (swapped meanwhile?)
        if not stat.S_ISREG(st.st_mode):
            raise AdapterRefused(f"{name} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > cap:
            raise AdapterRefused(f"{name} is too large ({st.st_size} bytes > {cap})")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def copy_regular(directory: str, name: str, cap: int, out_path: Optional[str] = None) -> bytes:
    """Read ``directory/name`` (a regular file, at most ``cap`` bytes); write it to ``out_path``
    if given (returns b"" then), else return its bytes."""
    fd, _ = open_regular(directory, name, cap)
    chunks = []
    total = 0
    out = open(out_path, "xb") if out_path else None
    try:
        while True:
            b = os.read(fd, 1 << 20)  # releases the GIL: a slow disk blocks this thread only
            if not b:
                break
            total += len(b)
            if total > cap:  # grew after the checks
                raise AdapterRefused(f"{name} is too large (more than {cap} bytes)")
            if out is not None:
                out.write(b)
            else:
                chunks.append(b)
    finally:
        os.close(fd)
        if out is not None:
            out.close()
    return b"".join(chunks)


def json_object(raw: bytes, name: str) -> Dict[str, Any]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        msg = " ".join(str(e).split())[:120]
        raise AdapterRefused(f"{name} is not valid JSON ({type(e).__name__}: {msg})") from None
    if not isinstance(doc, dict):
        raise AdapterRefused(f"{name} must hold a JSON object (got {type(doc).__name__})")
    return doc
