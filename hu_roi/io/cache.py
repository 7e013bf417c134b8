"""Persistent header cache: a second index of an unchanged tree does not re-read headers.

:class:`HeaderCache` stores the :class:`~hu_roi.io.dicom.ImageHeader` of every file that
:func:`hu_roi.io.index_folder` read, keyed by the file's absolute path and validated by
its identity and change stamps: size, modification time (``st_mtime_ns``), status-change
time (``st_ctime_ns``), inode and device.  A file that differs in any of them is read
again.  The inode and ctime matter: after an unzip, ``tar x``, ``rsync`` or ``touch -r``
two files of equal size can swap names while keeping their mtimes, and a key of path,
size and mtime alone would hand back the other file's header.  A rename, a rewrite and
``os.utime`` all change the ctime, which user programs cannot set back.

Storage is one SQLite database (``headers.sqlite3``) holding JSON text -- no pickle, so
a cache file planted by someone else cannot run code.  Every entry is checked field by
field against :class:`~hu_roi.io.dicom.ImageHeader` when it is read; an entry of the
wrong shape or type (valid JSON or not) is a miss.  The cache is an optimisation only:

* a missing, empty or corrupt cache file (not a database, malformed) is logged and
  rebuilt;
* a cache that cannot be opened or written (read-only, disk full, a folder or a link
  where the file should be, another program's database at that path) is disabled for the
  run and **left as it is** -- it is never truncated or deleted for a write error, and
  SQLite's transactions keep the stored entries intact;
* it never makes an index fail.

Direct identifiers (PatientName, PatientBirthDate) are never written to the cache: a
cached header holds them as empty strings, so a cache file left in a home folder leaks no
patient's name.  Commands that output identifiers on request (``hu-roi measure
--include-identifiers``) read headers without the cache.  The cache still holds paths,
UIDs, patient IDs and dates, so it is private: the database and its ``-wal``/``-shm``
files are created with mode 0600 and the folder :meth:`HeaderCache.default` creates with
mode 0700; existing ones are tightened to those modes when the cache is opened (a folder
only when it holds nothing but cache files, so ``HU_ROI_CACHE_DIR=/tmp`` never changes
``/tmp``).  A symbolic link in place of a cache file is not followed: the cache is
disabled for the run.

Location (:meth:`HeaderCache.default`): ``$HU_ROI_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/hu-roi``, else ``~/.cache/hu-roi``.

Limits: the stamp misses a change only where it cannot see one -- a file changed twice
within one ctime tick (the kernel's coarse clock: milliseconds on Linux) with the
index's stat in between, a system clock set back, or file systems
whose ctime is not a change time and whose inode numbers are not stable (FAT, exFAT,
some network shares), where a swap that keeps size and mtime can look unchanged.  So
the loader also checks each file's SOP Instance UID against its indexed header before
using its pixels (:func:`hu_roi.io.load.load_slice_into`): such a file fails its ROIs
(``series-load-failed``, "file changed since it was indexed") instead of giving another
slice's HU.  A copy of the tree (new inodes) or a re-mounted share (new device number)
is read again once.  ``--no-cache`` bypasses the cache.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import sqlite3
import stat
import threading
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from types import NoneType, TracebackType, UnionType

from hu_roi.io.dicom import MAX_PIXELS_PER_FRAME, ImageHeader
from hu_roi.series import orientation_problem

log = logging.getLogger(__name__)

#: Bumped when the stored format changes; the field names of ImageHeader are part of the
#: version too, so a changed ImageHeader invalidates old caches automatically.
SCHEMA_VERSION = 4  # 4: free-text tags are stored with identifiers redacted
#: Columns that tell whether the file at a path is still the one that was read.
_STAMP_COLUMNS = ("size", "mtime_ns", "ctime_ns", "ino", "dev")
_FIELDS = tuple(f.name for f in dataclasses.fields(ImageHeader))
_VERSION = f"{SCHEMA_VERSION}:{','.join(_STAMP_COLUMNS)}:{','.join(_FIELDS)}"
#: Pending writes kept in memory before they are written in one transaction.
FLUSH_EVERY = 2000
#: Paths per ``SELECT ... IN (...)`` of :meth:`HeaderCache.get_many` (SQLite allows 32766
#: parameters since 3.32, 999 before).
QUERY_CHUNK = 900
FILE_NAME = "headers.sqlite3"
#: Files SQLite keeps next to the database (WAL mode uses -wal and -shm).
_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
FILE_MODE = 0o600
FOLDER_MODE = 0o700
#: SQLite's primary result codes for a damaged file (the only reason to rebuild).
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


def default_cache_dir() -> Path:
    """Folder of the default cache: ``$HU_ROI_CACHE_DIR``, ``$XDG_CACHE_HOME/hu-roi``,
    or ``~/.cache/hu-roi``."""
    env = os.environ.get("HU_ROI_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "hu-roi"


_STORED = tuple(f for f in _FIELDS if f != "path")
_PATH_FIRST = _FIELDS[0] == "path"


#: Fields never stored (direct identifiers); cached headers carry "" instead.
_NOT_STORED = frozenset({"patient_name", "patient_birth_date"})

#: Stamp of a file: (size, mtime_ns, ctime_ns, inode, device).
_Stamp = tuple[int, int, int, int, int]


class _Reject(Exception):
    """A stored value does not have its field's type."""


def _utf8(v: str) -> bool:
    # Lone surrogates (from a "\ud800" escape) cannot be written to a UTF-8 CSV later.
    if v.isascii():
        return True
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _converter(tp: object) -> Callable[[object], object]:
    """A function that returns a stored JSON value as a value of type ``tp`` (raising
    :class:`_Reject` otherwise): exact types, finite floats, tuples from lists."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, UnionType):
        subs = [_converter(a) for a in args]

        def union(v: object) -> object:
            for sub in subs:
                try:
                    return sub(v)
                except _Reject:
                    pass
            raise _Reject

        return union
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _converter(args[0])

            def var_tuple(v: object) -> object:
                if type(v) is not list:
                    raise _Reject
                return tuple(item(x) for x in v)

            return var_tuple
        items = [_converter(a) for a in args]

        def fixed_tuple(v: object) -> object:
            if type(v) is not list or len(v) != len(items):
                raise _Reject
            return tuple(f(x) for f, x in zip(items, v, strict=True))

        return fixed_tuple
    if tp is NoneType:

        def none(v: object) -> object:
            if v is not None:
                raise _Reject
            return None

        return none
    if tp is str:

        def text(v: object) -> object:
            if type(v) is not str or not _utf8(v):
                raise _Reject
            return v

        return text
    if tp is bool or tp is int:

        def exact(v: object) -> object:  # type(True) is bool: no bool for an int
            if type(v) is not tp:
                raise _Reject
            return v

        return exact
    if tp is float:

        def number(v: object) -> object:
            if type(v) is not float and type(v) is not int:
                raise _Reject
            f = float(v)  # type: ignore[arg-type]
            if not math.isfinite(f):  # JSON "NaN"/"Infinity" or 1e400
                raise _Reject
            return f

        return number

    def unknown(v: object) -> object:  # a field type this module does not know: never hit
        raise _Reject

    log.warning("header cache: field type %r not supported; such entries are misses", tp)
    return unknown


_HINTS = typing.get_type_hints(ImageHeader)
_CONVERT = tuple(_converter(_HINTS[f]) for f in _STORED)


def _members(tp: object) -> tuple[object, ...]:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, UnionType) else (tp,)


def _plain(tp: object) -> frozenset[type]:
    """JSON value types the fast path of :func:`_from_values` takes for a field."""
    out: set[type] = set()
    for m in _members(tp):
        if typing.get_origin(m) is tuple:
            out.add(list)
        elif m in (str, int, float, bool, NoneType):
            out.add(m)  # type: ignore[arg-type]
    return frozenset(out)


_PLAIN = tuple(_plain(_HINTS[f]) for f in _STORED)
_FLOAT_POS = tuple(i for i, f in enumerate(_STORED) if float in _members(_HINTS[f]))


def _tuple_spec(tp: object) -> tuple[int | None, frozenset[type], bool]:
    """(length or None, item types, items are floats) of the tuple type in ``tp``."""
    t = next(m for m in _members(tp) if typing.get_origin(m) is tuple)
    args = typing.get_args(t)
    if len(args) == 2 and args[1] is Ellipsis:  # tuple[str, ...]
        n, items = None, args[:1]
    else:  # tuple[float, float, float]
        n, items = len(args), args
    plain = frozenset(a for a in items if a in (str, int, float, bool))
    return n, plain, float in items


#: (position, length or None, item types, floats) of the tuple fields.
_TUPLES = tuple((i, *_tuple_spec(_HINTS[f])) for i, f in enumerate(_STORED) if list in _PLAIN[i])
_N_STORED = len(_STORED)


def _encode(h: ImageHeader) -> str:
    """JSON array of the header's fields in :data:`_STORED` order (the path is the key)."""
    vals = ["" if f in _NOT_STORED else getattr(h, f) for f in _STORED]
    return json.dumps(vals, separators=(",", ":"), allow_nan=False)


def _may_hold_surrogates(text: str) -> bool:
    """Whether JSON ``text`` may decode to a lone surrogate (``\\udXXX`` escape)."""
    return "\\ud" in text or "\\uD" in text


def _decode(text: object, path: str) -> ImageHeader | None:
    """The header stored as ``text`` (None when it is not the JSON array of a header)."""
    if type(text) is not str:  # SQLite is dynamically typed: NULL, BLOB or a number
        return None
    try:
        vals = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return _from_values(vals, path, strict=_may_hold_surrogates(text))


def _from_values(vals: object, path: str, strict: bool = False) -> ImageHeader | None:
    """The header stored as the JSON array ``vals`` (None when it has the wrong shape or
    a field has the wrong type).

    The fast path checks the type of every value in C (``map``) and looks closer only at
    floats (finite) and lists (tuples of the right length and types); anything else, or
    ``strict`` (text that may hold lone surrogates), goes through the full converters.
    """
    if type(vals) is not list or len(vals) != _N_STORED:
        return None
    try:
        if not strict and all(map(frozenset.__contains__, _PLAIN, map(type, vals))):
            conv = vals
            # NaN and inf make the sum non-finite (so may an overflow: only a miss).
            if not math.isfinite(sum(filter(None, map(conv.__getitem__, _FLOAT_POS)))):
                return None
            for i, n, items, floats in _TUPLES:
                v = conv[i]
                if type(v) is not list:
                    continue
                if (
                    (n is None or len(v) == n)
                    and all(map(items.__contains__, map(type, v)))
                    and (not floats or math.isfinite(sum(v)))  # NaN, inf (or overflow: a miss)
                ):
                    conv[i] = tuple(v)
                else:  # ints for floats, wrong length or types: the full converter decides
                    conv[i] = _CONVERT[i](v)
        else:
            conv = [f(v) for f, v in zip(_CONVERT, vals, strict=True)]
    except (_Reject, RecursionError):
        return None
    if _PATH_FIRST:
        h = ImageHeader(path, *conv)  # type: ignore[arg-type]
    else:
        h = ImageHeader(path=path, **dict(zip(_STORED, conv, strict=True)))  # type: ignore[arg-type]
    return h if _plausible(h) else None


@functools.lru_cache(maxsize=256)
def _orientation_ok(orientation: tuple[float, ...]) -> bool:
    # Memoised: the slices of a series share one orientation.
    return not orientation_problem(orientation)


def _plausible(h: ImageHeader) -> bool:
    """Whether :func:`~hu_roi.io.dicom.read_header` could have returned ``h``: the
    checks it makes on every file (image size, and the geometry of a single-frame image),
    so an entry that passes the type checks but holds impossible values is a miss."""
    if not (0 < h.rows and 0 < h.columns and 0 < h.number_of_frames):
        return False
    if h.rows * h.columns > MAX_PIXELS_PER_FRAME:
        return False
    if h.number_of_frames == 1:
        if h.position is None or h.orientation is None or h.pixel_spacing is None:
            return False
        if min(h.pixel_spacing) <= 0 or not _orientation_ok(h.orientation):
            return False
    return True


def _decode_many(texts: list[object], paths: list[str]) -> list[ImageHeader | None]:
    """:func:`_decode` of many entries with one JSON parse (per entry if one is bad)."""
    arrays: object = None
    strict = False
    if all(type(t) is str for t in texts):
        joined = "[" + ",".join(texts) + "]"  # type: ignore[arg-type]
        strict = _may_hold_surrogates(joined)
        try:
            arrays = json.loads(joined)
        except (ValueError, RecursionError):
            arrays = None
    if type(arrays) is not list or len(arrays) != len(texts):  # a bad entry shifted them
        return [_decode(t, p) for t, p in zip(texts, paths, strict=True)]
    return [_from_values(a, p, strict) for a, p in zip(arrays, paths, strict=True)]


def _is_corrupt(exc: sqlite3.Error) -> bool:
    """True when ``exc`` says the database file is damaged (then it is rebuilt); every
    other error (read-only, disk full, I/O, locked) leaves the file alone."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


class _Unsafe(Exception):
    """The cache location holds something the cache must not open or change."""


def _as_int64(v: int) -> int:
    """``v`` (an inode or device number up to 2**64) as a signed 64-bit SQLite integer."""
    return v - (1 << 64) if v >= (1 << 63) else v


def _stamp(st: os.stat_result) -> _Stamp:
    return (
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        _as_int64(st.st_ino),
        _as_int64(st.st_dev),
    )


def _secure_file(path: str, tighten: bool = True) -> None:
    """Check an existing cache file and tighten it to :data:`FILE_MODE`.

    Parameters
    ----------
    path : str
    tighten : bool
        False only checks (before the file is known to be a header cache).

    Raises
    ------
    _Unsafe
        When ``path`` is a symbolic link or not a regular file (left untouched).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise _Unsafe(f"{path} is a symbolic link; not followed")
    if not stat.S_ISREG(st.st_mode):
        raise _Unsafe(f"{path} is not a regular file")
    if tighten and st.st_mode & 0o077:
        try:
            os.chmod(path, FILE_MODE)
        except OSError as exc:
            log.warning("header cache %s is readable by others; cannot tighten it (%s)", path, exc)


def _secure_folder(folder: Path) -> None:
    """Tighten ``folder`` to :data:`FOLDER_MODE` when it holds only cache files."""
    try:
        st = os.stat(folder)
        if not stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o077:
            return
        names = os.listdir(folder)
    except OSError:
        return
    if all(n.startswith(FILE_NAME) for n in names):
        try:
            os.chmod(folder, FOLDER_MODE)
        except OSError as exc:
            log.info("cannot tighten header cache folder %s (%s)", folder, exc)
    else:  # a shared folder (HU_ROI_CACHE_DIR=/tmp): the files are 0600 anyway
        log.info("header cache folder %s holds other files; its mode is left as it is", folder)


def _create_private(path: str) -> None:
    """Create an empty database file with mode 0600 (SQLite gives its -wal and -shm
    files the database file's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


class HeaderCache:
    """Header cache in one SQLite file (see the module docstring).

    Parameters
    ----------
    path : path-like or None
        Database file; ``None`` keeps the cache in memory (for one process only).

    Notes
    -----
    The object has the interface :func:`hu_roi.io.index_folder` uses: ``get(path)``,
    ``get_many(paths, stats)``, ``put(path, header)`` and ``flush()``; it is also a
    context manager (``close`` on exit).  Counters ``hits``, ``misses`` and ``stores``
    tell what happened.

    A header is stored with the stamp of its file as :meth:`get_many` saw it *before*
    the file was read, so a file that changes while its header is read is read again
    next time.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._pending: list[tuple[object, ...]] = []
        #: Stamps of the misses of get_many, used by put (path key -> stamp).
        self._missed: dict[str, _Stamp] = {}
        self._db: sqlite3.Connection | None = None
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self._open()

    # -- construction ---------------------------------------------------------------
    @classmethod
    def default(cls) -> HeaderCache:
        """The per-user cache in :func:`default_cache_dir` (created with mode 0700 if
        missing)."""
        folder = default_cache_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
        except OSError as exc:
            log.warning("header cache disabled: cannot create %s (%s)", folder, exc)
            return cls(None)
        return cls(folder / FILE_NAME)

    def _connect(self) -> sqlite3.Connection:
        if self.path is None:
            target = ":memory:"
        else:
            target = str(self.path)
            for name in (target, *(target + s for s in _SIDE_SUFFIXES)):
                _secure_file(name, tighten=False)  # tightened once known to be ours
            _create_private(target)
        db = sqlite3.connect(target, timeout=10.0, check_same_thread=False)
        try:
            self._prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self, db: sqlite3.Connection) -> None:
        # Look before writing anything (even the WAL switch rewrites the file header).
        tables = {
            r[0]
            for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if not str(r[0]).startswith("sqlite_")
        }
        if tables - {"meta", "headers"}:  # another program's database: never change it
            raise _Unsafe(f"{self.path} is not a header cache (tables {sorted(tables)})")
        db.execute(
            "PRAGMA journal_mode=WAL" if self.path is not None else "PRAGMA cache_size=-8000"
        )
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = db.execute("SELECT value FROM meta WHERE key='version'").fetchone()
        if row is None or row[0] != _VERSION:
            db.execute("DROP TABLE IF EXISTS headers")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (_VERSION,))
        cols = ", ".join(f"{c} INTEGER" for c in _STAMP_COLUMNS)
        db.execute(
            f"CREATE TABLE IF NOT EXISTS headers (path TEXT PRIMARY KEY, {cols}, header TEXT)"
        )
        db.commit()
        if self.path is not None:  # ours, and the WAL files exist now: all private
            for suffix in ("", *_SIDE_SUFFIXES):
                _secure_file(str(self.path) + suffix)

    def _open(self) -> None:
        if self.path is not None:
            _secure_folder(self.path.parent)
        try:
            self._db = self._connect()
            return
        except _Unsafe as exc:
            log.warning("header cache disabled for this run: %s", exc)
            return
        except (sqlite3.Error, OSError, ValueError) as exc:
            if self.path is None or not (isinstance(exc, sqlite3.Error) and _is_corrupt(exc)):
                log.warning("header cache %s disabled for this run (%s)", self.path, exc)
                return
            log.warning("header cache %s damaged (%s); rebuilding it", self.path, exc)
        self._rebuild()

    def _rebuild(self) -> None:
        """Remove a damaged database and start an empty one (else disable the cache)."""
        self._remove_files()
        try:
            self._db = self._connect()
        except (sqlite3.Error, OSError, _Unsafe) as exc:
            log.warning("header cache disabled: cannot rebuild %s (%s)", self.path, exc)
            self._db = None

    def _remove_files(self) -> None:
        if self.path is None:
            return
        for suffix in ("", *_SIDE_SUFFIXES):
            try:
                os.remove(str(self.path) + suffix)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove %s%s: %s", self.path, suffix, exc)

    def _failed(self, exc: Exception) -> None:
        """A database error during use: rebuild a damaged file, else disable the cache
        for this run and leave the file (and its stored entries) as it is."""
        self._pending.clear()
        try:
            if self._db is not None:
                self._db.close()
        except sqlite3.Error:
            pass
        self._db = None
        if isinstance(exc, sqlite3.Error) and _is_corrupt(exc) and self.path is not None:
            log.warning("header cache %s damaged (%s); rebuilding it", self.path, exc)
            self._rebuild()
        else:
            log.warning(
                "header cache error (%s); cache %s not used for the rest of this run, "
                "stored entries kept",
                exc,
                self.path or "(memory)",
            )

    # -- the index_folder interface -------------------------------------------------
    @staticmethod
    def _key(path: str | os.PathLike[str], st: os.stat_result | None = None) -> tuple[str, _Stamp]:
        if st is None:
            st = os.stat(path)
        # Names that are not valid UTF-8 reach Python as lone surrogates, which SQLite
        # cannot store: key them by their bytes, escaped.
        key = os.fsencode(os.path.abspath(path)).decode("utf-8", "backslashreplace")
        return key, _stamp(st)

    def get(self, path: str | os.PathLike[str]) -> ImageHeader | None:
        """The cached header of ``path`` if the file is unchanged, else ``None``.

        Raises
        ------
        OSError
            When the file cannot be stat-ed (the index reports it as unreadable).
        """
        st = os.stat(path)
        return self.get_many([str(path)], [st])[0]

    def get_many(
        self,
        paths: Sequence[str],
        stats: Sequence[os.stat_result | None] | None = None,
    ) -> list[ImageHeader | None]:
        """:meth:`get` for many files with one query per :data:`QUERY_CHUNK` paths.

        Parameters
        ----------
        paths : sequence of str
        stats : sequence of os.stat_result or None, optional
            ``os.stat`` of each path when the caller has it already (saves a second
            stat); None entries are stat-ed here.

        Returns
        -------
        list of ImageHeader or None
            None for a file not cached, changed since (size, mtime, ctime, inode or
            device differ), stored in a shape that does not decode, or that cannot be
            stat-ed (the index then reads it and reports the reason).
        """
        out: list[ImageHeader | None] = [None] * len(paths)
        if self._db is None:  # disabled: nothing to look up, no stat needed
            self.misses += len(paths)
            return out
        keys: dict[str, tuple[int, _Stamp]] = {}
        for i, p in enumerate(paths):
            try:
                key, stamp = self._key(p, stats[i] if stats is not None else None)
            except OSError:
                continue
            keys[key] = (i, stamp)
        rows: list[tuple[object, ...]] = []
        names = list(keys)
        cols = ", ".join(_STAMP_COLUMNS)
        with self._lock:
            try:
                for k in range(0, len(names), QUERY_CHUNK):
                    chunk = names[k : k + QUERY_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows += self._db.execute(
                        f"SELECT path, {cols}, header FROM headers WHERE path IN ({marks})",
                        chunk,
                    ).fetchall()
            except sqlite3.Error as exc:
                self._failed(exc)
                rows = []
        fresh = [
            (keys[r[0]][0], r[-1])  # type: ignore[index]
            for r in rows
            if r[0] in keys and keys[r[0]][1] == tuple(r[1:-1])  # type: ignore[index]
        ]
        decoded = _decode_many([t for _, t in fresh], [paths[i] for i, _ in fresh])
        for (i, _), h in zip(fresh, decoded, strict=True):
            out[i] = h
        with self._lock:
            for key, (i, stamp) in keys.items():
                if out[i] is None:
                    self._missed[key] = stamp
        n_hit = sum(h is not None for h in out)
        self.hits += n_hit
        self.misses += len(paths) - n_hit
        return out

    def put(self, path: str | os.PathLike[str], header: ImageHeader) -> None:
        """Remember ``header`` for ``path`` with the file's stamp as :meth:`get_many`
        saw it before the file was read (else its current stamp)."""
        if self._db is None:
            return
        try:
            key = os.fsencode(os.path.abspath(path)).decode("utf-8", "backslashreplace")
            with self._lock:
                stamp = self._missed.pop(key, None)
            if stamp is None:
                key, stamp = self._key(path)
            text = _encode(header)
        except OSError:
            return
        except (TypeError, ValueError) as exc:  # a value JSON cannot hold: not cached
            log.debug("header of %s not cached: %s", path, exc)
            return
        with self._lock:
            self._pending.append((key, *stamp, text))
            self.stores += 1
            full = len(self._pending) >= FLUSH_EVERY
        if full:
            self.flush()

    def flush(self) -> None:
        """Write pending entries in one transaction (a locked database skips them; a
        failed write leaves the stored entries as they were)."""
        with self._lock:
            if self._db is None or not self._pending:
                self._pending.clear()
                return
            rows, self._pending = self._pending, []
            marks = ",".join("?" * (len(_STAMP_COLUMNS) + 2))
            try:
                with self._db:
                    self._db.executemany(f"INSERT OR REPLACE INTO headers VALUES ({marks})", rows)
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    log.info("header cache busy; %d entries not stored (%s)", len(rows), exc)
                    return
                self._failed(exc)
            except sqlite3.Error as exc:
                self._failed(exc)

    # -- maintenance ----------------------------------------------------------------
    def __len__(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            try:
                return int(self._db.execute("SELECT COUNT(*) FROM headers").fetchone()[0])
            except sqlite3.Error:
                return 0

    def prune(self) -> int:
        """Forget entries whose file no longer exists; return how many were removed."""
        if self._db is None:
            return 0
        self.flush()
        with self._lock:
            if self._db is None:
                return 0
            try:
                gone = [
                    (p,)
                    for (p,) in self._db.execute("SELECT path FROM headers")
                    if not os.path.exists(p)
                ]
                with self._db:
                    self._db.executemany("DELETE FROM headers WHERE path=?", gone)
            except sqlite3.Error as exc:
                self._failed(exc)
                return 0
        return len(gone)

    def clear(self) -> None:
        """Forget every entry."""
        if self._db is None:
            return
        with self._lock:
            self._pending.clear()
            self._missed.clear()
            try:
                with self._db:
                    self._db.execute("DELETE FROM headers")
            except sqlite3.Error as exc:
                self._failed(exc)

    def close(self) -> None:
        """Flush and close the database."""
        self.flush()
        with self._lock:
            self._missed.clear()
            if self._db is not None:
                try:
                    self._db.close()
                except sqlite3.Error as exc:  # the checkpoint of a full disk: WAL kept
                    log.info("header cache %s: close failed (%s)", self.path, exc)
                self._db = None

    def __enter__(self) -> HeaderCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "memory" if self.path is None else str(self.path)
        state = "disabled" if self._db is None else "open"
        return f"HeaderCache({where}, {state}, hits={self.hits}, misses={self.misses})"
