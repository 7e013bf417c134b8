"""Persistent header cache: a second index of an unchanged tree does not re-read headers.

:class:`HeaderCache` stores the :class:`~hu_roi.io.dicom.ImageHeader` of every file that
:func:`hu_roi.io.index_folder` read, keyed by the file's absolute path, size and
modification time (``st_mtime_ns``).  A file whose size or mtime changed is read again.

Storage is one SQLite database (``headers.sqlite3``) holding JSON text -- no pickle, so
a cache file planted by someone else cannot run code.  The cache is an optimisation
only: a missing, locked, unreadable or corrupt cache file is logged and rebuilt (or the
cache is disabled for the run); it never makes an index fail.

Direct identifiers (PatientName, PatientBirthDate) are never written to the cache: a
cached header holds them as empty strings, so a cache file left in a home folder leaks no
patient's name.  Commands that output identifiers on request (``hu-roi measure
--include-identifiers``) read headers without the cache.

Location (:meth:`HeaderCache.default`): ``$HU_ROI_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/hu-roi``, else ``~/.cache/hu-roi``.

Limits: a file rewritten with the same size within the same nanosecond mtime is not
noticed (file systems with coarse mtime, e.g. FAT's 2 s, make this more likely: use
``hu-roi index --no-cache`` after rewriting files in place there).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from hu_roi.io.dicom import ImageHeader

log = logging.getLogger(__name__)

#: Bumped when the stored format changes; the field names of ImageHeader are part of the
#: version too, so a changed ImageHeader invalidates old caches automatically.
SCHEMA_VERSION = 4  # 4: free-text tags are stored with identifiers redacted
_FIELDS = tuple(f.name for f in dataclasses.fields(ImageHeader))
_TUPLE_FIELDS = frozenset(f.name for f in dataclasses.fields(ImageHeader) if "tuple" in str(f.type))
_VERSION = f"{SCHEMA_VERSION}:{','.join(_FIELDS)}"
#: Pending writes kept in memory before they are written in one transaction.
FLUSH_EVERY = 2000
#: Paths per ``SELECT ... IN (...)`` of :meth:`HeaderCache.get_many` (SQLite allows 32766
#: parameters since 3.32, 999 before).
QUERY_CHUNK = 900
FILE_NAME = "headers.sqlite3"


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
_TUPLE_POS = tuple(i for i, f in enumerate(_STORED) if f in _TUPLE_FIELDS)


#: Fields never stored (direct identifiers); cached headers carry "" instead.
_NOT_STORED = frozenset({"patient_name", "patient_birth_date"})


def _encode(h: ImageHeader) -> str:
    """JSON array of the header's fields in :data:`_STORED` order (the path is the key)."""
    vals = ["" if f in _NOT_STORED else getattr(h, f) for f in _STORED]
    return json.dumps(vals, separators=(",", ":"))


def _decode(text: str, path: str) -> ImageHeader | None:
    return _from_values(json.loads(text), path)


def _from_values(vals: object, path: str) -> ImageHeader | None:
    """The header stored as the JSON array ``vals`` (None when it has the wrong shape)."""
    if not isinstance(vals, list) or len(vals) != len(_STORED):
        return None
    for i in _TUPLE_POS:
        if vals[i] is not None:
            vals[i] = tuple(vals[i])
    if _PATH_FIRST:
        return ImageHeader(path, *vals)
    return ImageHeader(path=path, **dict(zip(_STORED, vals, strict=True)))


def _decode_many(texts: list[str], paths: list[str]) -> list[ImageHeader | None]:
    """:func:`_decode` of many entries with one JSON parse (per entry if one is bad)."""
    try:
        arrays = json.loads("[" + ",".join(texts) + "]")
    except ValueError:
        arrays = None
    if not isinstance(arrays, list) or len(arrays) != len(texts):  # a bad entry shifted them
        arrays = None
    out: list[ImageHeader | None] = []
    for k, (text, path) in enumerate(zip(texts, paths, strict=True)):
        try:
            if arrays is None:
                out.append(_decode(text, path))
            else:
                out.append(_from_values(arrays[k], path))
        except (ValueError, TypeError, KeyError) as exc:
            log.debug("bad cache entry for %s: %s", path, exc)
            out.append(None)
    return out


class HeaderCache:
    """Header cache in one SQLite file (see the module docstring).

    Parameters
    ----------
    path : path-like or None
        Database file; ``None`` keeps the cache in memory (for one process only).

    Notes
    -----
    The object has the interface :func:`hu_roi.io.index_folder` uses: ``get(path)``,
    ``put(path, header)`` and ``flush()``; it is also a context manager (``close`` on exit).
    Counters ``hits``, ``misses`` and ``stores`` tell what happened.
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)
        self._lock = threading.Lock()
        self._pending: list[tuple[str, int, int, str]] = []
        self._db: sqlite3.Connection | None = None
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self._open()

    # -- construction ---------------------------------------------------------------
    @classmethod
    def default(cls) -> HeaderCache:
        """The per-user cache in :func:`default_cache_dir` (created if missing)."""
        folder = default_cache_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("header cache disabled: cannot create %s (%s)", folder, exc)
            return cls(None)
        return cls(folder / FILE_NAME)

    def _connect(self) -> sqlite3.Connection:
        target = ":memory:" if self.path is None else str(self.path)
        db = sqlite3.connect(target, timeout=10.0, check_same_thread=False)
        db.execute(
            "PRAGMA journal_mode=WAL" if self.path is not None else "PRAGMA cache_size=-8000"
        )
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = db.execute("SELECT value FROM meta WHERE key='version'").fetchone()
        if row is None or row[0] != _VERSION:
            db.execute("DROP TABLE IF EXISTS headers")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (_VERSION,))
        db.execute(
            "CREATE TABLE IF NOT EXISTS headers (path TEXT PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, header TEXT)"
        )
        db.commit()
        return db

    def _open(self) -> None:
        try:
            self._db = self._connect()
            return
        except (sqlite3.Error, OSError, ValueError) as exc:
            if self.path is None:
                log.warning("header cache disabled: %s", exc)
                return
            log.warning("header cache %s unusable (%s); rebuilding it", self.path, exc)
        self._remove_files()
        try:
            self._db = self._connect()
        except (sqlite3.Error, OSError) as exc:
            log.warning("header cache disabled: cannot rebuild %s (%s)", self.path, exc)
            self._db = None

    def _remove_files(self) -> None:
        if self.path is None:
            return
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.remove(str(self.path) + suffix)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove %s%s: %s", self.path, suffix, exc)

    def _failed(self, exc: Exception) -> None:
        """A database error during use: rebuild once, else disable."""
        log.warning("header cache error (%s); rebuilding %s", exc, self.path)
        self._pending.clear()
        try:
            if self._db is not None:
                self._db.close()
        except sqlite3.Error:
            pass
        self._db = None
        self._remove_files()
        try:
            self._db = self._connect()
        except (sqlite3.Error, OSError) as exc2:
            log.warning("header cache disabled for this run (%s)", exc2)
            self._db = None

    # -- the index_folder interface -------------------------------------------------
    @staticmethod
    def _key(
        path: str | os.PathLike[str], st: os.stat_result | None = None
    ) -> tuple[str, int, int]:
        if st is None:
            st = os.stat(path)
        # Names that are not valid UTF-8 reach Python as lone surrogates, which SQLite
        # cannot store: key them by their bytes, escaped.
        key = os.fsencode(os.path.abspath(path)).decode("utf-8", "backslashreplace")
        return key, st.st_size, st.st_mtime_ns

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
            None for a file not cached, changed since, or that cannot be stat-ed (the
            index then reads it and reports the reason).
        """
        out: list[ImageHeader | None] = [None] * len(paths)
        if self._db is None:  # disabled: nothing to look up, no stat needed
            self.misses += len(paths)
            return out
        keys: dict[str, tuple[int, int, int]] = {}
        for i, p in enumerate(paths):
            try:
                key, size, mtime = self._key(p, stats[i] if stats is not None else None)
            except OSError:
                continue
            keys[key] = (i, size, mtime)
        rows: list[tuple[str, int, int, str]] = []
        names = list(keys)
        with self._lock:
            try:
                for k in range(0, len(names), QUERY_CHUNK):
                    chunk = names[k : k + QUERY_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows += self._db.execute(
                        f"SELECT path, size, mtime_ns, header FROM headers WHERE path IN ({marks})",
                        chunk,
                    ).fetchall()
            except sqlite3.Error as exc:
                self._failed(exc)
                rows = []
        fresh = [(keys[r[0]][0], r[3]) for r in rows if keys[r[0]][1:] == (r[1], r[2])]
        decoded = _decode_many([t for _, t in fresh], [paths[i] for i, _ in fresh])
        for (i, _), h in zip(fresh, decoded, strict=True):
            out[i] = h
        n_hit = sum(h is not None for h in out)
        self.hits += n_hit
        self.misses += len(paths) - n_hit
        return out

    def put(self, path: str | os.PathLike[str], header: ImageHeader) -> None:
        """Remember ``header`` for the current size and mtime of ``path``."""
        if self._db is None:
            return
        try:
            key, size, mtime = self._key(path)
        except OSError:
            return
        with self._lock:
            self._pending.append((key, size, mtime, _encode(header)))
            self.stores += 1
            full = len(self._pending) >= FLUSH_EVERY
        if full:
            self.flush()

    def flush(self) -> None:
        """Write pending entries in one transaction (a locked database skips them)."""
        with self._lock:
            if self._db is None or not self._pending:
                self._pending.clear()
                return
            rows, self._pending = self._pending, []
            try:
                with self._db:
                    self._db.executemany("INSERT OR REPLACE INTO headers VALUES (?, ?, ?, ?)", rows)
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
            gone = [
                (p,)
                for (p,) in self._db.execute("SELECT path FROM headers")
                if not os.path.exists(p)
            ]
            with self._db:
                self._db.executemany("DELETE FROM headers WHERE path=?", gone)
        return len(gone)

    def clear(self) -> None:
        """Forget every entry."""
        if self._db is None:
            return
        with self._lock:
            self._pending.clear()
            with self._db:
                self._db.execute("DELETE FROM headers")

    def close(self) -> None:
        """Flush and close the database."""
        self.flush()
        with self._lock:
            if self._db is not None:
                self._db.close()
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
