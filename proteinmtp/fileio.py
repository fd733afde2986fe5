"""Atomic file output: every file the project writes appears whole or not at all.

A writer fills a temporary file in the destination's directory, which then replaces the destination
(``os.replace``, atomic on POSIX). An interrupted or failing writer leaves the old file (or nothing)
behind, never half a file. Files get the permissions a plain ``open(path, "w")`` would give.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes, gunzipped when it starts with the gzip magic number.

    Raises OSError when the file cannot be opened and ValueError for a truncated or corrupt gzip stream.
    """
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise ValueError(f"truncated or corrupt gzip stream ({e})") from e
    return raw


def umask_mode() -> int:
    """Permission bits of a plain ``open(path, "w")``: 0o666 minus the umask (mkstemp makes 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


class WriteError(OSError):
    """Writing a file failed; the message names the file and the cause (``FILE: cannot write (cause)``)."""


def _cause(e: OSError, tmp: str | None) -> tuple[int | None, str]:
    """(errno, its text) of a failed write. A short write (numpy's ``tofile``: "N requested and M written")
    carries no errno: the next write to the same file returns it (ENOSPC, EFBIG), so one byte is tried."""
    if e.errno is not None:
        return e.errno, os.strerror(e.errno)
    if tmp is not None:
        try:
            with open(tmp, "ab", buffering=0) as fh:
                fh.write(b"\0")
        except OSError as probe:
            if probe.errno is not None:
                return probe.errno, f"{os.strerror(probe.errno)}; {e}"
    return None, str(e) or type(e).__name__


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the block exits without error.

    An OSError while writing (disk full, a file-size limit, a read-only directory) is raised as
    :class:`WriteError` (an OSError, errno kept) naming ``path`` and the cause; the temporary file is removed.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp, inside = None, False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as fh:
            inside = True
            yield fh
            inside = False
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except OSError as e:
        foreign = isinstance(e, WriteError) or (inside and e.filename is not None)   # another file's error
        errno, cause = (None, "") if foreign else _cause(e, tmp)
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        if foreign:
            raise
        err = WriteError(f"{path}: cannot write ({cause})")
        err.errno = errno
        raise err from e
    except BaseException:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to ``path`` atomically."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as fh:
        fh.write(data)
    return Path(path)


def write_json(path: str | Path, obj: object, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (trailing newline) to ``path`` atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent) + "\n")


def copy_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy a file to ``dst`` atomically (nothing to do when both are the same file)."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.resolve() == dst.resolve():
        return dst
    with atomic_open(dst, "wb") as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out)
    return dst
