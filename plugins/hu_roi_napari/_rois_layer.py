"""ROIs ↔ a napari Shapes layer (no Qt).

A plugin Shapes layer shares its image's transform, so vertices are data indices
``(k, r, c)``.  Its ``features`` hold, per shape, an opaque ``key`` (never the ROI id,
which contains the patient id) plus the ROI attributes a reader edits (level,
irradiated, lesion type, kind) and the ``geometry`` (``sphere`` for spheres, else empty).
The key maps, in a process-wide registry, to the ROI id, the stored :class:`Roi` and the
vertices it was drawn with, so an ROI whose shape was not touched is written back
unchanged (no rounding drift).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from hu_roi.roi import HEIGHT_KINDS, LEVELS, Roi

from ._geometry import display_slice, napari_to_shape, shape_to_napari
from ._series import SeriesHandle

__all__ = [
    "FEATURE_COLUMNS",
    "PROPOSED_COLOR",
    "PROPOSED_EDGE_WIDTH",
    "RoiEntry",
    "ROI_KEYS",
    "new_key",
    "rois_layer_data",
    "rois_from_layer",
    "irradiated_text",
    "irradiated_value",
    "id_for_level",
]

FEATURE_COLUMNS = ("key", "level", "irradiated", "lesion_type", "kind", "geometry")
#: Line colour per kind (targets yellow, references cyan, phantoms magenta, heights lime).
KIND_COLORS = {"target": "yellow", "reference": "cyan", "phantom": "magenta", "height": "lime"}
#: Proposed ROIs (``hu-roi propagate``, not confirmed yet): napari's Shapes layer has no
#: dashed line, so a proposal is drawn in this colour, with a thinner edge
#: (:data:`PROPOSED_EDGE_WIDTH`) and ``proposed`` in its canvas label (docs/napari.md).
PROPOSED_COLOR = "orange"
PROPOSED_EDGE_WIDTH = 0.5


@dataclass(frozen=True)
class RoiEntry:
    """What the plugin remembers about one drawn ROI."""

    roi_id: str
    roi: Roi | None
    vertices: np.ndarray | None
    shape_type: str = ""


ROI_KEYS: dict[str, RoiEntry] = {}
_counter = itertools.count(1)


def new_key() -> str:
    """A fresh opaque key for a shape (``k1``, ``k2``, …)."""
    return f"k{next(_counter)}"


def irradiated_text(v: bool | None) -> str:
    """``yes``/``no``/``""`` for True/False/None."""
    return "" if v is None else ("yes" if v else "no")


def irradiated_value(s: Any) -> bool | None:
    """Inverse of :func:`irradiated_text` (tolerates booleans and NaN)."""
    if isinstance(s, bool):
        return s
    s = "" if s is None or (isinstance(s, float) and np.isnan(s)) else str(s).strip().lower()
    return {"yes": True, "true": True, "no": False, "false": False}.get(s)


def id_for_level(roi_id: str, timepoint: str | None, level: str | None, kind: str) -> str | None:
    """An ROI id that no longer names a level the ROI does not have, or None when none does.

    Ids are ``<patient>-<timepoint>-<level or kind>`` with an optional ``-<n>`` that makes
    them unique (``P01-T0-L3``, ``P-TX-T12-2``; ``_`` separates as well).  The id names a
    level when its last part (before ``-<n>``) is one of C1…S5 and is not the ROI's
    timepoint (``T1``…``T3`` are thoracic levels too: ``P01-T2`` names timepoint T2).
    When that level differs from ``level`` (or the ROI has none), the part becomes the
    new level for a target, else the kind, and ``-<n>`` is dropped (the caller makes
    the id unique again).  Ids naming no level (``vertebra-A``) are never changed.

    Parameters
    ----------
    roi_id : str
        The ROI's current id.
    timepoint : str or None
        The ROI's timepoint (``T0``…``T3``).
    level, kind : str
        The ROI's new level (None for none) and kind.

    Returns
    -------
    str or None
        The id with its level part replaced, or None when the id does not contradict
        ``level``.
    """
    parts = re.split(r"([-_])", roi_id)  # tokens at even positions, separators between
    toks = parts[::2]
    i = len(toks) - 1
    if i > 0 and toks[i].isdigit():
        i -= 1
    named = toks[i]
    if named not in LEVELS or named == level:
        return None
    if named == timepoint and toks.index(named) == i:
        return None  # the timepoint's own part, not a level
    toks[i] = level if (kind == "target" or kind in HEIGHT_KINDS) and level else kind
    parts[::2] = toks
    return "".join(parts[: 2 * i + 1])


def _none_if_empty(s: Any) -> str | None:
    if s is None or (isinstance(s, float) and np.isnan(s)):
        return None
    s = str(s)
    return s or None


def edge_color(kind: str) -> str:
    """Display colour of an ROI kind."""
    return KIND_COLORS.get(kind.split("-")[0], "yellow")


def canvas_label(level: str | None, kind: str, m: Any, *, proposed: bool = False) -> str:
    """Text drawn next to an ROI: its level (or kind) and mean HU, e.g. ``L1 152 HU``.

    ``m`` is the ROI's :class:`~hu_roi.measure.Measurement` (None while not measured);
    a failed measurement shows its QC code instead of a number.  An unconfirmed proposal
    gets `` (proposed)`` after it.
    """
    if proposed:
        return canvas_label(level, kind, m) + " (proposed)"
    if kind in HEIGHT_KINDS:  # "L1 ant 25.3 mm" (short: three lines stand side by side)
        part = {"anterior": "ant", "middle": "mid", "posterior": "post"}
        name = f"{level or ''} {part[kind.removeprefix('height-')]}".strip()
        length = getattr(m, "length_mm", None)
        if m is not None and getattr(m, "qc_status", "") == "fail":
            flags = list(getattr(m, "qc_flags", ()) or ())
            return f"{name} {flags[0] if flags else 'fail'}"
        return name if length is None else f"{name} {length:.1f} mm"
    name = level if kind == "target" and level else kind
    if m is None:
        return name
    mean = getattr(m, "mean_hu", None)
    if getattr(m, "qc_status", "") == "fail" or mean is None or not np.isfinite(mean):
        flags = list(getattr(m, "qc_flags", ()) or ())
        return f"{name} {flags[0] if flags else 'fail'}"
    flags = tuple(getattr(m, "qc_flags", ()) or ())
    # the cortex guard, live while the shape is drawn or dragged
    warn = " ⚠ heterogeneous" if "roi-heterogeneous" in flags else ""
    return f"{name} {mean:.0f} HU{warn}"


def sphere_extent(info: Any, roi: Roi) -> list[tuple[int, np.ndarray]]:
    """Cross-sections of a sphere ROI with the series' slices, as napari ellipses.

    Returns ``(k, corners)`` for every slice ``k`` whose plane the sphere cuts (plane
    distance from the centre below the radius), ``corners`` the 4 data-index corners
    ``(k, r, c)`` of the circle of radius ``sqrt(R² − d²)`` around the centre's
    projection.  Slices farther than the radius get none.
    """
    from hu_roi.roi import Shape

    sh = roi.shape
    if sh.type != "sphere" or sh.center_mm is None or sh.radius_mm is None:
        return []
    c = np.asarray(sh.center_mm, dtype=float)
    pos = np.array([s.position_lps_mm for s in info.slices], dtype=float)
    d = np.abs((pos - c) @ np.asarray(info.normal, dtype=float))
    out = []
    for k in np.flatnonzero(d < float(sh.radius_mm)):
        rho = float(np.sqrt(float(sh.radius_mm) ** 2 - d[k] ** 2))
        _, verts = shape_to_napari(
            info, Shape(type="circle", center_mm=tuple(c), radius_mm=rho), int(k)
        )  # type: ignore[arg-type]
        out.append((int(k), verts))
    return out


def rois_layer_data(
    handle: SeriesHandle,
    rois: Iterable[Roi],
    *,
    name: str = "ROIs",
    metadata: Mapping[str, Any] | None = None,
    blinded: bool = False,
) -> tuple:
    """napari LayerData ``(data, kwargs, "shapes")`` drawing ``rois`` on ``handle``'s grid.

    ``blinded=True`` leaves the ``irradiated`` column out of the features (clinical
    information); the stored value is kept when the ROI is written back.
    """
    from ._geometry import layer_transform

    tr = layer_transform(handle.info)
    data, types, feats = [], [], {c: [] for c in FEATURE_COLUMNS}
    colors = []
    for roi in rois:
        k = display_slice(handle.info, roi)
        st, verts_krc = shape_to_napari(handle.info, roi.shape, k)
        verts = tr.to_layer(verts_krc)
        key = new_key()
        ROI_KEYS[key] = RoiEntry(roi.roi_id, roi, verts.copy(), st)
        data.append(verts)
        types.append(st)
        feats["key"].append(key)
        feats["level"].append(roi.level or "")
        feats["irradiated"].append(irradiated_text(roi.irradiated))
        feats["lesion_type"].append(roi.lesion_type or "")
        feats["kind"].append(roi.kind)
        feats["geometry"].append("sphere" if roi.shape.type == "sphere" else "")
        colors.append(edge_color(roi.kind))
    kwargs: dict[str, Any] = {
        "name": name,
        "ndim": 3,
        "shape_type": types or "ellipse",
        "features": pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in feats.items()}),
        "feature_defaults": {
            "key": "",
            "level": "L1",
            "irradiated": "",
            "lesion_type": "",
            "kind": "target",
            "geometry": "",
        },
        "edge_color": colors or "yellow",
        "edge_width": 1,
        "face_color": "transparent",
        "text": {"string": "{level}", "color": "yellow", "size": 10, "anchor": "upper_left"},
        "metadata": {"hu_roi_rois": {"token": handle.token, **(metadata or {})}},
        **tr.kwargs(),
    }
    if blinded:
        kwargs["features"] = kwargs["features"].drop(columns=["irradiated"])
        kwargs["feature_defaults"].pop("irradiated")
    return (data, kwargs, "shapes")


def rois_from_layer(
    handle: SeriesHandle,
    layer: Any,
    *,
    make_id: Callable[[str | None, str], str],
    patient_id: str,
    timepoint: str | None,
    study_date: str = "",
    rename_id: Callable[[Roi, str | None, str], str] | None = None,
) -> tuple[list[Roi], list[str]]:
    """Core ROIs of every area shape of a plugin Shapes layer.

    Parameters
    ----------
    handle : SeriesHandle
        The series the layer is drawn on.
    layer : napari.layers.Shapes
    make_id : callable
        ``make_id(level, kind) -> str``: a new unique ROI id for a shape without one.
    patient_id, timepoint, study_date : str
        Written into new ROIs (existing ROIs keep theirs).
    rename_id : callable, optional
        ``rename_id(roi, level, kind) -> str``: the id of an existing ROI whose level or
        kind was changed in the layer (its old id when that still fits).

    Returns
    -------
    rois : list of Roi
        In shape order.
    problems : list of str
        Shapes that could not be turned into ROIs (lines, paths), one message each.
    """
    from ._geometry import layer_transform

    info = handle.info
    tr = layer_transform(info)
    feats: pd.DataFrame = layer.features
    out: list[Roi] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, (verts, st) in enumerate(zip(layer.data, layer.shape_type, strict=True)):
        row = feats.iloc[i] if i < len(feats) else pd.Series(dtype=object)
        key = str(row.get("key", "") or "")
        if key in seen:
            # napari copies the last row's features into the defaults of the next shape
            # drawn: a key seen already is a new shape, never that ROI (same id: one lost)
            key = ""
        if not key or key not in ROI_KEYS:
            if not key:
                key = new_key()
                feats.loc[feats.index[i], "key"] = key
            ROI_KEYS[key] = RoiEntry("", None, None, "")
        seen.add(key)
        entry = ROI_KEYS[key]
        level = _none_if_empty(row.get("level"))
        kind = _none_if_empty(row.get("kind")) or "target"
        lesion = _none_if_empty(row.get("lesion_type"))
        if "irradiated" in feats.columns:
            irr = irradiated_value(row.get("irradiated"))
        else:  # blinded: the column is hidden, keep what is stored
            irr = entry.roi.irradiated if entry.roi is not None else None
        geometry = _none_if_empty(row.get("geometry")) or ""
        if (st == "line") != (kind in HEIGHT_KINDS):
            problems.append(
                f"shape {i + 1}: "
                + (
                    "a line is a vertebral height: give it the kind "
                    if st == "line"
                    else f"kind {kind} is a height: draw it as a line, or choose a kind other than "
                )
                + ", ".join(HEIGHT_KINDS)
            )
            continue
        v = np.asarray(verts, dtype=float)
        unchanged = (
            entry.roi is not None
            and entry.vertices is not None
            and entry.shape_type == st
            and entry.vertices.shape == v.shape
            and np.allclose(entry.vertices, v, atol=1e-6)
        )
        try:
            shape = (
                entry.roi.shape  # type: ignore[union-attr]
                if unchanged
                else napari_to_shape(info, st, tr.from_layer(v), geometry=geometry)
            )
        except ValueError as exc:
            problems.append(f"shape {i + 1}: {exc}")
            continue
        if entry.roi is not None:
            rid = entry.roi.roi_id
            if rename_id is not None and (level, kind) != (entry.roi.level, entry.roi.kind):
                rid = rename_id(entry.roi, level, kind)
            roi = replace(
                entry.roi,
                roi_id=rid,
                shape=shape,
                # moving or reshaping a proposal confirms it (the field is then left out)
                proposed=entry.roi.proposed if unchanged else None,
                level=level,
                kind=kind,
                lesion_type=lesion,
                irradiated=irr,
            )
        else:
            rid = make_id(level, kind)
            roi = Roi(
                roi_id=rid,
                patient_id=patient_id,
                shape=shape,
                timepoint=timepoint,
                series_instance_uid=info.series_instance_uid,
                series_key="" if info.series_instance_uid else info.series_key,
                study_date=study_date,
                level=level if kind == "target" else level,
                irradiated=irr,
                lesion_type=lesion,
                kind=kind,
            )
        ROI_KEYS[key] = RoiEntry(roi.roi_id, roi, v.copy(), st)
        out.append(roi)
    return out, problems
