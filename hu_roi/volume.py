"""A CT volume in Hounsfield units with its patient-coordinate (LPS) geometry.

No pydicom here: a :class:`Volume` can be built from any array plus geometry (tests build
them directly).  Arrays are indexed (slice, row, column).  Pixel (r, c) of slice k lies at

    slice_origins_lps_mm[k] + c·ΔC·X + r·ΔR·Y

where X, Y are the row and column direction cosines (ImageOrientationPatient) and
(ΔR, ΔC) the pixel spacing.  A volume may hold only some slices of its series (a partial
load); ``slice_indices`` then says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from hu_roi.errors import GeometryError
from hu_roi.series import orientation_problem

if TYPE_CHECKING:
    from hu_roi.series import SeriesInfo


@dataclass(frozen=True, eq=False)
class Volume:
    """HU array and geometry of (some slices of) one CT series.

    Attributes
    ----------
    hu : numpy.ndarray, shape (n_slices, rows, columns)
        Hounsfield units after RescaleSlope/Intercept; int16 when exact, else float32.
    orientation : numpy.ndarray, shape (2, 3)
        Row direction X and column direction Y (unit vectors, LPS).
    pixel_spacing_mm : tuple of 2 float
        (ΔR, ΔC): distance between rows and between columns, mm.
    slice_origins_lps_mm : numpy.ndarray, shape (n_slices, 3)
        ImagePositionPatient of each loaded slice (centre of its first pixel), LPS mm.
    slice_indices : numpy.ndarray of int, shape (n_slices,)
        Index of each loaded slice in the full series (sorted by position).
    info : SeriesInfo or None
        Header facts of the series (kVp, kernel, dates, ...); ``None`` for synthetic volumes.
    padding_hu : float or None
        HU of padding outside the reconstruction circle (PixelPaddingValue after rescale),
        if known.
    rescale_slopes, rescale_intercepts : numpy.ndarray of float, shape (n_slices,), or None
        RescaleSlope and RescaleIntercept (HU per stored unit, HU) of each loaded slice as
        read from its file (``None`` for volumes not read from DICOM), so checks of the
        rescale can look at every slice, not only the series' first.
    """

    hu: np.ndarray
    orientation: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    slice_origins_lps_mm: np.ndarray
    slice_indices: np.ndarray = field(default=None)  # type: ignore[arg-type]  # None -> 0..n-1
    info: SeriesInfo | None = None
    padding_hu: float | None = None
    rescale_slopes: np.ndarray | None = None
    rescale_intercepts: np.ndarray | None = None

    def __post_init__(self) -> None:
        hu = np.asarray(self.hu)
        if hu.ndim != 3:
            raise GeometryError(f"Volume.hu must be 3-D (slice, row, column); got shape {hu.shape}")
        ori = np.asarray(self.orientation, dtype=float).reshape(2, 3)
        why = orientation_problem(ori.ravel())  # the index's tolerance: one verdict
        if why:
            raise GeometryError(
                f"orientation must be two orthonormal vectors ({why}); got {ori.tolist()}"
            )
        origins = np.asarray(self.slice_origins_lps_mm, dtype=float).reshape(-1, 3)
        if origins.shape[0] != hu.shape[0]:
            raise GeometryError(
                f"{origins.shape[0]} slice origins for {hu.shape[0]} slices; they must match"
            )
        sp = tuple(float(v) for v in self.pixel_spacing_mm)
        if len(sp) != 2 or not all(np.isfinite(sp)) or min(sp) <= 0:
            raise GeometryError(f"pixel_spacing_mm must be two positive numbers; got {sp}")
        idx = (
            np.arange(hu.shape[0])
            if self.slice_indices is None
            else np.asarray(self.slice_indices, dtype=int).reshape(-1)
        )
        if idx.shape[0] != hu.shape[0]:
            raise GeometryError(f"{idx.shape[0]} slice indices for {hu.shape[0]} slices")
        for name in ("rescale_slopes", "rescale_intercepts"):
            values = getattr(self, name)
            if values is not None:
                values = np.asarray(values, dtype=float).reshape(-1)
                if values.shape[0] != hu.shape[0]:
                    raise GeometryError(f"{values.shape[0]} {name} for {hu.shape[0]} slices")
                object.__setattr__(self, name, values)
        object.__setattr__(self, "hu", hu)
        object.__setattr__(self, "orientation", ori)
        object.__setattr__(self, "pixel_spacing_mm", sp)
        object.__setattr__(self, "slice_origins_lps_mm", origins)
        object.__setattr__(self, "slice_indices", idx)

    # -- geometry ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_slices, rows, columns)."""
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def row_dir(self) -> np.ndarray:
        """X: direction of increasing column index (along a row), shape (3,)."""
        return self.orientation[0]

    @property
    def col_dir(self) -> np.ndarray:
        """Y: direction of increasing row index (down a column), shape (3,)."""
        return self.orientation[1]

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal X × Y, shape (3,)."""
        n = np.cross(self.orientation[0], self.orientation[1])
        return n / np.linalg.norm(n)

    @property
    def slice_positions_mm(self) -> np.ndarray:
        """Position of each loaded slice along the normal (mm), shape (n_slices,)."""
        return self.slice_origins_lps_mm @ self.normal

    @property
    def slice_spacing_mm(self) -> float:
        """Median spacing between loaded slices along the normal (mm); NaN for one slice.

        For a partial load this falls back to the series' spacing.
        """
        if self.info is not None and np.isfinite(self.info.slice_spacing_mm):
            return float(self.info.slice_spacing_mm)
        pos = self.slice_positions_mm
        if pos.size < 2:
            return float("nan")
        return float(np.median(np.abs(np.diff(pos))))

    @property
    def direction(self) -> np.ndarray:
        """3×3 matrix whose columns are X, Y and the normal (SimpleITK's order is X, Y, Z)."""
        return np.column_stack([self.row_dir, self.col_dir, self.normal])

    @property
    def spacing_xyz_mm(self) -> tuple[float, float, float]:
        """(ΔC, ΔR, slice spacing) in SimpleITK's (x, y, z) order, mm."""
        return (self.pixel_spacing_mm[1], self.pixel_spacing_mm[0], self.slice_spacing_mm)

    @property
    def affine(self) -> np.ndarray:
        """4×4 matrix mapping (slice, row, column, 1) indices to LPS mm.

        Only defined when the loaded slices are evenly spaced along the normal (a full
        load of a regular series); raises :class:`GeometryError` otherwise.
        """
        n = self.hu.shape[0]
        origin = self.slice_origins_lps_mm[0]
        if n > 1:
            steps = np.diff(self.slice_origins_lps_mm, axis=0)
            step = steps.mean(axis=0)
            if not np.allclose(steps, step, atol=1e-3 * max(1.0, float(np.linalg.norm(step)))):
                raise GeometryError(
                    "loaded slices are not evenly spaced; use slice_origins_lps_mm per slice"
                )
        else:
            sp = self.slice_spacing_mm
            step = self.normal * (sp if np.isfinite(sp) else 1.0)
        dr, dc = self.pixel_spacing_mm
        a = np.eye(4)
        a[:3, 0] = step
        a[:3, 1] = self.col_dir * dr
        a[:3, 2] = self.row_dir * dc
        a[:3, 3] = origin
        return a

    def pixel_to_lps(self, k: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """LPS coordinates (mm) of pixel centres on loaded slice ``k``.

        Parameters
        ----------
        k : int
            Index into the loaded slices (0 ≤ k < n_slices).
        rows, cols : array_like
            Row and column indices (may be fractional), broadcastable.

        Returns
        -------
        numpy.ndarray, shape (..., 3)
        """
        r = np.asarray(rows, dtype=float)[..., None]
        c = np.asarray(cols, dtype=float)[..., None]
        dr, dc = self.pixel_spacing_mm
        return self.slice_origins_lps_mm[k] + c * dc * self.row_dir + r * dr * self.col_dir

    def lps_to_plane(self, points_lps_mm: np.ndarray, k: int) -> np.ndarray:
        """Project LPS points on loaded slice ``k``: (row, column, distance) per point.

        Parameters
        ----------
        points_lps_mm : array_like, shape (..., 3)
        k : int
            Index into the loaded slices.

        Returns
        -------
        numpy.ndarray, shape (..., 3)
            Fractional row, fractional column, and signed distance (mm) from the slice
            plane along the normal.
        """
        d = np.asarray(points_lps_mm, dtype=float) - self.slice_origins_lps_mm[k]
        dr, dc = self.pixel_spacing_mm
        return np.stack([d @ self.col_dir / dr, d @ self.row_dir / dc, d @ self.normal], axis=-1)


def header_volume(info: SeriesInfo) -> Volume:
    """A pixel-free :class:`Volume` with the geometry of every slice of ``info``.

    Its ``hu`` is a read-only broadcast zero (no memory): enough for what needs only the
    voxel centres (placing a label map or a dose grid, grid checks) before or instead of
    reading pixels.
    """
    n, rows, cols = info.n_slices, info.rows, info.columns
    return Volume(
        hu=np.broadcast_to(np.zeros((), dtype=np.int16), (n, rows, cols)),
        orientation=np.asarray(info.orientation, dtype=float).reshape(2, 3),
        pixel_spacing_mm=info.pixel_spacing_mm,
        slice_origins_lps_mm=np.array([s.position_lps_mm for s in info.slices], dtype=float),
        slice_indices=np.arange(n),
        info=info,
    )
