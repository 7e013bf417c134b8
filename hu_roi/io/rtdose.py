"""RT Dose grids (DICOM RTDOSE) read and sampled at patient positions.

Used by ``hu-roi measure --rtdose`` and the viewer's dose layer.  :func:`read_rtdose` reads
a multi-frame RTDOSE into a :class:`DoseGrid` in Gy (pixel values × DoseGridScaling), with
the frame positions from GridFrameOffsetVector; :meth:`DoseGrid.sample` interpolates it
trilinearly at LPS points (NaN outside the grid); :func:`check_dose_for_series` refuses a
dose of another Frame of Reference or patient; :func:`dose_on_volume` samples it at every
voxel centre of a loaded CT volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hu_roi.errors import HuRoiError

if TYPE_CHECKING:
    from hu_roi.series import SeriesInfo
    from hu_roi.volume import Volume

__all__ = [
    "DoseError",
    "DoseGrid",
    "read_rtdose",
    "check_dose_for_series",
    "dose_on_volume",
]


class DoseError(HuRoiError, ValueError):
    """An RTDOSE that cannot be used (the message says why)."""


@dataclass(frozen=True, eq=False)
class DoseGrid:
    """A dose grid in Gy.

    Attributes
    ----------
    dose_gy : numpy.ndarray, shape (frames, rows, columns)
        Dose in Gy, frames sorted by position along the normal.
    origin_lps_mm : numpy.ndarray, shape (3,)
        ImagePositionPatient of the first (lowest) frame's first pixel, mm.
    orientation : numpy.ndarray, shape (2, 3)
        Row direction X and column direction Y (LPS).
    pixel_spacing_mm : tuple of 2 float
        (ΔR, ΔC), mm.
    frame_positions_mm : numpy.ndarray, shape (frames,)
        Position of each frame along the normal X × Y relative to ``origin_lps_mm``, mm
        (increasing).
    frame_of_reference_uid : str
        To be checked against the CT's before the dose is used.
    patient_id : str
        PatientID of the RTDOSE ("" when absent).
    path : str
        The file it was read from ("" when built in memory).
    summation_type : str
        DoseSummationType (``PLAN``, ``BEAM``, ``FRACTION``, …; "" when absent).
    sop_instance_uid : str
        SOPInstanceUID of the file ("" when absent).
    """

    dose_gy: np.ndarray
    origin_lps_mm: np.ndarray
    orientation: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    frame_positions_mm: np.ndarray
    frame_of_reference_uid: str = ""
    patient_id: str = ""
    path: str = ""
    summation_type: str = ""
    sop_instance_uid: str = ""

    @property
    def normal(self) -> np.ndarray:
        """Unit normal X × Y, shape (3,)."""
        n = np.cross(self.orientation[0], self.orientation[1])
        return n / np.linalg.norm(n)

    def sample(self, points_lps_mm: np.ndarray) -> np.ndarray:
        """Dose (Gy) at LPS points by trilinear interpolation; NaN outside the grid.

        Parameters
        ----------
        points_lps_mm : array_like, shape (..., 3)

        Returns
        -------
        numpy.ndarray, shape (...)
        """
        from scipy import ndimage

        p = np.asarray(points_lps_mm, dtype=float)
        d = p.reshape(-1, 3) - self.origin_lps_mm
        dr, dc = self.pixel_spacing_mm
        row = d @ self.orientation[1] / dr
        col = d @ self.orientation[0] / dc
        z = d @ self.normal
        pos = self.frame_positions_mm
        nf, nr, nc = self.dose_gy.shape
        eps = 1e-6
        frame = np.interp(z, pos, np.arange(nf, dtype=float)) if nf > 1 else np.zeros_like(z)
        inside = (
            (z >= pos[0] - eps)
            & (z <= pos[-1] + eps)
            & (row >= -eps)
            & (row <= nr - 1 + eps)
            & (col >= -eps)
            & (col <= nc - 1 + eps)
        )
        coords = np.vstack(
            [np.clip(frame, 0, nf - 1), np.clip(row, 0, nr - 1), np.clip(col, 0, nc - 1)]
        )
        vals = ndimage.map_coordinates(self.dose_gy, coords, order=1, mode="nearest")
        vals = np.where(inside, vals, np.nan)
        return vals.reshape(p.shape[:-1])  # type: ignore[no-any-return]


def read_rtdose(path: str | Path) -> DoseGrid:
    """Read an RT Dose Storage file (single- or multi-frame) into a :class:`DoseGrid`.

    DoseGridScaling is applied; DoseUnits must be ``GY``.  GridFrameOffsetVector is read
    in both of its forms: relative to ImagePositionPatient (first value 0) or as positions
    along the normal (first value equal to ImagePositionPatient's).

    Raises
    ------
    DoseError
        Not an RTDOSE, relative dose, missing or inconsistent geometry.
    """
    from hu_roi.io.dicom import read_object

    p = Path(path)
    ds, pixels = read_object(p, "RTDOSE", DoseError, not_a="an RTDOSE", read_as="RTDOSE")
    arr = np.asarray(pixels, dtype=np.float64)
    units = str(ds.get("DoseUnits", "")).upper()
    if units != "GY":
        raise DoseError(f"{p}: DoseUnits {units or '(none)'}; only absolute dose in GY is used")
    try:
        scale = float(ds.DoseGridScaling)
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        ori = np.asarray(ds.ImageOrientationPatient, dtype=float).reshape(2, 3)
        dr, dc = (float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DoseError(f"{p}: incomplete dose grid geometry ({exc})") from exc
    if not (np.isfinite(scale) and scale > 0):
        raise DoseError(f"{p}: DoseGridScaling must be a positive number; got {scale}")
    if arr.ndim == 2:
        arr = arr[None]
    nf = arr.shape[0]
    if nf > 1:
        if "GridFrameOffsetVector" not in ds:
            raise DoseError(f"{p}: {nf} frames but no GridFrameOffsetVector")
        off = np.asarray(ds.GridFrameOffsetVector, dtype=float).reshape(-1)
    else:
        off = np.zeros(1)
    if off.shape[0] != nf:
        raise DoseError(f"{p}: GridFrameOffsetVector has {off.shape[0]} values for {nf} frames")
    normal = np.cross(ori[0], ori[1])
    normal /= np.linalg.norm(normal)
    if off[0] != 0.0:  # positions along the normal: the first must be the IPP's
        if abs(off[0] - float(ipp @ normal)) > 1e-3:
            raise DoseError(
                f"{p}: GridFrameOffsetVector starts at {off[0]:g} mm, neither 0 nor the "
                f"position of ImagePositionPatient ({float(ipp @ normal):g} mm)"
            )
        off = off - off[0]
    order = np.argsort(off, kind="stable")
    pos = off[order]
    if nf > 1 and np.any(np.diff(pos) <= 0):
        raise DoseError(f"{p}: GridFrameOffsetVector repeats a position")
    origin = ipp + pos[0] * normal
    return DoseGrid(
        dose_gy=arr[order] * scale,
        origin_lps_mm=origin,
        orientation=ori,
        pixel_spacing_mm=(dr, dc),
        frame_positions_mm=pos - pos[0],
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        patient_id=str(ds.get("PatientID", "") or ""),
        path=str(p),
        summation_type=str(ds.get("DoseSummationType", "") or "").upper(),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "") or ""),
    )


def check_dose_for_series(grid: DoseGrid, info: SeriesInfo) -> None:
    """Refuse a dose that does not belong to the CT series ``info``.

    The RTDOSE and the CT must name the same Frame of Reference (both non-empty: without
    one, nothing says the two share patient coordinates) and, when both record one, the
    same PatientID.

    Raises
    ------
    DoseError
        One line naming both UIDs (or IDs).
    """
    name = Path(grid.path).name or "the RTDOSE"
    if not grid.frame_of_reference_uid:
        raise DoseError(f"{name} has no FrameOfReferenceUID; it cannot be placed on a CT")
    if not info.frame_of_reference_uid:
        raise DoseError(
            f"series {info.series_key} has no FrameOfReferenceUID; {name} cannot be placed on it"
        )
    if grid.frame_of_reference_uid != info.frame_of_reference_uid:
        raise DoseError(
            f"Frame of Reference mismatch: {name} lies in {grid.frame_of_reference_uid}, "
            f"series {info.series_key} in {info.frame_of_reference_uid}"
        )
    if grid.patient_id and info.patient_id and grid.patient_id != info.patient_id:
        raise DoseError(
            f"{name} belongs to another patient than series {info.series_key} (PatientID differs)"
        )


def dose_on_volume(grid: DoseGrid, volume: Volume) -> np.ndarray:
    """Dose (Gy) at the centre of every voxel of ``volume``, shape (slices, rows, columns).

    Trilinear (:meth:`DoseGrid.sample`); NaN where the voxel lies outside the dose grid.
    The Frame of Reference is not checked here (:func:`check_dose_for_series`).
    """
    n, rows, cols = volume.shape
    out = np.empty((n, rows, cols), dtype=np.float32)
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    for k in range(n):
        out[k] = grid.sample(volume.pixel_to_lps(k, rr, cc))
    return out
