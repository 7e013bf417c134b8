"""The voxel rule: which voxels of a :class:`~hu_roi.volume.Volume` belong to an ROI.

Rule (docs/roi_format.md, "The slice rule"):

* A 2D shape (circle, ellipse, polygon) lies on the **one slice whose centre is nearest to
  the shape's plane**.  The plane of a circle/ellipse is the slice-parallel plane through its
  centre; the plane of a polygon is its best-fit plane, which must be parallel to the slices
  (all vertices within :data:`PARALLEL_TOL_MM` of one slice-parallel plane), else
  :class:`RoiPlacementError` (``roi-not-parallel``).  When the two nearest slices are equally
  far (within :data:`TIE_TOL_MM`) that is an error (``roi-slice-tie``), not a silent choice.
* The plane must be imaged: within half the nominal slice spacing (the series' median step,
  widened by the index's 1 % uniformity tolerance, :func:`max_plane_distance`) of a slice
  present.  A plane farther than that from every slice is never measured on the nearest far
  slice: between the first and last slice it lies in a gap of missing slices
  (``roi-in-gap``), beyond them it is outside the image (``roi-outside-image``); the message
  gives the distance in mm.  In a series with irregular spacing the same nominal spacing
  applies, so a plane in the middle of a wide step fails too.
* On that slice, pixel (r, c) at ``p = IPP + c·ΔC·X + r·ΔR·Y`` belongs to the ROI when ``p``
  lies inside or on the boundary of the shape (boundary tolerance :data:`EPS_MM`), with
  in-plane coordinates ``u = (p − IPP)·X``, ``v = (p − IPP)·Y``:

  - circle: ``(u−u0)² + (v−v0)² ≤ R²``;
  - ellipse: with ``θ = angle_deg``, ``a = (u−u0)cosθ + (v−v0)sinθ``,
    ``b = −(u−u0)sinθ + (v−v0)cosθ``: ``(a/rx)² + (b/ry)² ≤ 1``;
  - polygon: even–odd rule on the projected vertices, plus every point within
    :data:`EPS_MM` of an edge.
* Sphere: every voxel of every slice whose centre ``p`` satisfies ``|p − C| ≤ R``.  The
  slice-parallel plane through its centre must be imaged by the rule above (else
  ``roi-in-gap`` / ``roi-outside-image``): without its middle slices a sphere would give
  the mean of its caps, which may lie on a neighbouring vertebra or disc.  A sphere whose
  centre is imaged but which reaches beyond the first/last slice or into a gap is measured
  on its imaged part and flagged (``beyond_stack`` / ``partly_in_gap``).

* Line (a vertebral height): a length, not an area; it selects **no voxels** (an empty
  mask, no slices needed).  It is measured from the geometry alone
  (:func:`hu_roi.measure.measure_line`).

Masks are computed per slice on the ROI's bounding box only, never as full-volume masks.
The rule only uses each slice's own ImagePositionPatient, so it holds for any orientation,
anisotropic pixels, feet-first stacks and partial volumes (``Volume.slice_indices``).
Pixel centres of the shape that fall outside the image columns/rows (or sphere parts
beyond the first/last slice) are counted as ``n_outside`` and reported, not measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hu_roi.errors import GeometryError
from hu_roi.roi import Roi, Shape
from hu_roi.series import SeriesInfo
from hu_roi.util import show
from hu_roi.volume import Volume

__all__ = [
    "EPS_MM",
    "TIE_TOL_MM",
    "PARALLEL_TOL_MM",
    "UNIFORM_TOL",
    "max_plane_distance",
    "RoiPlacementError",
    "SliceMask",
    "RoiMask",
    "slices_needed",
    "rasterize_roi",
    "mask_on_slice",
]

#: Boundary tolerance: a voxel centre within this distance outside the boundary is "on" it.
EPS_MM = 1e-6
#: Two slice distances closer than this are a tie (mm).
TIE_TOL_MM = 1e-3
#: A polygon is parallel to the slices when its vertices span at most this along the normal.
PARALLEL_TOL_MM = 0.1
#: Largest bounding box side (pixels) we rasterize; bigger ROIs are refused.
MAX_BOX_PIXELS = 8192
#: Steps within this fraction (and 0.01 mm) of the nominal spacing count as uniform: the
#: same tolerance as the index's ``non-uniform-spacing`` rule (hu_roi.io.dicom.UNIFORM_TOL).
UNIFORM_TOL = 0.01


class RoiPlacementError(GeometryError):
    """An ROI cannot be placed on the series grid.

    Attributes
    ----------
    code : str
        Short qc code: ``roi-outside-image``, ``roi-in-gap``, ``roi-slice-tie``,
        ``roi-not-parallel``, ``slice-not-loaded``, ``roi-too-large``.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SliceMask:
    """The ROI's voxels on one slice, on the ROI's bounding box.

    Attributes
    ----------
    k : int
        Index into the Volume's loaded slices.
    slice_index : int
        Index of the slice in the full series.
    row0, col0 : int
        Image row/column of ``mask[0, 0]`` (the box is clipped to the image).
    mask : numpy.ndarray of bool, shape (h, w)
    n_outside : int
        Pixel centres of the shape on this slice lying outside the image.
    """

    k: int
    slice_index: int
    row0: int
    col0: int
    mask: np.ndarray
    n_outside: int = 0

    @property
    def n_voxels(self) -> int:
        return int(np.count_nonzero(self.mask))

    def rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Image row and column indices of the voxels (each shape (n,))."""
        r, c = np.nonzero(self.mask)
        return r + self.row0, c + self.col0


@dataclass(frozen=True)
class RoiMask:
    """All voxels of an ROI on a Volume.

    Attributes
    ----------
    roi_id : str
    parts : tuple of SliceMask
        One per touched slice, ordered by loaded index.
    n_outside : int
        Voxel centres of the shape that fall outside the image (in-plane), all slices.
    beyond_stack : bool
        A sphere reaches beyond the first or last slice of the series (by more than half a
        slice spacing), so part of it is not imaged.
    plane_distance_mm : float
        2D shapes: distance from the shape's plane to the chosen slice centre (mm).
    partly_in_gap : bool
        A sphere (whose centre is imaged) reaches into a gap of missing slices, so part of
        it is not imaged.
    """

    roi_id: str
    parts: tuple[SliceMask, ...]
    n_outside: int = 0
    beyond_stack: bool = False
    plane_distance_mm: float = 0.0
    partly_in_gap: bool = False

    @property
    def n_voxels(self) -> int:
        return sum(p.n_voxels for p in self.parts)

    @property
    def slice_indices(self) -> tuple[int, ...]:
        return tuple(p.slice_index for p in self.parts if p.n_voxels)

    def values(self, volume: Volume) -> np.ndarray:
        """HU of the ROI's voxels as float64, shape (n_voxels,)."""
        out = [
            volume.hu[p.k, p.row0 : p.row0 + p.mask.shape[0], p.col0 : p.col0 + p.mask.shape[1]][
                p.mask
            ]
            for p in self.parts
        ]
        if not out:
            return np.empty(0, dtype=np.float64)
        return np.concatenate(out).astype(np.float64)

    def to_dense(self, shape: tuple[int, int, int]) -> np.ndarray:
        """Full boolean mask of the loaded volume's shape (for display/tests only)."""
        m = np.zeros(shape, dtype=bool)
        for p in self.parts:
            h, w = p.mask.shape
            m[p.k, p.row0 : p.row0 + h, p.col0 : p.col0 + w] |= p.mask
        return m


# --------------------------------------------------------------------------------------
def _normal(orientation: np.ndarray) -> np.ndarray:
    n = np.cross(orientation[0], orientation[1])
    return n / np.linalg.norm(n)


def _plane_position(shape: Shape, normal: np.ndarray, roi_id: str) -> float:
    """Position of a 2D shape's plane along the slice normal (mm)."""
    if shape.type == "polygon":
        h = np.asarray(shape.points_mm, dtype=float) @ normal
        if float(h.max() - h.min()) > PARALLEL_TOL_MM:
            raise RoiPlacementError(
                f"ROI {show(roi_id)}: polygon is not parallel to the slices (its vertices span "
                f"{h.max() - h.min():.3f} mm along the slice normal; tolerance "
                f"{PARALLEL_TOL_MM} mm). Draw it on one slice of this series.",
                "roi-not-parallel",
            )
        return float(h.mean())
    return float(np.asarray(shape.center_mm, dtype=float) @ normal)


def max_plane_distance(spacing_mm: float) -> float:
    """Largest distance (mm) from a slice centre at which a plane counts as imaged.

    Half the nominal slice spacing, widened by the index's uniformity tolerance
    (:data:`UNIFORM_TOL`, at least 0.01 mm) so that sub-percent jitter of the slice
    positions never turns a plane between two regular slices into a gap, plus
    :data:`TIE_TOL_MM`.  With an unknown spacing (one slice) the nominal spacing is 1 mm.
    """
    sp = spacing_mm if math.isfinite(spacing_mm) and spacing_mm > 0 else 1.0
    return 0.5 * (sp + max(UNIFORM_TOL * sp, 0.01)) + TIE_TOL_MM


class _Selection(NamedTuple):
    """What :func:`_select` found: touched slices and what is not imaged."""

    idx: list[int]
    beyond_stack: bool
    plane_distance_mm: float
    partly_in_gap: bool


def _not_imaged(
    roi_id: str, h: float, positions: np.ndarray, spacing: float, what: str
) -> RoiPlacementError | None:
    """The error for a plane at ``h`` (mm along the normal) that no slice present images,
    or None.  ``what`` names the plane in the message (``its plane``, ``the sphere's centre``).
    """
    lo, hi = float(positions.min()), float(positions.max())
    d = float(np.min(np.abs(positions - h)))
    allowed = max_plane_distance(spacing)
    if not d > allowed:  # also False for NaN: a NaN plane is refused by the ROI loader
        return None
    sp = f"{spacing:.3f} mm" if math.isfinite(spacing) else "unknown"
    if lo <= h <= hi:
        return RoiPlacementError(
            f"ROI {show(roi_id)}: {what} ({h:.3f} mm along the normal) lies in a gap of "
            f"missing slices, {d:.2f} mm from the nearest slice present (more than half the "
            f"slice spacing {sp}); not measured on a far slice",
            "roi-in-gap",
        )
    return RoiPlacementError(
        f"ROI {show(roi_id)}: {what} ({h:.3f} mm along the normal) lies outside the slice "
        f"stack ({lo:.3f} … {hi:.3f} mm), {d:.2f} mm from the nearest slice (slice spacing "
        f"{sp})",
        "roi-outside-image",
    )


def _reaches_gap(c: float, r: float, positions: np.ndarray, spacing: float) -> bool:
    """True when the extent ``c ± r`` (mm) overlaps a stretch between two adjacent slices
    that no slice images (farther than :func:`max_plane_distance` from both)."""
    pos = np.unique(positions)  # sorted
    if pos.size < 2:
        return False
    allowed = max_plane_distance(spacing)
    a, b = pos[:-1] + allowed, pos[1:] - allowed  # the unimaged stretch of each step
    return bool(np.any((a < b) & (c - r < b) & (c + r > a)))


def _select(
    positions: np.ndarray, spacing: float, shape: Shape, normal: np.ndarray, roi_id: str
) -> _Selection:
    """Slices touched by the shape (indices into ``positions``) and what is not imaged."""
    n = positions.size
    if n == 0:
        raise RoiPlacementError(
            f"ROI {show(roi_id)}: the series has no slices", "roi-outside-image"
        )
    # unknown spacing (one slice): accept planes within 0.5 mm of the slice
    half = 0.5 * spacing if np.isfinite(spacing) and spacing > 0 else 0.5
    lo, hi = float(positions.min()), float(positions.max())
    if shape.is_2d:
        h = _plane_position(shape, normal, roi_id)
        err = _not_imaged(roi_id, h, positions, spacing, "its plane")
        if err is not None:
            raise err
        d = np.abs(positions - h)
        order = np.argsort(d, kind="stable")
        best = int(order[0])
        if (
            n > 1
            and abs(d[order[1]] - d[best]) <= TIE_TOL_MM
            and abs(positions[order[1]] - positions[best]) > TIE_TOL_MM
        ):
            raise RoiPlacementError(
                f"ROI {show(roi_id)}: its plane ({h:.4f} mm along the normal) is equally far "
                f"({d[best]:.4f} mm) from two slices; move it onto a slice",
                "roi-slice-tie",
            )
        if n > 1 and abs(positions[order[1]] - positions[best]) <= TIE_TOL_MM:
            raise RoiPlacementError(
                f"ROI {show(roi_id)}: two slices share the nearest position "
                f"{positions[best]:.4f} mm",
                "roi-slice-tie",
            )
        return _Selection([best], False, float(d[best]), False)
    c = float(np.asarray(shape.center_mm, dtype=float) @ normal)
    r = float(shape.radius_mm)  # type: ignore[arg-type]
    err = _not_imaged(roi_id, c, positions, spacing, "the sphere's centre")
    if err is not None:
        raise err
    idx = [int(i) for i in np.nonzero(np.abs(positions - c) <= r + EPS_MM)[0]]
    if not idx:  # imaged centre, but a sphere thinner than the slice spacing
        raise RoiPlacementError(
            f"ROI {show(roi_id)}: the sphere ({c:.3f} ± {r:.3f} mm along the normal) touches "
            f"no slice centre of the stack ({lo:.3f} … {hi:.3f} mm)",
            "roi-outside-image",
        )
    beyond = (c - r < lo - half) or (c + r > hi + half)
    return _Selection(idx, beyond, 0.0, _reaches_gap(c, r, positions, spacing))


def _check_size(shape: Shape, spacing_mm: tuple[float, float], roi_id: str) -> None:
    """Refuse shapes whose bounding box exceeds MAX_BOX_PIXELS (before any arithmetic
    that could overflow with absurd sizes such as 1e308 mm)."""
    if shape.type == "polygon":
        p = np.asarray(shape.points_mm, dtype=float)
        with np.errstate(over="ignore", invalid="ignore"):
            extent = float(np.max(p.max(axis=0) - p.min(axis=0)))
    elif shape.type == "ellipse":
        extent = 2.0 * max(shape.radii_mm)  # type: ignore[arg-type]
    else:
        extent = 2.0 * float(shape.radius_mm)  # type: ignore[arg-type]
    if not math.isfinite(extent) or extent / min(spacing_mm) > MAX_BOX_PIXELS:
        raise RoiPlacementError(
            f"ROI {show(roi_id)} spans {extent:.4g} mm, more than {MAX_BOX_PIXELS} pixels of "
            f"{min(spacing_mm):.4g} mm; check its size and units (mm)",
            "roi-too-large",
        )


def slices_needed(roi: Roi, info: SeriesInfo) -> list[int]:
    """Indices into ``info.slices`` that the ROI touches (from the header only).

    Use with ``load_series(info, slices=slices_needed(roi, info))`` to read only those.

    Raises
    ------
    RoiPlacementError
        Tie between two slices, polygon not parallel, ROI outside the stack.
    """
    if roi.shape.is_line:  # a height: measured from the geometry, no pixels read
        return []
    _check_size(roi.shape, info.pixel_spacing_mm, roi.roi_id)
    normal = info.normal
    pos = info.positions_along_normal_mm
    return sorted(_select(pos, info.slice_spacing_mm, roi.shape, normal, roi.roi_id).idx)


def _box(umin: float, umax: float, step: float) -> tuple[int, int]:
    """First/last pixel index whose centre coordinate ``i·step`` lies in [umin, umax]."""
    a = math.ceil(umin / step - 1e-9)
    b = math.floor(umax / step + 1e-9)
    return a, b


def _inplane_half_extent(shape: Shape) -> tuple[float, float]:
    """Half extents of a centred shape along X (u) and Y (v), mm."""
    if shape.type == "ellipse":
        rx, ry = shape.radii_mm  # type: ignore[misc]
        t = math.radians(shape.angle_deg)
        hu_ = math.hypot(rx * math.cos(t), ry * math.sin(t))
        hv = math.hypot(rx * math.sin(t), ry * math.cos(t))
        return hu_, hv
    r = float(shape.radius_mm)  # type: ignore[arg-type]
    return r, r


def _points_in_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd test plus an on-edge tolerance; u, v broadcastable; poly shape (m, 2)."""
    inside = np.zeros(np.broadcast(u, v).shape, dtype=bool)
    on_edge = np.zeros_like(inside)
    m = poly.shape[0]
    for i in range(m):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % m]
        # crossing number (ray towards +u)
        cond = (y1 > v) != (y2 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x1 + (v - y1) * (x2 - x1) / (y2 - y1)
        inside ^= cond & (u < xint)
        # distance to segment
        dx, dy = x2 - x1, y2 - y1
        L2 = dx * dx + dy * dy
        t = np.clip(((u - x1) * dx + (v - y1) * dy) / L2, 0.0, 1.0) if L2 > 0 else 0.0
        px, py = x1 + t * dx - u, y1 + t * dy - v
        on_edge |= px * px + py * py <= EPS_MM * EPS_MM
    return inside | on_edge


def _slice_mask(
    volume: Volume, k: int, shape: Shape, roi_id: str
) -> tuple[np.ndarray, int, int, int]:
    """Mask on slice k: (mask clipped to image, row0, col0, n_outside)."""
    X, Y = volume.orientation[0], volume.orientation[1]
    dr, dc = volume.pixel_spacing_mm
    o = volume.slice_origins_lps_mm[k]
    nrows, ncols = volume.hu.shape[1:]
    if shape.type == "polygon":
        P = np.asarray(shape.points_mm, dtype=float) - o
        pu, pv = P @ X, P @ Y
        umin, umax, vmin, vmax = pu.min(), pu.max(), pv.min(), pv.max()
        r2 = 0.0
    else:
        C = np.asarray(shape.center_mm, dtype=float) - o
        u0, v0 = float(C @ X), float(C @ Y)
        if shape.type == "sphere":
            dn = float(C @ _normal(volume.orientation))
            r2 = float(shape.radius_mm) ** 2 - dn * dn  # type: ignore[arg-type]
            rr = math.sqrt(max(r2, 0.0))
            hu_, hv = rr, rr
        else:
            hu_, hv = _inplane_half_extent(shape)
            r2 = 0.0
        umin, umax, vmin, vmax = u0 - hu_, u0 + hu_, v0 - hv, v0 + hv
    pad = 2 * EPS_MM
    c0, c1 = _box(umin - pad, umax + pad, dc)
    r0, r1 = _box(vmin - pad, vmax + pad, dr)
    if c1 < c0 or r1 < r0:
        return np.zeros((0, 0), dtype=bool), 0, 0, 0
    if c1 < 0 or r1 < 0 or c0 >= ncols or r0 >= nrows:
        # the bounding box misses the image entirely (also guards absurd coordinates)
        return np.zeros((0, 0), dtype=bool), 0, 0, 1
    if (c1 - c0 + 1) > MAX_BOX_PIXELS or (r1 - r0 + 1) > MAX_BOX_PIXELS:
        raise RoiPlacementError(
            f"ROI {show(roi_id)} spans more than {MAX_BOX_PIXELS} pixels; check its size/units (mm)",
            "roi-too-large",
        )
    cols = np.arange(c0, c1 + 1)
    rows = np.arange(r0, r1 + 1)
    u = (cols * dc)[None, :]
    v = (rows * dr)[:, None]
    if shape.type == "polygon":
        m = _points_in_polygon(u, v, np.column_stack([pu, pv]))
    elif shape.type == "ellipse":
        rx, ry = shape.radii_mm  # type: ignore[misc]
        t = math.radians(shape.angle_deg)
        du, dv = u - u0, v - v0
        a = du * math.cos(t) + dv * math.sin(t)
        b = -du * math.sin(t) + dv * math.cos(t)
        # on-boundary tolerance EPS_MM, expressed on the normalised radius
        m = (a / rx) ** 2 + (b / ry) ** 2 <= (1.0 + EPS_MM / min(rx, ry)) ** 2
    elif shape.type == "circle":
        R = float(shape.radius_mm)  # type: ignore[arg-type]
        m = (u - u0) ** 2 + (v - v0) ** 2 <= (R + EPS_MM) ** 2
    else:  # sphere: |p - C|^2 = in-plane^2 + dn^2 <= R^2
        R = float(shape.radius_mm)  # type: ignore[arg-type]
        m = (u - u0) ** 2 + (v - v0) ** 2 + dn * dn <= (R + EPS_MM) ** 2
    m = np.broadcast_to(m, (rows.size, cols.size))
    in_r = (rows >= 0) & (rows < nrows)
    in_c = (cols >= 0) & (cols < ncols)
    n_total = int(np.count_nonzero(m))
    clipped = m[np.ix_(in_r, in_c)]
    n_out = n_total - int(np.count_nonzero(clipped))
    if clipped.size == 0:
        return np.zeros((0, 0), dtype=bool), 0, 0, n_out
    return np.ascontiguousarray(clipped), int(rows[in_r][0]), int(cols[in_c][0]), n_out


def rasterize_roi(volume: Volume, roi: Roi) -> RoiMask:
    """Voxels of ``roi`` on ``volume`` by the voxel rule (see the module docstring).

    Parameters
    ----------
    volume : Volume
        Full or partial volume.  With ``volume.info`` set, slice selection uses the full
        series' positions (so a partial volume gives the same answer as a full one) and
        the needed slices must be loaded; without it, the loaded slices are the stack.
    roi : Roi

    Returns
    -------
    RoiMask
        Empty (no parts) for a line ROI, which selects no voxels.

    Raises
    ------
    RoiPlacementError
        ``roi-slice-tie``, ``roi-not-parallel``, ``roi-outside-image`` (plane beyond the
        stack), ``slice-not-loaded``, ``roi-too-large``.
    """
    if roi.shape.is_line:
        return RoiMask(roi.roi_id, ())
    _check_size(roi.shape, volume.pixel_spacing_mm, roi.roi_id)
    normal = volume.normal
    if volume.info is not None and volume.info.n_slices:
        info = volume.info
        sel = _select(
            info.positions_along_normal_mm, info.slice_spacing_mm, roi.shape, normal, roi.roi_id
        )
        idx = sel.idx
        loaded = {int(s): k for k, s in enumerate(volume.slice_indices)}
        missing = [i for i in idx if i not in loaded]
        if missing:
            raise RoiPlacementError(
                f"ROI {show(roi.roi_id)} needs slice(s) {missing} of the series, which are not "
                "loaded; load them (slices_needed(roi, info))",
                "slice-not-loaded",
            )
        ks = [loaded[i] for i in idx]
    else:
        pos = volume.slice_positions_mm
        sel = _select(pos, volume.slice_spacing_mm, roi.shape, normal, roi.roi_id)
        ks = sel.idx
    parts = []
    n_out = 0
    for k in sorted(ks):
        mask, r0, c0, no = _slice_mask(volume, k, roi.shape, roi.roi_id)
        n_out += no
        if mask.size:
            parts.append(SliceMask(k, int(volume.slice_indices[k]), r0, c0, mask, no))
    return RoiMask(
        roi.roi_id,
        tuple(parts),
        n_out,
        bool(sel.beyond_stack),
        sel.plane_distance_mm,
        sel.partly_in_gap,
    )


def mask_on_slice(volume: Volume, roi: Roi, k: int) -> np.ndarray:
    """Boolean mask (rows, columns) of ``roi`` on loaded slice ``k`` — for display.

    Empty (all False) when the ROI does not lie on that slice.  Uses exactly the same
    rule as :func:`rasterize_roi` (and so as every measurement).
    """
    out = np.zeros(volume.hu.shape[1:], dtype=bool)
    rm = rasterize_roi(volume, roi)
    for p in rm.parts:
        if p.k == k:
            h, w = p.mask.shape
            out[p.row0 : p.row0 + h, p.col0 : p.col0 + w] = p.mask
    return out
