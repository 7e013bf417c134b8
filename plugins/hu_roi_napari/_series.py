"""One open series: its header, a per-slice HU cache, the lazy napari array and layer data.

Pixels are read only through :func:`hu_roi.io.load_series` (``slices=[k]``), one slice at a
time, so opening a large series shows its first slice without loading the volume.  The
same cache feeds the display and the live measurement (which builds a partial
:class:`hu_roi.volume.Volume` of exactly the slices an ROI needs).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hu_roi.io import IndexResult, index_folder, load_series
from hu_roi.series import SeriesInfo
from hu_roi.volume import Volume

from ._geometry import layer_transform

log = logging.getLogger(__name__)

__all__ = [
    "BONE_WINDOW",
    "SeriesHandle",
    "register",
    "handle_for_token",
    "handle_of_layer",
    "series_label",
    "header_metadata",
    "timepoint_from_path",
    "PLUGIN_STATE",
    "index_cached",
]

#: Default display window: bone (contrast limits, HU) = W1400/L500.
BONE_WINDOW: tuple[float, float] = (-200.0, 1200.0)
#: Slices kept in memory per series (512×512 int16 ≈ 0.5 MB each).
CACHE_SLICES = 256
_TIMEPOINTS = ("T0", "T1", "T2", "T3")


@dataclass
class PluginState:
    """Process-wide settings the reader and the widgets share.

    Attributes
    ----------
    blinded : bool
        Blinded reading: layer names and metadata carry no identifier.
    labels : dict
        series_key → neutral label (e.g. ``"Case 07"``) assigned by the blinded reading list.
    """

    blinded: bool = False
    labels: dict[str, str] | None = None


PLUGIN_STATE = PluginState()


def index_cached(root: str | Path) -> IndexResult:
    """:func:`hu_roi.io.index_folder` with the per-user header cache.

    Re-opening a folder then reads no header again (a 300-file series: ~1 s -> ~0.03 s).
    The cache never stores patient names or birth dates, and the plugin never shows them.
    """
    from hu_roi.io.cache import HeaderCache

    with HeaderCache.default() as cache:
        return index_folder(root, cache=cache)


class SeriesHandle:
    """A series opened in the viewer: header facts + cached HU slices.

    Parameters
    ----------
    info : SeriesInfo
    accept : iterable of str
        Problem codes accepted when loading (passed to :func:`hu_roi.io.load_series`).
    root : str or Path, optional
        Folder the series was indexed from (for timepoint inference).
    """

    def __init__(
        self, info: SeriesInfo, *, accept: Iterable[str] = (), root: str | Path = ""
    ) -> None:
        self.info = info
        self.accept = tuple(accept)
        self.root = str(root)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._padding: dict[int, float | None] = {}
        self._lock = threading.Lock()
        self.n_loads = 0  #: number of load_series calls (tests check laziness)

    @property
    def token(self) -> str:
        """Opaque, non-identifying id of the series (hash of its series key)."""
        return "s" + hashlib.sha1(self.info.series_key.encode()).hexdigest()[:12]

    # -- pixels --------------------------------------------------------------------------
    def _load(self, idx: Sequence[int]) -> None:
        missing = [int(i) for i in idx if int(i) not in self._cache]
        if not missing:
            return
        vol = load_series(self.info, slices=missing, accept=self.accept)
        self.n_loads += 1
        with self._lock:
            for j, s in enumerate(vol.slice_indices):
                self._cache[int(s)] = vol.hu[j]
                self._padding[int(s)] = vol.padding_hu
            while len(self._cache) > CACHE_SLICES:
                old, _ = self._cache.popitem(last=False)
                self._padding.pop(old, None)

    def slice_hu(self, k: int) -> np.ndarray:
        """HU of slice ``k`` (index into ``info.slices``), shape (rows, columns)."""
        self._load([k])
        with self._lock:
            self._cache.move_to_end(int(k))
            return self._cache[int(k)]

    def slice_float32(self, k: int) -> np.ndarray:
        """HU of slice ``k`` as float32 (the display dtype)."""
        return np.asarray(self.slice_hu(k), dtype=np.float32)

    def _stack(self, idx: list[int]) -> tuple[np.ndarray, float | None]:
        """HU of the sorted, unique, non-empty slices ``idx`` stacked, and their padding HU.

        Up to :data:`CACHE_SLICES` slices go through the cache; more (a 3-D view of a
        long series) are read in one :func:`load_series` call, not cached (the cache
        would evict some before they are stacked).
        """
        if len(idx) > CACHE_SLICES:
            full = _FULL.get(self.token)
            if full is not None and full[0] == idx:
                return full[1], full[2]
            vol = load_series(self.info, slices=idx, accept=self.accept)
            self.n_loads += 1
            # a reformat (sagittal/coronal view) asks for every slice at each step: keep
            # the last such stack of one series only (memory of one volume)
            _FULL.clear()
            _FULL[self.token] = (idx, vol.hu, vol.padding_hu)
            return vol.hu, vol.padding_hu
        self._load(idx)
        with self._lock:
            arrays = [self._cache[i] for i in idx]
            pads = {self._padding.get(i) for i in idx} - {None}
        return np.stack(arrays), (pads.pop() if len(pads) == 1 else None)

    def volume(self, slices: Sequence[int]) -> Volume:
        """Partial :class:`Volume` holding exactly ``slices`` (sorted, unique), with ``info``.

        Same voxels as ``load_series(info, slices=slices)``; cached slices are not re-read.
        """
        idx = sorted({int(s) for s in slices})
        hu, pad = (
            self._stack(idx) if idx else (np.empty((0, self.info.rows, self.info.columns)), None)
        )
        origins = np.array([self.info.slices[i].position_lps_mm for i in idx], dtype=float)
        return Volume(
            hu=hu,
            orientation=np.asarray(self.info.orientation, dtype=float).reshape(2, 3),
            pixel_spacing_mm=self.info.pixel_spacing_mm,
            slice_origins_lps_mm=origins.reshape(-1, 3),
            slice_indices=np.asarray(idx, dtype=int),
            info=self.info,
            padding_hu=pad,
        )

    def slices_float32(self, ks: Sequence[int]) -> np.ndarray:
        """HU of slices ``ks`` (any order, repeats allowed) as float32, shape (len(ks), R, C)."""
        info = self.info
        uniq = sorted({int(k) for k in ks})
        if not uniq:
            return np.empty((0, info.rows, info.columns), dtype=np.float32)
        stack = self._stack(uniq)[0].astype(np.float32, copy=False)
        pos = np.searchsorted(uniq, np.asarray(ks, dtype=int))
        return stack if len(pos) == len(uniq) and np.all(np.diff(pos) == 1) else stack[pos]

    def lazy_array(self, perm: Sequence[int] = (0, 1, 2)) -> LazySeriesArray:
        """The series as a :class:`LazySeriesArray` (float32 HU), axes ordered by ``perm``."""
        return LazySeriesArray(self, perm)

    # -- napari layer ------------------------------------------------------------------
    def layer_data(self, *, blinded: bool = False, label: str | None = None) -> tuple:
        """napari LayerData tuple ``(data, kwargs, "image")`` of this series."""
        tr = layer_transform(self.info)
        meta: dict[str, Any] = {"hu_roi": {"token": self.token}}
        if not blinded:
            meta["hu_roi"].update(header_metadata(self.info))
        name = label if (blinded and label) else series_label(self.info)
        kwargs: dict[str, Any] = {
            "name": name,
            "contrast_limits": list(BONE_WINDOW),
            "colormap": "gray",
            "interpolation2d": "nearest",
            "metadata": meta,
            **tr.kwargs(),
        }
        return (self.lazy_array(tr.perm), kwargs, "image")


class LazySeriesArray:
    """Read-only 3-D array of a series' HU (float32) that reads slices only when indexed.

    It implements napari's ``LayerDataProtocol`` (``dtype``, ``shape``, ``ndim``,
    ``size``, ``__getitem__`` with integers, slices and ``...``), so napari reads just the
    slice it draws.  It replaces a dask array of one delayed load per slice: importing
    ``dask.array`` and building that graph took ~0.7 s of opening a 300-slice series.

    Parameters
    ----------
    handle : SeriesHandle
        Source of the slices (and their cache).
    perm : sequence of 3 int
        Axis ``i`` of this array is axis ``perm[i]`` of the series (0 = slice, 1 = row,
        2 = column), as :class:`~hu_roi_napari._geometry.LayerTransform` orders them.
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, handle: SeriesHandle, perm: Sequence[int] = (0, 1, 2)) -> None:
        if sorted(perm) != [0, 1, 2]:
            raise ValueError(f"perm must order the axes 0, 1, 2; got {tuple(perm)}")
        self.handle = handle
        self.perm = tuple(int(p) for p in perm)
        #: slices that could not be read (shown blank, reported once each)
        self.unreadable: set[int] = set()
        info = handle.info
        series_shape = (info.n_slices, info.rows, info.columns)
        self.shape: tuple[int, int, int] = tuple(series_shape[p] for p in self.perm)  # type: ignore[assignment]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazySeriesArray(shape={self.shape}, dtype=float32, perm={self.perm})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        basic = _expand_key(key, 3)
        if basic is None:  # fancy indexing (napari does not use it): read all, then index
            return self[...][key]
        series_key: list[Any] = [None, None, None]
        for axis, p in enumerate(self.perm):
            series_key[p] = basic[axis]
        ks = np.arange(self.handle.info.n_slices)[series_key[0]]  # IndexError when out
        plane = (series_key[1], series_key[2])
        if np.ndim(ks) == 0:
            out = self._planes([int(ks)])[0][plane]
            kept = [a for a in (1, 2) if not isinstance(series_key[a], int)]
        else:
            out = self._planes(ks.tolist())[(slice(None), *plane)]
            kept = [a for a in (0, 1, 2) if not isinstance(series_key[a], int)]
        # `out` has the kept series axes in series order; return them in this array's order
        order = [kept.index(p) for p in self.perm if p in kept]
        return out.transpose(order) if order != sorted(order) else out

    def _planes(self, ks: list[int]) -> np.ndarray:
        """Slices ``ks``; one that cannot be read is NaN (blank) and reported once.

        napari asks for slices while drawing, where an exception would only leave a
        traceback in the console and a stale picture.
        """
        from hu_roi.errors import HuRoiError

        try:
            return self.handle.slices_float32(ks)
        except (HuRoiError, OSError):
            pass  # find which: read one by one
        info = self.handle.info
        out = np.full((len(ks), info.rows, info.columns), np.nan, dtype=np.float32)
        for j, k in enumerate(ks):
            try:
                out[j] = self.handle.slice_float32(k)
            except (HuRoiError, OSError) as exc:
                if k not in self.unreadable:
                    self.unreadable.add(k)
                    why = "" if PLUGIN_STATE.blinded else f": {exc}"
                    notify(f"hu-roi: slice {k + 1} of {info.n_slices} cannot be read{why}")
        return out


def notify(msg: str, *, warning: bool = True) -> None:
    """A napari notification (a log message without napari, e.g. headless use)."""
    try:
        from napari.utils.notifications import show_info, show_warning

        (show_warning if warning else show_info)(msg)
    except Exception:  # noqa: BLE001 - no napari: log instead
        log.warning(msg)


def _expand_key(key: Any, ndim: int) -> tuple[Any, ...] | None:
    """``key`` as ``ndim`` entries of int or slice (``...`` expanded); None for others."""
    if not isinstance(key, tuple):
        key = (key,)
    dots = [i for i, k in enumerate(key) if k is Ellipsis]
    if len(dots) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if dots:
        i = dots[0]
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1 :]
    if len(key) > ndim:
        raise IndexError(f"too many indices: array is {ndim}-dimensional, {len(key)} given")
    key = key + (slice(None),) * (ndim - len(key))
    out = []
    for k in key:
        if isinstance(k, slice):
            out.append(k)
        elif isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            out.append(int(k))
        else:
            return None
    return tuple(out)


#: The last stack of more than CACHE_SLICES slices read (reformat views): token -> (slices,
#: HU, padding HU).  One entry at most.
_FULL: dict[str, tuple[list[int], np.ndarray, float | None]] = {}

# -- registry: layers carry only an opaque token; the handle lives here -------------------
_REGISTRY: dict[str, SeriesHandle] = {}


def register(handle: SeriesHandle) -> SeriesHandle:
    """Remember a handle (the same series opened twice shares one cache)."""
    old = _REGISTRY.get(handle.token)
    if old is not None and old.info == handle.info:
        return old
    _REGISTRY[handle.token] = handle
    return handle


def handle_for_token(token: str) -> SeriesHandle | None:
    """The handle registered under ``token``, if any."""
    return _REGISTRY.get(token)


def handle_of_layer(layer: Any) -> SeriesHandle | None:
    """The series handle of a napari layer made by this plugin (None for other layers)."""
    meta = getattr(layer, "metadata", None) or {}
    tok = (meta.get("hu_roi") or {}).get("token")
    return _REGISTRY.get(tok) if tok else None


# -- labels and metadata -------------------------------------------------------------------
def _date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def series_label(info: SeriesInfo) -> str:
    """Layer name: patient, date and series description, e.g. ``P01 2019-03-04 Bone B60s``."""
    parts = [info.patient_id, _date(info.study_date), info.series_description or "CT"]
    return " ".join(p for p in parts if p)


def header_metadata(info: SeriesInfo) -> dict[str, Any]:
    """Header facts for layer metadata (no patient name or birth date, ever)."""
    return {
        "patient_id": info.patient_id,
        "study_date": info.study_date,
        "series_instance_uid": info.series_instance_uid,
        "series_key": info.series_key,
        "series_description": info.series_description,
        "modality": info.modality,
        "manufacturer": info.manufacturer,
        "model": info.model,
        "kvp": info.kvp,
        "kernel": info.kernel,
        "slice_thickness_mm": info.slice_thickness_mm,
        "slice_spacing_mm": info.slice_spacing_mm,
        "pixel_spacing_mm": info.pixel_spacing_mm,
        "orientation": info.orientation,
        "n_slices": info.n_slices,
        "problems": list(info.problems),
        "contrast_agent": info.contrast_agent,
    }


def timepoint_from_path(info: SeriesInfo, root: str | Path = "") -> str | None:
    """``T0``..``T3`` when a folder of the series' path (below ``root``) is named so."""
    folder = Path(info.folder or (info.slices[0].path if info.slices else ""))
    try:
        parts = folder.resolve().relative_to(Path(root).resolve()).parts if root else folder.parts
    except ValueError:
        parts = folder.parts
    for p in reversed(parts):
        if p.upper() in _TIMEPOINTS:
            return p.upper()
    return None
