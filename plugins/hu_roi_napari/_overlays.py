"""Vertebra label maps and RT dose shown over the series on screen (no Qt).

Both are put on the CT's own voxel grid by the core, so their layers take the image
layer's placement (scale/translate or affine, axis order) unchanged:

* a label map (NIfTI or DICOM SEG): :func:`hu_roi.roisfromlabels.labels_for_volume`
  (refuses a map off the CT's grid, of another series, or without vertebra labels);
* an RTDOSE: :func:`hu_roi.io.rtdose.check_dose_for_series` (Frame of Reference,
  patient), then :func:`hu_roi.io.rtdose.dose_on_volume` (trilinear, Gy, NaN outside
  the dose grid).

The readers run in a worker thread (:meth:`Session.label_map_job` /
:meth:`Session.dose_job`); they read headers and the overlay file only, never the CT's
pixels (a header-only volume, :func:`hu_roi.volume.header_volume`, gives the voxel centres).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hu_roi.series import SeriesInfo
from hu_roi.volume import header_volume

from ._geometry import layer_transform

__all__ = [
    "OVERLAY_KEY",
    "LABELS_NAME",
    "DOSE_NAME",
    "LabelOverlay",
    "DoseOverlay",
    "read_label_overlay",
    "read_dose_overlay",
    "labels_layer_data",
    "dose_layer_data",
    "dose_colormap",
]

#: Layer metadata key of an overlay: ``{"token": series token, "kind": "labels"|"dose"}``
#: (no path, no identifier: the layer may be shown in blinded reading).
OVERLAY_KEY = "hu_roi_overlay"
#: Layer names (neutral: a file name may identify the patient).
LABELS_NAME = "vertebra labels"
DOSE_NAME = "dose (Gy)"
#: Opacity of the dose layer (translucent over the CT; napari's slider changes it).
DOSE_OPACITY = 0.5


@dataclass(frozen=True, eq=False)
class LabelOverlay:
    """A vertebra label map on the grid of one series.

    Attributes
    ----------
    series_key, token : str
        The series it lies on (and its layer token).
    source : str
        File name of the label map (for messages and the proposals' provenance).
    labels : numpy.ndarray of int, shape (slices, rows, columns)
        Label value per CT voxel (0 = none), slices in the series' order.
    table : dict of int -> str
        Label value -> vertebral level (values not in it are other structures).
    """

    series_key: str
    token: str
    source: str
    labels: np.ndarray
    table: dict[int, str]

    @property
    def levels(self) -> list[str]:
        """Levels labelled on this series, head to foot order of the table values."""
        present = set(np.unique(self.labels).tolist())
        return [lev for v, lev in sorted(self.table.items(), reverse=True) if v in present]

    def level_at(self, k: int, r: int, c: int) -> str | None:
        """The level labelled at voxel (k, r, c), None when none."""
        return self.table.get(int(self.labels[k, r, c]))


@dataclass(frozen=True, eq=False)
class DoseOverlay:
    """An RT dose sampled at every voxel centre of one series.

    Attributes
    ----------
    series_key, token, source : str
        As :class:`LabelOverlay`.
    dose_gy : numpy.ndarray of float32, shape (slices, rows, columns)
        Dose (Gy) at each CT voxel centre, NaN outside the dose grid.
    max_gy : float
        Largest dose on the series (0 when the grid misses it).
    grid : hu_roi.io.rtdose.DoseGrid or None
        The dose grid itself: ROI statistics sample it at the ROI's voxel centres in float64,
        as ``hu-roi measure --rtdose`` does (``dose_gy`` is float32, for display).
    """

    series_key: str
    token: str
    source: str
    dose_gy: np.ndarray
    max_gy: float
    grid: Any = None

    def at(self, k: int, r: int, c: int) -> float | None:
        """Dose (Gy) at voxel (k, r, c), None outside the dose grid."""
        v = float(self.dose_gy[k, r, c])
        return v if math.isfinite(v) else None


def read_label_overlay(info: SeriesInfo, token: str, path: str | Path) -> LabelOverlay:
    """Read a label map (NIfTI or DICOM SEG) onto the grid of series ``info``.

    Raises
    ------
    hu_roi.io.labels.LabelMapError, hu_roi.roisfromlabels.LabelProposalError
        Not readable, not on the CT's grid, another series, no vertebra label (one line).
    OSError
        The file cannot be opened.
    """
    from hu_roi.roisfromlabels import labels_for_volume

    labels, table = labels_for_volume(path, header_volume(info))
    top = int(labels.max()) if labels.size else 0
    # the smallest integer type holding the values (a 512×512×300 map: 79 MB, not 315)
    dtype = np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.int32
    return LabelOverlay(
        series_key=info.series_key,
        token=token,
        source=Path(path).name,
        labels=labels.astype(dtype, copy=False),
        table=dict(table),
    )


def read_dose_overlay(info: SeriesInfo, token: str, path: str | Path) -> DoseOverlay:
    """Read an RTDOSE, check it belongs to series ``info`` and sample it on its voxels.

    Raises
    ------
    hu_roi.io.rtdose.DoseError
        Not an RTDOSE, relative dose, other Frame of Reference or patient (one line).
    OSError
        The file cannot be opened.
    """
    from hu_roi.io.rtdose import check_dose_for_series, dose_on_volume, read_rtdose

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(2, "No such file", str(p))
    grid = read_rtdose(p)
    check_dose_for_series(grid, info)
    dose = dose_on_volume(grid, header_volume(info))
    finite = dose[np.isfinite(dose)]
    return DoseOverlay(
        series_key=info.series_key,
        token=token,
        source=p.name,
        dose_gy=dose,
        max_gy=float(finite.max()) if finite.size else 0.0,
        grid=grid,
    )


def labels_layer_data(ov: LabelOverlay, info: SeriesInfo) -> tuple[np.ndarray, dict[str, Any]]:
    """Data (layer axis order) and keyword arguments of a napari Labels layer of ``ov``.

    The layer's ``features`` name each label value's level (``index`` = label value), so
    napari's layer controls and status show it.
    """
    tr = layer_transform(info)
    values = sorted(ov.table)
    features = {
        "index": np.asarray(values, dtype=int),
        "level": np.asarray([ov.table[v] for v in values], dtype=object),
    }
    kwargs: dict[str, Any] = {
        "name": LABELS_NAME,
        "opacity": 0.4,
        "features": features,
        "metadata": {OVERLAY_KEY: {"token": ov.token, "kind": "labels"}},
        **tr.kwargs(),
    }
    return np.transpose(ov.labels, tr.perm), kwargs


def dose_colormap() -> Any:
    """napari Colormap for dose: transparent at 0 Gy, then 'turbo' from blue to red."""
    from napari.utils.colormaps import AVAILABLE_COLORMAPS, Colormap

    turbo = np.asarray(AVAILABLE_COLORMAPS["turbo"].colors, dtype=float)
    idx = np.linspace(0, len(turbo) - 1, 16).round().astype(int)
    colors = turbo[idx].copy()
    colors[:, 3] = 1.0
    # below 2 % of the top of the scale the dose fades out: no tint where there is none
    colors = np.vstack([[0.0, 0.0, 0.0, 0.0], colors])
    controls = np.concatenate([[0.0], np.linspace(0.02, 1.0, len(idx))])
    return Colormap(colors=colors, controls=controls, name="hu-roi dose")


class NanAsZero:
    """Read-only view of a float array that reads NaN as 0, piece by piece.

    The dose layer's data: outside the dose grid nothing is drawn (0 Gy is transparent)
    while :attr:`DoseOverlay.dose_gy` keeps NaN there, without a second copy of the
    volume (a 512 × 512 × 300 series: 315 MB saved).  Implements what napari reads of a
    layer's data (``dtype``, ``shape``, ``ndim``, ``size``, indexing, ``__array__``).
    """

    def __init__(self, array: np.ndarray) -> None:
        self._a = array
        self.dtype = array.dtype
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.ndim = array.ndim

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        part = self._a[key]
        return (
            np.nan_to_num(part, nan=0.0)
            if isinstance(part, np.ndarray)
            else (
                0.0 if part != part else part  # a single NaN value
            )
        )

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.nan_to_num(self._a, nan=0.0)
        return out if dtype is None else out.astype(dtype, copy=False)


def dose_layer_data(ov: DoseOverlay, info: SeriesInfo) -> tuple[Any, dict[str, Any]]:
    """Data (layer axis order, NaN read as 0 Gy) and keyword arguments of a napari Image
    layer of ``ov`` (contrast limits 0 … the largest dose, translucent over the CT)."""
    tr = layer_transform(info)
    kwargs: dict[str, Any] = {
        "name": DOSE_NAME,
        "colormap": dose_colormap(),
        "contrast_limits": [0.0, ov.max_gy if ov.max_gy > 0 else 1.0],
        "blending": "translucent",
        "opacity": DOSE_OPACITY,
        "interpolation2d": "nearest",
        "metadata": {OVERLAY_KEY: {"token": ov.token, "kind": "dose"}},
        **tr.kwargs(),
    }
    # outside the dose grid (NaN): 0 Gy, transparent
    return NanAsZero(np.transpose(ov.dose_gy, tr.perm)), kwargs
