"""Small shared helpers: atomic file writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    A crash or kill during the write leaves the previous file intact (or no file), never a
    half-written one.

    Parameters
    ----------
    path : path-like
        Destination; its folder must exist.
    data : bytes
    """
    dest = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if dest.exists():
            # Keep the permission bits of the file we replace.
            os.chmod(tmp, dest.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Text version of :func:`atomic_write_bytes`.

    File names that are not valid UTF-8 reach Python as lone surrogates; they are written
    as ``\\udcXX`` escapes so the output stays valid UTF-8 text.
    """
    atomic_write_bytes(path, text.encode(encoding, errors="backslashreplace"))
