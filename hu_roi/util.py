"""Small shared helpers: atomic file writes, bounded reads of regular files."""

from __future__ import annotations

import os
import stat
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


def read_regular_file(
    path: str | os.PathLike[str], max_bytes: int, what: str, error: type[Exception]
) -> tuple[bytes, os.stat_result]:
    """Bytes and stat of a regular file of at most ``max_bytes``, else ``error``.

    Named pipes (opening one blocks until a writer comes), devices and folders are refused
    before they are opened -- and again after, should the path have been replaced in
    between -- and a file larger than ``max_bytes`` is refused before it is read (or when
    it grows beyond while read), so no input can block a run or exhaust memory.

    Parameters
    ----------
    path : path-like
    max_bytes : int
    what : str
        What the file should be, for the message (e.g. ``"an ROI file"``).
    error : exception class
        Raised with a one-line message naming the file.

    Raises
    ------
    error
        Not a regular file, or too large.
    OSError
        The file cannot be stat-ed or read (e.g. FileNotFoundError).
    """
    p = os.fspath(path)
    limit = f"{max_bytes / 1024**2:.0f} MiB"
    if not stat.S_ISREG(os.stat(p).st_mode):
        raise error(f"{p}: not a regular file (a pipe, device or folder); not read")
    with open(p, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):  # replaced between stat and open
            raise error(f"{p}: not a regular file; not read")
        if st.st_size > max_bytes:
            raise error(
                f"{p}: {st.st_size / 1024**2:.0f} MiB is too large for {what} (limit {limit}); "
                "not read"
            )
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"{p}: grew beyond {limit} while read")
    return data, st


def show(value: object, limit: int = 80) -> str:
    """``value`` as it may be echoed in a message, CSV detail or summary line: its ``repr``
    cut to about ``limit`` characters.

    ``repr`` escapes newlines and every other control or invisible character, so a value
    read from a file (an ``roi_id`` with a newline, a 3 MB string) can neither forge a line
    on the terminal nor become a huge one.

    Parameters
    ----------
    value : object
        Usually a str from an input file or the command line.
    limit : int
        Longest result (characters); longer ones end in ``…``.

    Returns
    -------
    str
    """
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]  # repr of the head only: a huge string is never copied whole
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's 4300-digit str() limit
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"
