"""Reading aids of the viewer (no Qt): HU under the cursor, windows, orientation, slice text.

napari's world axes are LPS ``(z, y, x)`` in mm (see :mod:`hu_roi_napari._geometry`), so
the patient direction of each screen edge follows from the displayed world axes and the
camera's 2D orientation alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hu_roi.series import SeriesInfo

from ._geometry import layer_transform, vertex_to_lps

__all__ = [
    "WINDOW_PRESETS",
    "VIEWS",
    "window_text",
    "window_limits",
    "orientation_letters",
    "voxel_at",
    "cursor_text",
    "slice_text",
    "hu_text",
]

#: Window presets: name -> (width, level) in HU.  Bone is the plugin's default window
#: (contrast limits -200..1200 HU); soft tissue and lung are the usual CT presets.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "bone": (1400.0, 500.0),
    "soft tissue": (400.0, 40.0),
    "lung": (1500.0, -600.0),
}

#: Views: name -> (world axes displayed (vertical, horizontal), camera 2D orientation).
#: World axes are LPS (0 = z, 1 = y, 2 = x).  Sagittal and coronal put superior up.
VIEWS: dict[str, tuple[tuple[int, int], tuple[str, str]]] = {
    "axial": ((1, 2), ("down", "right")),
    "sagittal": ((0, 1), ("up", "right")),
    "coronal": ((0, 2), ("up", "right")),
}

#: Patient direction of each world axis (minus end, plus end): LPS z, y, x.
_AXIS_LETTERS = (("I", "S"), ("A", "P"), ("R", "L"))
_AXIS_NAMES = ("z", "y", "x")


def window_limits(width: float, level: float) -> tuple[float, float]:
    """napari contrast limits (HU) of a window ``width``/``level``."""
    return (level - width / 2.0, level + width / 2.0)


def window_text(contrast_limits: Sequence[float]) -> str:
    """``"W 1400 / L 500"`` of napari contrast limits (HU), the preset's name when one."""
    lo, hi = float(contrast_limits[0]), float(contrast_limits[1])
    w, lv = hi - lo, (hi + lo) / 2.0
    name = next(
        (n for n, (pw, pl) in WINDOW_PRESETS.items() if abs(pw - w) < 0.5 and abs(pl - lv) < 0.5),
        "",
    )
    return f"W {w:.0f} / L {lv:.0f}" + (f" ({name})" if name else "")


def orientation_letters(
    displayed: Sequence[int], orientation2d: Sequence[str] = ("down", "right")
) -> dict[str, str]:
    """Patient direction at each canvas edge: ``{"top", "bottom", "left", "right"}``.

    Parameters
    ----------
    displayed : sequence of 2 int
        World axes napari displays (vertical, horizontal); world axes are LPS z, y, x.
    orientation2d : (str, str)
        napari camera 2D orientation: vertical ``"down"``/``"up"`` (the direction the
        vertical axis grows on screen), horizontal ``"right"``/``"left"``.
    """
    v, h = (int(a) for a in displayed[-2:])
    vm, vp = _AXIS_LETTERS[v]
    hm, hp = _AXIS_LETTERS[h]
    down = str(orientation2d[0]) == "down"
    right = str(orientation2d[1]) == "right"
    return {
        "top": vm if down else vp,
        "bottom": vp if down else vm,
        "left": hm if right else hp,
        "right": hp if right else hm,
    }


def voxel_at(info: SeriesInfo, layer: Any, world: Sequence[float]) -> tuple[int, int, int] | None:
    """Series voxel ``(k, r, c)`` under a world point (LPS z, y, x mm), None outside.

    Voxel centres are at integer data indices (napari's pixel convention), so the voxel
    is the rounded data index.
    """
    data = np.asarray(layer.world_to_data(np.asarray(world, dtype=float)), dtype=float)
    krc = layer_transform(info).from_layer(data[-3:])[0]
    if not np.all(np.isfinite(krc)):
        return None
    k, r, c = (int(math.floor(x + 0.5)) for x in krc)
    if not (0 <= k < info.n_slices and 0 <= r < info.rows and 0 <= c < info.columns):
        return None
    return k, r, c


def hu_text(value: float) -> str:
    """HU as the reader reads it: integers without decimals, others with one."""
    if not math.isfinite(value):
        return "unreadable"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def cursor_text(info: SeriesInfo, voxel: tuple[int, int, int] | None, hu: float | None) -> str:
    """Status text of the voxel under the cursor: HU, its centre in LPS mm, its index.

    The position is the centre of the voxel whose HU is shown (``IPP_k + c·ΔC·X +
    r·ΔR·Y``, docs/roi_format.md), so value and position always belong together.
    """
    if voxel is None:
        return "outside the image"
    k, r, c = voxel
    p = vertex_to_lps(info, np.array([[k, r, c]], dtype=float))[0]
    val = "–" if hu is None else hu_text(float(hu))
    return (
        f"{val} HU   LPS x {p[0]:.1f}  y {p[1]:.1f}  z {p[2]:.1f} mm   "
        f"slice {k + 1}/{info.n_slices} row {r} col {c}"
    )


def slice_text(info: SeriesInfo, world_point: Sequence[float], displayed: Sequence[int]) -> str:
    """Slice index and position (mm) of the plane shown, e.g. ``slice 3/6  z 105.0 mm``.

    The position is the world (LPS) coordinate of the plane along the axis not displayed.
    In the series' own view it is the slice's ImagePositionPatient along that axis; the
    slice index is given only then (a reformat plane is no slice of the series).
    """
    hidden = [a for a in range(3) if a not in tuple(displayed)[-2:]]
    if len(hidden) != 1:
        return ""
    ax = hidden[0]
    name = _AXIS_NAMES[ax]
    n = np.asarray(info.normal, dtype=float)
    own = int(np.argmax(np.abs(n[::-1])))  # world axis (z, y, x) of the slice normal
    if own == ax:
        pos = np.array([s.position_lps_mm for s in info.slices], dtype=float)[:, 2 - ax]
        k = int(np.argmin(np.abs(pos - float(world_point[ax]))))
        return f"slice {k + 1}/{info.n_slices}  {name} {pos[k]:.1f} mm"
    view = "sagittal" if ax == 2 else ("coronal" if ax == 1 else "axial")
    return f"{view}  {name} {float(world_point[ax]):.1f} mm"
