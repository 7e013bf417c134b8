"""Translate between napari layer coordinates and DICOM patient coordinates (LPS, mm).

No Qt here and no measurement: only geometry bookkeeping so that a shape drawn in napari
becomes the core :class:`hu_roi.roi.Shape` it looks like, and back.

Conventions
-----------
* An image layer of a series holds the HU array indexed (slice k, row r, column c), slices
  sorted by position along the normal (as :class:`hu_roi.series.SeriesInfo` orders them).
* napari world axes are (z, y, x) of LPS, in mm.  The layer transform maps data index
  ``(k, r, c)`` to world: for the usual axial orientation ``[1,0,0, 0,1,0]`` this is a
  scale ``(Δslice, ΔR, ΔC)`` and a translate ``(z0, y0, x0)`` of the first slice's
  ImagePositionPatient; other orientations use the layer ``affine``.
* Shapes layers of the plugin use the *same* transform as their image, so shape vertices
  are fractional data indices ``(k, r, c)``.  Converting a vertex to LPS uses the exact
  ImagePositionPatient of slice ``round(k)`` (not the mean spacing):
  ``p = IPP_k + c·ΔC·X + r·ΔR·Y`` (docs/roi_format.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hu_roi.rasterize import RoiPlacementError, slices_needed
from hu_roi.roi import Roi, Shape
from hu_roi.series import SeriesInfo

__all__ = [
    "LayerTransform",
    "layer_transform",
    "vertex_to_lps",
    "lps_to_index",
    "napari_to_shape",
    "shape_to_napari",
    "display_slice",
    "line_to_lps",
    "lps_to_line",
]

#: Two ellipse radii closer than this (mm) make a circle.
CIRCLE_TOL_MM = 1e-3


@dataclass(frozen=True)
class LayerTransform:
    """napari layer keyword arguments placing a series in world (z, y, x) LPS mm.

    Attributes
    ----------
    scale, translate : tuple of 3 float or None
        Set when the data-to-world map is a positive diagonal (axial, head or feet first).
    affine : numpy.ndarray of shape (4, 4) or None
        Set otherwise: maps homogeneous layer indices to ``(z, y, x, 1)`` (LPS mm).
    matrix : numpy.ndarray of shape (4, 4)
        The full layer-index-to-world matrix in every case.
    perm : tuple of 3 int
        Layer axis ``i`` is series axis ``perm[i]`` (0 = slice k, 1 = row r, 2 = column
        c).  The HU array is transposed so that each layer axis runs along the world
        axis it is closest to: napari can only display planes whose axes map onto the
        displayed world axes (a coronal series stays displayable next to an axial one).
        ``(0, 1, 2)`` for axial series.
    """

    scale: tuple[float, float, float] | None
    translate: tuple[float, float, float] | None
    affine: np.ndarray | None
    matrix: np.ndarray
    perm: tuple[int, int, int] = (0, 1, 2)

    @property
    def slice_axis(self) -> int:
        """Layer (and world) axis along which the series' slices are stacked."""
        return self.perm.index(0)

    def to_layer(self, vertices_krc: np.ndarray) -> np.ndarray:
        """Series-order vertices ``(k, r, c)`` → layer-order vertices, shape (n, 3)."""
        v = np.atleast_2d(np.asarray(vertices_krc, dtype=float))
        return v[:, list(self.perm)]

    def from_layer(self, vertices: np.ndarray) -> np.ndarray:
        """Layer-order vertices → series-order ``(k, r, c)``, shape (n, 3)."""
        v = np.atleast_2d(np.asarray(vertices, dtype=float))
        out = np.empty_like(v)
        out[:, list(self.perm)] = v
        return out

    def kwargs(self) -> dict[str, object]:
        """Keyword arguments for a napari layer (``scale``/``translate`` or ``affine``)."""
        if self.affine is not None:
            return {"affine": self.affine}
        return {"scale": self.scale, "translate": self.translate}


def _origins(info: SeriesInfo) -> np.ndarray:
    return np.array([s.position_lps_mm for s in info.slices], dtype=float).reshape(-1, 3)


def _xy(info: SeriesInfo) -> tuple[np.ndarray, np.ndarray]:
    o = np.asarray(info.orientation, dtype=float).reshape(2, 3)
    return o[0], o[1]


def layer_transform(info: SeriesInfo) -> LayerTransform:
    """Data-index → world (z, y, x LPS mm) transform of a series' image layer.

    The slice step is the mean step between the first and last slice (exact for evenly
    spaced series; for a ``non-uniform-spacing`` series the display is approximate but
    ROI conversion still uses each slice's own position, see :func:`vertex_to_lps`).
    """
    x_dir, y_dir = _xy(info)
    origins = _origins(info)
    n = origins.shape[0]
    if n > 1:
        step = (origins[-1] - origins[0]) / (n - 1)
    else:
        sp = info.slice_spacing_mm
        step = info.normal * (sp if np.isfinite(sp) and sp > 0 else 1.0)
    dr, dc = info.pixel_spacing_mm
    lps = np.eye(4)
    lps[:3, 0] = step
    lps[:3, 1] = y_dir * dr
    lps[:3, 2] = x_dir * dc
    lps[:3, 3] = origins[0]
    xyz_to_zyx = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    m0 = xyz_to_zyx @ lps
    # layer axis i = the series axis that runs closest to world axis i
    perm = _closest_axes(np.abs(m0[:3, :3]) / np.linalg.norm(m0[:3, :3], axis=0))
    m = m0.copy()
    m[:, :3] = m0[:, list(perm)]
    lin = m[:3, :3]
    diag = np.diag(lin)
    if np.allclose(lin, np.diag(diag), atol=1e-9) and np.all(diag > 0):
        return LayerTransform(
            scale=tuple(float(v) for v in diag),  # type: ignore[arg-type]
            translate=tuple(float(v) for v in m[:3, 3]),  # type: ignore[arg-type]
            affine=None,
            matrix=m,
            perm=perm,
        )
    return LayerTransform(scale=None, translate=None, affine=m, matrix=m, perm=perm)


def _closest_axes(w: np.ndarray) -> tuple[int, int, int]:
    """Permutation p maximising sum_i w[i, p[i]] (w: |cosines| world axis × series axis)."""
    from itertools import permutations

    best = max(permutations(range(3)), key=lambda p: sum(w[i, p[i]] for i in range(3)))
    return tuple(int(v) for v in best)  # type: ignore[return-value]


def vertex_to_lps(info: SeriesInfo, vertices: np.ndarray) -> np.ndarray:
    """LPS (mm) of napari data-index vertices ``(k, r, c)``, shape (n, 3) → (n, 3).

    ``k`` is rounded to the nearest slice and clipped to the stack; ``r, c`` may be
    fractional.
    """
    v = np.atleast_2d(np.asarray(vertices, dtype=float))
    origins = _origins(info)
    k = np.clip(np.rint(v[:, 0]).astype(int), 0, origins.shape[0] - 1)
    x_dir, y_dir = _xy(info)
    dr, dc = info.pixel_spacing_mm
    return origins[k] + v[:, 2:3] * dc * x_dir[None, :] + v[:, 1:2] * dr * y_dir[None, :]


def lps_to_index(info: SeriesInfo, points_lps_mm: np.ndarray, k: int) -> np.ndarray:
    """Data-index vertices ``(k, r, c)`` of LPS points projected on slice ``k``, (n, 3)."""
    p = np.atleast_2d(np.asarray(points_lps_mm, dtype=float))
    x_dir, y_dir = _xy(info)
    dr, dc = info.pixel_spacing_mm
    d = p - _origins(info)[k]
    return np.column_stack([np.full(p.shape[0], float(k)), d @ y_dir / dr, d @ x_dir / dc])


def _frac_slice(info: SeriesInfo, along_mm: np.ndarray) -> np.ndarray:
    """Fractional slice index of positions along the normal (mm), linear between slices
    and extrapolated with the end spacing beyond the stack."""
    pos = np.asarray(info.positions_along_normal_mm, dtype=float)
    a = np.atleast_1d(np.asarray(along_mm, dtype=float))
    if pos.size == 1:
        return np.zeros_like(a)
    k = np.interp(a, pos, np.arange(pos.size, dtype=float))
    lo, hi = a < pos[0], a > pos[-1]
    k[lo] = (a[lo] - pos[0]) / (pos[1] - pos[0])
    k[hi] = pos.size - 1 + (a[hi] - pos[-1]) / (pos[-1] - pos[-2])
    return k


def _origin_at(info: SeriesInfo, k: np.ndarray) -> np.ndarray:
    """ImagePositionPatient at fractional slice indices ``k`` (linear, extrapolated)."""
    o = _origins(info)
    k = np.atleast_1d(np.asarray(k, dtype=float))
    if o.shape[0] == 1:
        return np.repeat(o, k.size, axis=0)
    i = np.clip(np.floor(k).astype(int), 0, o.shape[0] - 2)
    t = (k - i)[:, None]
    return o[i] + t * (o[i + 1] - o[i])


def line_to_lps(info: SeriesInfo, vertices: np.ndarray) -> np.ndarray:
    """LPS (mm) of data-index points ``(k, r, c)`` with fractional ``k`` (a line drawn on
    a reformat): the slice origin is interpolated between the two nearest slices."""
    v = np.atleast_2d(np.asarray(vertices, dtype=float))
    x_dir, y_dir = _xy(info)
    dr, dc = info.pixel_spacing_mm
    return _origin_at(info, v[:, 0]) + v[:, 2:3] * dc * x_dir + v[:, 1:2] * dr * y_dir


def lps_to_line(info: SeriesInfo, points_lps_mm: np.ndarray) -> np.ndarray:
    """Inverse of :func:`line_to_lps`: data-index points ``(k, r, c)`` of LPS points."""
    p = np.atleast_2d(np.asarray(points_lps_mm, dtype=float))
    k = _frac_slice(info, p @ np.asarray(info.normal, dtype=float))
    x_dir, y_dir = _xy(info)
    dr, dc = info.pixel_spacing_mm
    d = p - _origin_at(info, k)
    return np.column_stack([k, d @ y_dir / dr, d @ x_dir / dc])


def display_slice(info: SeriesInfo, roi: Roi) -> int:
    """The slice (index into ``info.slices``) on which to draw an ROI.

    A 2D shape: the slice the core's voxel rule assigns it to (``slices_needed``); a
    sphere: the slice nearest its centre.  When the core refuses to place it (tie,
    outside the stack) the nearest slice is used for display and the measurement shows
    the reason.
    """
    pos = info.positions_along_normal_mm
    if roi.shape.is_line:
        h = float(np.mean(np.asarray(roi.shape.points_mm, dtype=float) @ info.normal))
        return int(np.argmin(np.abs(pos - h)))
    if roi.shape.is_2d:
        try:
            ks = slices_needed(roi, info)
            if len(ks) == 1:
                return ks[0]
        except RoiPlacementError:
            pass
    if roi.shape.type == "polygon":
        h = float(np.mean(np.asarray(roi.shape.points_mm, dtype=float) @ info.normal))
    else:
        h = float(np.asarray(roi.shape.center_mm, dtype=float) @ info.normal)
    return int(np.argmin(np.abs(pos - h)))


def shape_to_napari(info: SeriesInfo, shape: Shape, k: int) -> tuple[str, np.ndarray]:
    """napari shape type and data-index vertices (n, 3) of a core shape drawn on slice ``k``.

    Circles and spheres become napari ellipses (4 corners of the bounding box), ellipses
    their rotated bounding box, polygons their vertices projected on slice ``k``.
    """
    x_dir, y_dir = _xy(info)
    if shape.type == "line":  # a height: its own points, whatever slice is shown
        return "line", lps_to_line(info, np.asarray(shape.points_mm, dtype=float))
    if shape.type == "polygon":
        return "polygon", lps_to_index(info, np.asarray(shape.points_mm, dtype=float), k)
    c = np.asarray(shape.center_mm, dtype=float)
    if shape.type == "ellipse":
        rx, ry = shape.radii_mm  # type: ignore[misc]
        t = math.radians(shape.angle_deg)
    else:  # circle, sphere
        rx = ry = float(shape.radius_mm)  # type: ignore[arg-type]
        t = 0.0
    a = math.cos(t) * x_dir + math.sin(t) * y_dir
    b = -math.sin(t) * x_dir + math.cos(t) * y_dir
    corners = np.array(
        [c - rx * a - ry * b, c + rx * a - ry * b, c + rx * a + ry * b, c - rx * a + ry * b]
    )
    return "ellipse", lps_to_index(info, corners, k)


def _angle_norm(deg: float) -> float:
    """Angle folded into (-90, 90] degrees (an ellipse axis has no sign)."""
    d = math.fmod(deg, 180.0)
    if d <= -90.0:
        d += 180.0
    elif d > 90.0:
        d -= 180.0
    return 0.0 if abs(d) < 1e-9 else d


def napari_to_shape(
    info: SeriesInfo, shape_type: str, vertices: np.ndarray, *, geometry: str = ""
) -> Shape:
    """Core shape (LPS mm) of a napari shape given as data-index vertices ``(k, r, c)``.

    Parameters
    ----------
    info : SeriesInfo
        The series the shapes layer is drawn on.
    shape_type : str
        napari shape type: ``ellipse``, ``rectangle`` or ``polygon``.
    vertices : numpy.ndarray, shape (n, 3)
    geometry : str
        ``"sphere"`` to turn an ellipse into a sphere (radius = mean semi-axis), else the
        shape is a circle (equal semi-axes within 1 µm), an ellipse, or a polygon.

    Raises
    ------
    ValueError
        For paths, and areas not drawn on one slice.  A ``line`` (two points) becomes a line
        shape (a vertebral height) in LPS mm.
    """
    v = np.asarray(vertices, dtype=float)
    if shape_type == "line":  # a vertebral height, drawn on any view (e.g. sagittal)
        if v.shape[0] != 2:
            raise ValueError("a height line has exactly two points")
        p = line_to_lps(info, v)
        return Shape(type="line", points_mm=tuple(tuple(float(x) for x in q) for q in p))
    if np.ptp(v[:, 0]) > 0.5:
        raise ValueError(
            "the shape is not drawn on one slice of the series; view the series along its "
            "slices (the plugin sets the viewer's axis order when it opens a series)"
        )
    p = vertex_to_lps(info, v)
    if shape_type in ("polygon", "rectangle"):
        return Shape(type="polygon", points_mm=tuple(tuple(float(x) for x in q) for q in p))
    if shape_type != "ellipse":
        raise ValueError(
            f"napari shape type {shape_type!r} is not an area; draw an ellipse, rectangle "
            "or polygon"
        )
    x_dir, y_dir = _xy(info)
    center = p.mean(axis=0)
    e1, e2 = p[1] - p[0], p[3] - p[0]
    u1, v1 = float(e1 @ x_dir), float(e1 @ y_dir)
    u2, v2 = float(e2 @ x_dir), float(e2 @ y_dir)
    # the edge closer to X carries rx (keeps angles small)
    if abs(u1) * math.hypot(u2, v2) >= abs(u2) * math.hypot(u1, v1):
        (ua, va), (ub, vb) = (u1, v1), (u2, v2)
    else:
        (ua, va), (ub, vb) = (u2, v2), (u1, v1)
    rx, ry = 0.5 * math.hypot(ua, va), 0.5 * math.hypot(ub, vb)
    angle = _angle_norm(math.degrees(math.atan2(va, ua)))
    cen = tuple(float(x) for x in center)
    if geometry == "sphere":
        return Shape(type="sphere", center_mm=cen, radius_mm=0.5 * (rx + ry))  # type: ignore[arg-type]
    if abs(rx - ry) <= CIRCLE_TOL_MM:
        return Shape(type="circle", center_mm=cen, radius_mm=0.5 * (rx + ry))  # type: ignore[arg-type]
    return Shape(
        type="ellipse",
        center_mm=cen,  # type: ignore[arg-type]
        radii_mm=(rx, ry),
        angle_deg=angle,
        has_angle=angle != 0.0,
    )
