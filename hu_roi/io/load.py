"""Loading HU volumes (all slices or only some) of an indexed series.

The loader reads the files of the requested slices only, decodes them with pydicom's
pixel decoders (pylibjpeg, pyjpegls, …, chosen per transfer syntax) in a thread pool, and
writes HU straight into one preallocated array: int16 when the rescale is exact in int16,
float32 otherwise.  It never builds int64/float64 copies of a whole volume.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pydicom

from hu_roi.errors import DicomReadError, SeriesProblemError
from hu_roi.series import PROBLEM_CODES, SeriesInfo
from hu_roi.volume import Volume

log = logging.getLogger(__name__)

#: Refused even when accepted: hu-roi cannot place their frames correctly (yet).
NEVER_LOADABLE = frozenset({"multiframe", "not-ct", "mixed-size"})

#: Largest volume (bytes of the HU array) a load allocates unless told otherwise.
DEFAULT_MAX_BYTES = 8 * 1024**3

_INT16 = np.iinfo(np.int16)


def _is_int(v: float) -> bool:
    return float(v).is_integer()


def slice_indices_at(info: SeriesInfo, positions_mm: Iterable[float]) -> list[int]:
    """Indices of the slices nearest to positions along the series' slice normal.

    Parameters
    ----------
    info : SeriesInfo
    positions_mm : iterable of float
        Positions along ``info.normal`` (mm), i.e. ``point_lps @ info.normal``.

    Returns
    -------
    list of int
        Sorted unique indices into ``info.slices``.
    """
    along = info.positions_along_normal_mm
    return sorted({int(np.argmin(np.abs(along - p))) for p in positions_mm})


def check_loadable(info: SeriesInfo, accept: Iterable[str] = ()) -> None:
    """Raise :class:`SeriesProblemError` when the series must not be measured.

    Parameters
    ----------
    info : SeriesInfo
    accept : iterable of str
        Problem codes the caller explicitly accepts (e.g. ``("gantry-tilt",)``).
    """
    accepted = set(accept)
    unknown = accepted - set(PROBLEM_CODES)
    if unknown:
        raise ValueError(
            f"unknown problem code(s) {sorted(unknown)}; known: {', '.join(PROBLEM_CODES)}"
        )
    never = [p for p in info.problems if p in NEVER_LOADABLE]
    if never:
        raise SeriesProblemError(
            f"series {info.series_key} cannot be loaded: "
            + "; ".join(f"{p} ({PROBLEM_CODES[p]})" for p in never),
            tuple(never),
        )
    refused = [p for p in info.refusing_problems if p not in accepted]
    if refused:
        raise SeriesProblemError(
            f"series {info.series_key} refused: "
            + "; ".join(f"{p} ({PROBLEM_CODES[p]})" for p in refused)
            + f". To load it anyway, accept {','.join(refused)} explicitly "
            "(load_series(..., accept=...) or --accept).",
            tuple(refused),
        )


def _decode(path: str, rows: int, cols: int) -> tuple[np.ndarray, float, float, float | None]:
    """Stored values of one single-frame image plus its slope, intercept and padding value."""
    try:
        try:
            ds = pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError:
            # No preamble (old ACR-NEMA style); the index already checked it is a data set.
            ds = pydicom.dcmread(path, force=True)
            if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
                ds.file_meta = pydicom.dataset.FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
                if not ds.original_encoding[0]:
                    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    except Exception as exc:
        raise DicomReadError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if int(ds.get("Rows", 0)) != rows or int(ds.get("Columns", 0)) != cols:
        raise DicomReadError(
            f"{path}: image size {ds.get('Rows')}x{ds.get('Columns')} differs from the "
            f"series' {rows}x{cols}; the file changed since it was indexed"
        )
    try:
        arr = ds.pixel_array
    except Exception as exc:  # short pixel data, missing decoder, corrupt stream
        raise DicomReadError(
            f"{path}: cannot decode pixel data ({type(exc).__name__}: {exc})"
        ) from None
    if arr.shape != (rows, cols):
        raise DicomReadError(f"{path}: decoded shape {arr.shape}, expected {(rows, cols)}")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    pad = ds.get("PixelPaddingValue", None)
    return arr, slope, intercept, (float(pad) if pad is not None else None)


def load_series(
    info: SeriesInfo,
    *,
    slices: Sequence[int] | None = None,
    accept: Iterable[str] = (),
    workers: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Volume:
    """Load the HU volume of a series, or only some of its slices.

    Parameters
    ----------
    info : SeriesInfo
        From :func:`hu_roi.io.index_folder`.
    slices : sequence of int or None
        Indices into ``info.slices`` (sorted by position) to load; ``None`` loads all.
        Other slices are not read from disk.
    accept : iterable of str
        Problem codes the caller accepts (see :func:`check_loadable`).  With
        ``duplicate-positions`` accepted, the first image (by path) at each position is kept.
    workers : int or None
        Decoding threads (default: number of CPUs, at most 8).
    max_bytes : int
        Refuse before allocating when the HU array would be larger than this.

    Returns
    -------
    Volume
        ``hu`` of shape (n_slices, rows, columns), int16 when exact else float32.

    Raises
    ------
    SeriesProblemError
        The series has a problem that makes measurement wrong and it was not accepted.
    DicomReadError
        A file cannot be read or decoded.
    """
    check_loadable(info, accept)
    n_all = info.n_slices
    if slices is None:
        idx = list(range(n_all))
    else:
        idx = sorted({int(i) for i in slices})
        bad = [i for i in idx if i < 0 or i >= n_all]
        if bad:
            raise IndexError(f"slice indices {bad} out of range 0..{n_all - 1}")
    if "duplicate-positions" in info.problems:
        along = info.positions_along_normal_mm
        keep, last = [], None
        for i in idx:
            if last is not None and abs(along[i] - along[last]) <= 0.01:
                log.warning("skipping duplicate slice %s", info.slices[i].path)
                continue
            keep.append(i)
            last = i
        idx = keep
    rows, cols = info.rows, info.columns
    nbytes = len(idx) * rows * cols * 2
    if nbytes > max_bytes:
        raise SeriesProblemError(
            f"series {info.series_key}: {len(idx)}x{rows}x{cols} would need "
            f"{nbytes / 1024**3:.1f} GiB (> {max_bytes / 1024**3:.1f} GiB); load fewer slices",
        )

    slope0 = info.rescale_slope if info.rescale_slope is not None else 1.0
    inter0 = info.rescale_intercept if info.rescale_intercept is not None else 0.0
    exact16 = _is_int(slope0) and _is_int(inter0)
    out = np.empty((len(idx), rows, cols), dtype=np.int16 if exact16 else np.float32)
    paddings: list[float | None] = [None] * len(idx)

    def work(k: int) -> bool:
        """Decode slice k into out[k]; False when it does not fit int16 exactly."""
        arr, slope, inter, pad = _decode(info.slices[idx[k]].path, rows, cols)
        paddings[k] = None if pad is None else pad * slope + inter
        if out.dtype == np.int16:
            if not (_is_int(slope) and _is_int(inter)):
                return False
            lo, hi = int(arr.min()), int(arr.max())
            s, i = int(slope), int(inter)
            ext = sorted((lo * s + i, hi * s + i))
            if ext[0] < _INT16.min or ext[1] > _INT16.max:
                return False
            # int32 scalars: numpy 2 refuses a negative Python int against uint16 arrays.
            if s == 1:
                np.add(arr, np.int32(i), out=out[k], casting="unsafe")
            else:
                np.multiply(arr, np.int32(s), out=out[k], casting="unsafe")
                out[k] += np.int16(i)
        else:
            np.multiply(arr, np.float32(slope), out=out[k], casting="unsafe")
            out[k] += np.float32(inter)
        return True

    n_workers = workers or min(8, os.cpu_count() or 1)
    if len(idx) > 1 and n_workers > 1:
        with ThreadPoolExecutor(n_workers) as pool:
            fits = list(pool.map(work, range(len(idx))))
    else:
        fits = [work(k) for k in range(len(idx))]
    if not all(fits):
        # Rare: a slice whose HU is not exact in int16 (e.g. unsigned 16-bit data near the
        # top of its range).  Redo as float32, which is exact for integers below 2**24.
        log.info("series %s: HU not exact in int16, loading as float32", info.series_key)
        out = np.empty((len(idx), rows, cols), dtype=np.float32)
        if n_workers > 1 and len(idx) > 1:
            with ThreadPoolExecutor(n_workers) as pool:
                list(pool.map(work, range(len(idx))))
        else:
            for k in range(len(idx)):
                work(k)
    pads = {p for p in paddings if p is not None}
    origins = np.array([info.slices[i].position_lps_mm for i in idx], dtype=float).reshape(-1, 3)
    return Volume(
        hu=out,
        orientation=np.asarray(info.orientation, dtype=float).reshape(2, 3),
        pixel_spacing_mm=info.pixel_spacing_mm,
        slice_origins_lps_mm=origins,
        slice_indices=np.asarray(idx, dtype=int),
        info=info,
        padding_hu=pads.pop() if len(pads) == 1 else None,
    )
