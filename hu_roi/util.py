"""Small shared helpers: outputs written all or nothing (:class:`OutputSet`), bounded reads
of regular files, values shown in messages."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hu_roi.errors import HuRoiError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync, rename.

    A crash or kill during the write leaves the previous file intact (or no file), never a
    half-written one.  The rules of :class:`OutputSet` apply (a symbolic link's target is
    written, a device or FIFO as a stream, a folder is refused; missing folders are made).

    Parameters
    ----------
    path : path-like
    data : bytes

    Raises
    ------
    OutputError
        The file cannot be written there (the message names ``path``).
    """
    with OutputSet() as outs:
        outs.add(path, data)


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


# ---------------------------------------------------------------------------------------
# Outputs: all or nothing, never onto an input, devices as streams
# ---------------------------------------------------------------------------------------
class OutputError(HuRoiError, OSError):
    """An output cannot be written where asked (a folder, an input, a block device...).

    The message names the output as the user gave it, never a temporary file.
    """


def printable(text: str | os.PathLike[str]) -> str:
    """A path (or a message line) as given, with control and invisible characters escaped
    (``\\n``, ``\\x1b``, ``\\udce9``): a newline in a file name cannot start a new line on
    the terminal.  Unlike :func:`show` it is not quoted or cut, so a path stays whole."""
    return "".join(
        c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
        for c in os.fspath(text)
    )


def _inside(path: str, folder: str) -> bool:
    """``path`` equals ``folder`` or lies below it (both resolved)."""
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives
        return False


def _tree_holds(root: str, key: tuple[int, int]) -> bool:
    """Whether a file in the folder ``root`` is the file ``key`` (st_dev, st_ino): hard
    links and symbolic links to files included.  Links to folders are followed only when
    they stay inside the tree (so a link to an archive or to ``/`` is not walked; the
    files a command actually read there are given with :meth:`OutputSet.add_inputs`).
    Uses the inode numbers of the directory listing: only matches and links are stat-ed."""
    root_real = os.path.realpath(root)
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            try:
                if e.is_symlink():
                    est = os.stat(e.path)
                    if stat.S_ISDIR(est.st_mode):
                        if _inside(os.path.realpath(e.path), root_real):
                            stack.append(e.path)
                    elif (est.st_dev, est.st_ino) == key:
                        return True
                elif e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.inode() == key[1] and e.stat(follow_symlinks=False).st_dev == key[0]:
                    return True
            except OSError:
                continue
    return False


@dataclass
class _Output:
    """One planned output (see :class:`OutputSet`)."""

    given: str  # as the user wrote it (messages)
    kind: str  # "file" (atomic rename), "stream" (device, FIFO), "stdout", "folder"
    target: str  # the path written: symbolic links resolved; "" for stdout
    skip: bool = False  # a sidecar of a stream: not written
    data: bytes | str | None = None
    mode: int | None = None
    tmp: str | None = None  # temporary file or folder, renamed at commit
    backup: str | None = None


class OutputSet:
    """All outputs of one command, written all together or not at all.

    Each :meth:`add` writes its data to a temporary file next to the destination;
    :meth:`commit` renames them all into place at the end, and :meth:`abort` (or an
    exception inside the ``with`` block) removes them, so a run that fails leaves every
    existing output as it was -- also a CSV whose sidecar cannot be written.

    Destinations:

    - a new path or a regular file: atomic rename (the replaced file's permission bits are
      kept; a new file is 0644, or ``mode``); missing parent folders are created (and
      removed again when the run fails);
    - ``-`` (stdout), a character device (``/dev/null``) or a named pipe: written as a
      stream at commit, and sidecars of it (``sidecar_of=``) are not written at all;
    - a symbolic link: its target is written (atomically when it is a regular file); the
      link itself is never replaced;
    - a folder, block device or socket: refused (:class:`OutputError`);
    - an input of the command (``inputs``: same path after resolving links, or the same
      file via a hard link; for an input folder, any file in it): refused, naming both;
    - two outputs to one file: refused.

    Parameters
    ----------
    inputs : iterable of (label, path)
        What the command reads, e.g. ``[("the ROI file", p), ("DICOM_DIR", folder)]``.
        Folders stand for every file below them.  Missing paths are ignored.

    Examples
    --------
    >>> with OutputSet([("the measurement CSV", src)]) as outs:  # doctest: +SKIP
    ...     outs.add(out, csv_text)
    ...     outs.add(meta_path(out), meta_text, sidecar_of=out)
    """

    def __init__(self, inputs: Iterable[tuple[str, str | os.PathLike[str]]] = ()) -> None:
        self._inputs = [(label, os.fspath(p)) for label, p in inputs]
        self._outputs: list[_Output] = []
        self._planned: dict[str, _Output] = {}
        self._made_dirs: list[str] = []
        self._done = False

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    # -- planning --------------------------------------------------------------------------
    def is_stream(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is written as a stream (``-``, a device, a FIFO)."""
        return self.check(path).kind in ("stream", "stdout")

    def check(
        self,
        path: str | os.PathLike[str],
        *,
        sidecar_of: str | os.PathLike[str] | None = None,
        replaces: str | os.PathLike[str] | None = None,
        folder: bool = False,
    ) -> _Output:
        """Plan an output without writing it; raises :class:`OutputError` when it cannot
        be written there.  Call it before long work, so a refused output costs nothing.

        ``sidecar_of``: the main output this file describes (skipped when that is a
        stream).  ``replaces``: an input this output is meant to update (e.g. a pseudonym
        map being extended).  ``folder``: the output is a folder (:meth:`add_folder`).
        """
        given = os.fspath(path)
        if given in self._planned:
            return self._planned[given]
        if sidecar_of is not None:
            main = self.check(sidecar_of)
            if main.kind in ("stream", "stdout"):
                out = _Output(given, "file", "", skip=True)
                self._planned[given] = out
                return out
        out = self._classify(given, folder)
        if out.kind in ("file", "folder"):
            for other in self._planned.values():
                if not other.skip and other.target == out.target:
                    raise OutputError(
                        f"{printable(given)} and {printable(other.given)} are the same file; "
                        "give each output its own name"
                    )
            self._check_inputs(out, replaces)
        self._planned[given] = out
        return out

    def add_inputs(self, inputs: Iterable[tuple[str, str | os.PathLike[str]]]) -> None:
        """More inputs, known only after some work (e.g. every file the index read):
        outputs already planned are checked against them at once.  Cheap when no planned
        output exists yet (a new file cannot be an input): then nothing is stat-ed."""
        new = [(label, os.fspath(p)) for label, p in inputs]
        self._inputs += new
        keys: dict[tuple[int, int], _Output] = {}
        for out in self._planned.values():
            if out.kind == "file" and not out.skip:
                try:
                    st = os.stat(out.target)
                except OSError:
                    continue
                keys[(st.st_dev, st.st_ino)] = out
        if not keys:
            return
        for label, p in new:
            try:
                st = os.stat(p)
            except OSError:
                continue
            hit = keys.get((st.st_dev, st.st_ino))
            if hit is not None:
                raise OutputError(
                    f"output {printable(hit.given)} is {label} {printable(p)}; refusing to "
                    "overwrite an input (nothing written); choose another output path"
                )

    def _classify(self, given: str, folder: bool) -> _Output:
        shown = printable(given)
        if given == "-":
            if folder:
                raise OutputError("'-' (stdout) cannot be an output folder")
            return _Output(given, "stdout", "")
        try:
            lst = os.lstat(given)
        except FileNotFoundError:
            return _Output(given, "folder" if folder else "file", os.path.abspath(given))
        except OSError as exc:
            raise OutputError(f"cannot write {shown}: {exc.strerror}") from None
        target = os.path.abspath(given)
        st = lst
        if stat.S_ISLNK(lst.st_mode):
            real = os.path.realpath(given)
            try:
                st = os.stat(given)
            except FileNotFoundError:  # dangling: create its target
                return _Output(given, "folder" if folder else "file", real)
            except OSError as exc:
                raise OutputError(
                    f"cannot write {shown}: the symbolic link cannot be followed "
                    f"({exc.strerror}); give the target path"
                ) from None
            try:
                rst = os.stat(real)
            except OSError:
                rst = None
            if rst is None or (rst.st_dev, rst.st_ino) != (st.st_dev, st.st_ino):
                if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
                    return _Output(given, "stream", given)  # e.g. /dev/stdout -> pipe:[…]
                raise OutputError(
                    f"cannot write {shown}: the target of the symbolic link cannot be "
                    "resolved to a path; give the target path"
                )
            target = real
        mode = st.st_mode
        if folder:
            if stat.S_ISDIR(mode):
                return _Output(given, "folder", target)
            raise OutputError(f"output folder {shown} exists and is not a folder")
        if stat.S_ISREG(mode):
            return _Output(given, "file", target)
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            return _Output(given, "stream", given)
        what = (
            "a folder; give a file name"
            if stat.S_ISDIR(mode)
            else "a block device"
            if stat.S_ISBLK(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "not a regular file"
        )
        raise OutputError(f"cannot write {shown}: it is {what}")

    def _check_inputs(self, out: _Output, replaces: str | os.PathLike[str] | None) -> None:
        """Refuse an output that is one of the inputs (or inside an input folder, or an
        input folder inside an output folder)."""
        real = os.path.realpath(out.target)
        try:
            ost: os.stat_result | None = os.stat(out.target)
        except OSError:
            ost = None
        allowed = os.path.realpath(replaces) if replaces is not None else None
        for label, p in self._inputs:
            try:
                ist = os.stat(p)
            except OSError:
                continue
            p_real = os.path.realpath(p)
            if allowed is not None and p_real == allowed:
                continue
            clash = False
            if out.kind == "folder":
                # replacing the folder would remove an input inside it
                clash = _inside(p_real, real)
            elif stat.S_ISDIR(ist.st_mode):
                clash = ost is not None and (
                    _inside(real, p_real) or _tree_holds(p, (ost.st_dev, ost.st_ino))
                )
            else:
                clash = real == p_real or (
                    ost is not None and (ost.st_dev, ost.st_ino) == (ist.st_dev, ist.st_ino)
                )
            if clash:
                if out.kind == "folder":
                    how = f"contains {label} {printable(p)}"
                elif stat.S_ISDIR(ist.st_mode):
                    how = f"is a file inside {label} {printable(p)}"
                else:
                    how = f"is {label} {printable(p)}"
                raise OutputError(
                    f"output {printable(out.given)} {how}; refusing to overwrite an input "
                    "(nothing written); choose another output path"
                )

    # -- writing ---------------------------------------------------------------------------
    def _makedirs(self, folder: str) -> None:
        missing = []
        d = os.path.abspath(folder)
        while not os.path.isdir(d):
            missing.append(d)
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        for d in reversed(missing):
            os.mkdir(d)
            self._made_dirs.append(d)

    def add(
        self,
        path: str | os.PathLike[str],
        data: bytes | str,
        *,
        sidecar_of: str | os.PathLike[str] | None = None,
        replaces: str | os.PathLike[str] | None = None,
        mode: int | None = None,
    ) -> bool:
        """Stage one output (see :meth:`check` for the options).

        ``data`` as text is encoded as UTF-8 (file names that are not valid UTF-8 become
        ``\\udcXX`` escapes).  ``mode`` sets the permission bits (e.g. 0o600 for a
        pseudonym map).  Returns False when the output is not written (a sidecar of a
        stream).
        """
        if self._done:
            raise RuntimeError("OutputSet already committed or aborted")
        out = self.check(path, sidecar_of=sidecar_of, replaces=replaces)
        if out.skip:
            return False
        if any(o is out for o in self._outputs):
            raise OutputError(f"{printable(out.given)} is written twice")
        out.mode = mode
        if out.kind != "file":
            out.data = data
            self._outputs.append(out)
            return True
        raw = data.encode("utf-8", errors="backslashreplace") if isinstance(data, str) else data
        folder = os.path.dirname(out.target)
        name = os.path.basename(out.target)
        try:
            self._makedirs(folder)
            fd, out.tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
            self._outputs.append(out)
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            if mode is not None:
                os.chmod(out.tmp, mode)
            else:
                try:  # keep the permission bits of the file we replace
                    os.chmod(out.tmp, os.stat(out.target).st_mode & 0o7777)
                except FileNotFoundError:
                    os.chmod(out.tmp, 0o644)
        except OSError as exc:
            raise OutputError(
                f"cannot write {printable(out.given)}: {exc.strerror or type(exc).__name__}"
            ) from None
        return True

    def check_folder(self, path: str | os.PathLike[str], *, own: Iterable[str] = ()) -> _Output:
        """Plan an output folder (see :meth:`add_folder`) without writing anything."""
        out = self.check(path, folder=True)
        own = set(own)
        if os.path.isdir(out.target):
            try:
                names = sorted(os.listdir(out.target))
            except OSError as exc:
                raise OutputError(f"cannot write {printable(out.given)}: {exc.strerror}") from None
            foreign = [
                n for n in names if n not in own or not os.path.isfile(os.path.join(out.target, n))
            ]
            if foreign:
                raise OutputError(
                    f"output folder {printable(out.given)} holds {printable(foreign[0])}"
                    + (f" and {len(foreign) - 1} more" if len(foreign) > 1 else "")
                    + ", which this command did not write; the folder is replaced as a whole, "
                    "so choose a new or empty folder"
                )
        return out

    def add_folder(self, path: str | os.PathLike[str], *, own: Iterable[str] = ()) -> Path:
        """Stage an output folder: returns an empty temporary folder next to ``path`` to
        fill; :meth:`commit` puts it in place of ``path`` (the old folder is kept until the
        new one is in place, then removed), so old and new files never mix.

        ``own``: names of the files a previous run of the command may have left in
        ``path``.  An existing ``path`` holding anything else (another file, a subfolder)
        is refused rather than deleted; so is a folder that contains an input.
        """
        if self._done:
            raise RuntimeError("OutputSet already committed or aborted")
        out = self.check_folder(path, own=own)
        parent = os.path.dirname(out.target)
        try:
            self._makedirs(parent)
            out.tmp = tempfile.mkdtemp(
                prefix=f".{os.path.basename(out.target)}.", suffix=".tmp", dir=parent
            )
            self._outputs.append(out)
            os.chmod(out.tmp, 0o755)
        except OSError as exc:
            raise OutputError(
                f"cannot write {printable(out.given)}: {exc.strerror or type(exc).__name__}"
            ) from None
        return Path(out.tmp)

    # -- the end ---------------------------------------------------------------------------
    def commit(self) -> None:
        """Put every staged output in place: the streams first (a stream that fails leaves
        every file as it was), then the files by rename (when one rename fails, the others
        are undone), then the folders swapped in."""
        if self._done:
            return
        try:
            for o in self._outputs:
                if o.kind in ("stream", "stdout"):
                    self._write_stream(o)
            files = [o for o in self._outputs if o.kind == "file"]
            files += [o for o in self._outputs if o.kind == "folder"]
            if len(files) > 1:  # hard-link backups, to undo a partial commit
                for o in files:
                    if o.kind == "file" and os.path.isfile(o.target):
                        try:
                            os.link(o.target, f"{o.tmp}.bak")
                            o.backup = f"{o.tmp}.bak"
                        except OSError:
                            pass
            done: list[_Output] = []
            try:
                for o in files:
                    if o.kind == "folder":
                        self._swap_folder(o)
                    elif o.tmp is not None:
                        os.replace(o.tmp, o.target)
                    o.tmp = None
                    done.append(o)
            except OSError as exc:
                self._undo(done)
                raise OutputError(
                    f"cannot write {printable(files[len(done)].given)}: "
                    f"{exc.strerror or type(exc).__name__}"
                ) from None
            for folder in {os.path.dirname(o.target) for o in files}:
                _fsync_dir(folder)
        except BaseException:
            self.abort()
            raise
        self._cleanup()
        self._done = True

    def _swap_folder(self, o: _Output) -> None:
        if o.tmp is None:
            return
        if not os.path.lexists(o.target):
            os.rename(o.tmp, o.target)
            return
        old = tempfile.mkdtemp(
            prefix=f".{os.path.basename(o.target)}.", suffix=".old", dir=os.path.dirname(o.target)
        )
        os.rmdir(old)
        os.rename(o.target, old)
        try:
            os.rename(o.tmp, o.target)
        except OSError:
            os.rename(old, o.target)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def _undo(self, done: list[_Output]) -> None:
        for o in reversed(done):
            if o.kind != "file":
                continue  # a folder swap is the last step of a failing commit at worst
            try:
                if o.backup:
                    os.replace(o.backup, o.target)
                    o.backup = None
                else:
                    os.unlink(o.target)
            except OSError:
                pass

    def _write_stream(self, o: _Output) -> None:
        data = o.data if o.data is not None else b""
        try:
            if o.kind == "stdout":
                if isinstance(data, bytes):
                    buf = getattr(sys.stdout, "buffer", None)
                    if buf is not None:
                        sys.stdout.flush()
                        buf.write(data)
                        buf.flush()
                        return
                    data = data.decode("utf-8", errors="backslashreplace")
                sys.stdout.write(data)
                sys.stdout.flush()
                return
            raw = data.encode("utf-8", errors="backslashreplace") if isinstance(data, str) else data
            # no O_CREAT: if the device or pipe vanished, nothing is created in its place
            fd = os.open(o.target, os.O_WRONLY | getattr(os, "O_NOCTTY", 0))
            with os.fdopen(fd, "wb") as fh:
                st = os.fstat(fh.fileno())
                if not (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
                    raise OutputError(
                        f"cannot write {printable(o.given)}: it changed while the command ran"
                    )
                fh.write(raw)
        except OSError as exc:
            raise OutputError(
                f"cannot write {printable(o.given)}: {exc.strerror or type(exc).__name__}"
            ) from None

    def abort(self) -> None:
        """Remove every temporary file and folder (and the folders made for them)."""
        if self._done:
            return
        self._done = True
        for o in self._outputs:
            if o.tmp is None:
                continue
            try:
                if o.kind == "folder":
                    shutil.rmtree(o.tmp, ignore_errors=True)
                else:
                    os.unlink(o.tmp)
            except OSError:
                pass
            o.tmp = None
        self._cleanup()
        for d in reversed(self._made_dirs):
            try:
                os.rmdir(d)
            except OSError:
                pass

    def _cleanup(self) -> None:
        for o in self._outputs:
            if o.backup:
                try:
                    os.unlink(o.backup)
                except OSError:
                    pass
                o.backup = None


def _fsync_dir(folder: str) -> None:
    """Make renames in ``folder`` durable (best effort: not every file system can)."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
