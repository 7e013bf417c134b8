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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from hu_roi.roi import Roi

from ._geometry import display_slice, napari_to_shape, shape_to_napari
from ._series import SeriesHandle

__all__ = [
    "FEATURE_COLUMNS",
    "RoiEntry",
    "ROI_KEYS",
    "new_key",
    "rois_layer_data",
    "rois_from_layer",
    "irradiated_text",
    "irradiated_value",
]

FEATURE_COLUMNS = ("key", "level", "irradiated", "lesion_type", "kind", "geometry")
#: Line colour per kind (targets yellow, references cyan, phantoms magenta).
KIND_COLORS = {"target": "yellow", "reference": "cyan", "phantom": "magenta"}


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


def _none_if_empty(s: Any) -> str | None:
    if s is None or (isinstance(s, float) and np.isnan(s)):
        return None
    s = str(s)
    return s or None


def edge_color(kind: str) -> str:
    """Display colour of an ROI kind."""
    return KIND_COLORS.get(kind.split("-")[0], "yellow")


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
    make_id: Any,
    patient_id: str,
    timepoint: str | None,
    study_date: str = "",
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
    for i, (verts, st) in enumerate(zip(layer.data, layer.shape_type, strict=True)):
        row = feats.iloc[i] if i < len(feats) else pd.Series(dtype=object)
        key = str(row.get("key", "") or "")
        if not key or key not in ROI_KEYS:
            if not key:
                key = new_key()
                feats.loc[feats.index[i], "key"] = key
            ROI_KEYS[key] = RoiEntry("", None, None, "")
        entry = ROI_KEYS[key]
        level = _none_if_empty(row.get("level"))
        kind = _none_if_empty(row.get("kind")) or "target"
        lesion = _none_if_empty(row.get("lesion_type"))
        if "irradiated" in feats.columns:
            irr = irradiated_value(row.get("irradiated"))
        else:  # blinded: the column is hidden, keep what is stored
            irr = entry.roi.irradiated if entry.roi is not None else None
        geometry = _none_if_empty(row.get("geometry")) or ""
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
            roi = replace(
                entry.roi, shape=shape, level=level, kind=kind, lesion_type=lesion, irradiated=irr
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
