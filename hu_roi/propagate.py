"""``hu-roi propagate``: baseline ROIs proposed on a follow-up series by rigid registration.

For each baseline series the ROIs were drawn on, the follow-up series is registered to it
(:func:`hu_roi.io.registration.register_rigid`: rigid Euler3D, Mattes mutual information,
three resolution levels, restricted to the box around that series' ROIs plus
``--margin``), each ROI's shape is mapped into the follow-up (:func:`map_shape`), and the
result is written as a new ROI set whose ROIs carry ``"proposed": true``, the new
timepoint and series, a fresh ``roi_id`` (``PATIENT-TIMEPOINT-LEVEL``, or ``-KIND`` for
non-target ROIs) and a ``registration`` object.  The user-facing description is
docs/propagation.md.  :func:`propose` does the work and returns the ROIs (used by the
command and by the viewer's *Propose from baseline*).

Nothing is written (exit 2, one line) when the series do not overlap, or when the
registration is poor: the normalised cross-correlation of the baseline and the registered
follow-up in a cube around an ROI is below ``--min-ncc``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hu_roi.clibase import CliError, add_common_options, plural
from hu_roi.errors import HuRoiError

if TYPE_CHECKING:
    from hu_roi.roi import Roi, Shape
    from hu_roi.series import SeriesInfo
    from hu_roi.volume import Volume

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MARGIN_MM",
    "DEFAULT_MIN_NCC",
    "NCC_HALF_MM",
    "MIN_OVERLAP",
    "PropagationError",
    "map_shape",
    "propose",
    "add_propagate_parser",
    "run_propagate",
]

#: Margin (mm) around the ROIs of one baseline series that drives the registration.
DEFAULT_MARGIN_MM = 40.0
#: Least normalised cross-correlation (Pearson r of HU) between the baseline and the
#: registered follow-up in the cube around each ROI; below it the registration is refused.
#: Correct registrations of the test phantoms reach 0.9-0.97, one vertebra off 0.55-0.65.
DEFAULT_MIN_NCC = 0.8
#: Half the edge (mm) of the cube around each ROI centre where the NCC is measured.
NCC_HALF_MM = 20.0
#: Least fraction of the registration region (and of each ROI cube) that must lie inside
#: the follow-up image.
MIN_OVERLAP = 0.5
#: Extra margin (mm) of the follow-up crop: how far the follow-up may be displaced.
SEARCH_MM = 25.0


class PropagationError(HuRoiError, ValueError):
    """The ROIs cannot be proposed on the follow-up (the message says why)."""


class _Transform(Protocol):
    @property
    def matrix(self) -> np.ndarray: ...

    def apply(self, points_lps_mm: np.ndarray) -> np.ndarray: ...


# --------------------------------------------------------------------------------------
def _snap(points: np.ndarray, follow: Volume) -> tuple[np.ndarray, float]:
    """Move points along the follow-up's slice normal onto the slice plane nearest to their
    mean; returns the moved points and the signed shift (mm)."""
    n = follow.normal
    pos = follow.slice_positions_mm
    s = float(np.mean(points @ n))
    k = int(np.argmin(np.abs(pos - s)))
    return points + (pos[k] - points @ n)[..., None] * n, float(pos[k] - s)


def map_shape(
    shape: Shape, transform: _Transform, base: Volume, follow: Volume
) -> tuple[dict[str, Any], dict[str, float]]:
    """The JSON object of ``shape`` mapped from the baseline into the follow-up.

    Centres and points are mapped by ``transform`` (baseline LPS mm → follow-up LPS mm).
    Radii are kept (a rigid transform keeps lengths).  An ellipse's rx axis direction is
    rotated and its ``angle_deg`` re-measured from the follow-up's X towards its Y.  A 2D
    shape (circle, ellipse, polygon) is moved along the follow-up's slice normal onto the
    nearest follow-up slice plane (a polygon: every vertex onto the plane of the slice
    nearest to its mean), so that it lies on exactly one slice.

    Returns
    -------
    (shape_dict, notes)
        ``notes``: ``snapped_mm`` (shift along the normal), ``plane_tilt_deg`` (angle
        between the mapped baseline slice plane and the follow-up slice plane).
    """
    d = shape.to_dict()
    notes: dict[str, float] = {}
    r = transform.matrix
    tilt = float(
        np.degrees(np.arccos(np.clip(abs(float((r @ base.normal) @ follow.normal)), 0, 1)))
    )
    notes["plane_tilt_deg"] = round(tilt, 3)
    if shape.center_mm is not None:
        c = transform.apply(np.asarray(shape.center_mm, dtype=float))
        if shape.is_2d:
            c, shift = _snap(c[None, :], follow)
            c = c[0]
            notes["snapped_mm"] = round(shift, 4)
        d["center_mm"] = [float(v) for v in c]
    if shape.points_mm is not None:
        p = transform.apply(np.asarray(shape.points_mm, dtype=float))
        if shape.is_2d:
            p, shift = _snap(p, follow)
            notes["snapped_mm"] = round(shift, 4)
        d["points_mm"] = [[float(v) for v in q] for q in p]
    if shape.type == "ellipse":
        a = math.radians(shape.angle_deg)
        u = r @ (math.cos(a) * base.row_dir + math.sin(a) * base.col_dir)
        ang = math.degrees(math.atan2(float(u @ follow.col_dir), float(u @ follow.row_dir)))
        d["angle_deg"] = round(ang, 4)
    return d, notes


def _inside_image(p: np.ndarray, vol: Volume) -> bool:
    """The point lies within the follow-up image (half a voxel of slack)."""
    rel = p - vol.slice_origins_lps_mm[0]
    col = float(rel @ vol.row_dir) / vol.pixel_spacing_mm[1]
    row = float(rel @ vol.col_dir) / vol.pixel_spacing_mm[0]
    pos = vol.slice_positions_mm
    s = float(p @ vol.normal)
    n, rows, cols = vol.shape
    return (
        -0.5 <= col <= cols - 0.5
        and -0.5 <= row <= rows - 0.5
        and pos.min() - 1e-6 <= s <= pos.max() + 1e-6
    )


def _roi_points(roi: Roi) -> np.ndarray:
    """Points that bound the ROI (centre ± radius, polygon vertices), LPS mm."""
    s = roi.shape
    pts: list[np.ndarray] = []
    if s.center_mm is not None:
        c = np.asarray(s.center_mm, dtype=float)
        rad = max([s.radius_mm or 0.0, *(s.radii_mm or ())])
        pts += [c - rad, c + rad]
    if s.points_mm is not None:
        pts += [np.asarray(q, dtype=float) for q in s.points_mm]
    return np.array(pts)


def _roi_centre(roi: Roi) -> np.ndarray:
    s = roi.shape
    if s.center_mm is not None:
        return np.asarray(s.center_mm, dtype=float)
    return np.asarray(s.points_mm, dtype=float).mean(axis=0)


def _find_series(series: Sequence[SeriesInfo], key: str, dicom: Path) -> SeriesInfo:
    from hu_roi.util import show

    hits = [s for s in series if key in (s.series_key, s.series_instance_uid)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise PropagationError(
            f"no series {show(key)} in {dicom} (see `hu-roi index {dicom}` for the series_key "
            "and SeriesInstanceUID of each series)"
        )
    raise PropagationError(
        f"{len(hits)} series match {show(key)} in {dicom}; give the series_key of one of them"
    )


# --------------------------------------------------------------------------------------
def add_propagate_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hu-roi propagate`` (``set_defaults(func=run_propagate)``)."""
    from hu_roi.roi import TIMEPOINTS

    p = subparsers.add_parser(
        "propagate",
        help="propose baseline ROIs on a follow-up series (rigid registration)",
        description="Register the follow-up series to the baseline series of the ROIs "
        "(rigid, Mattes mutual information, restricted to the ROIs plus a margin), map each "
        'ROI into the follow-up and write them as proposed ROIs ("proposed": true, new '
        "timepoint, series and roi_id, a registration record). Refuses (exit 2, nothing "
        "written) when the series do not overlap or the registration is poor. See "
        "docs/propagation.md.",
    )
    p.add_argument("--dicom", required=True, metavar="DIR", help="DICOM folder holding both series")
    p.add_argument("--rois", required=True, metavar="BASELINE.rois.json", help="baseline ROI set")
    p.add_argument(
        "--to-series",
        required=True,
        metavar="UID_OR_KEY",
        help="SeriesInstanceUID or series_key of the follow-up series (see `hu-roi index`)",
    )
    p.add_argument(
        "--timepoint", required=True, choices=TIMEPOINTS, help="timepoint of the follow-up"
    )
    p.add_argument(
        "--from-timepoint",
        default="T0",
        choices=TIMEPOINTS,
        help="propagate the ROIs of this timepoint (default T0)",
    )
    p.add_argument("--out", required=True, metavar="PROPOSED.rois.json", help="new ROI set")
    p.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN_MM,
        metavar="MM",
        help=f"margin around the ROIs that drives the registration (default {DEFAULT_MARGIN_MM:g})",
    )
    p.add_argument(
        "--min-ncc",
        type=float,
        default=DEFAULT_MIN_NCC,
        metavar="R",
        help="least correlation of baseline and registered follow-up around each ROI "
        f"(default {DEFAULT_MIN_NCC:g})",
    )
    p.add_argument("--no-cache", action="store_true", help="do not use the header cache")
    add_common_options(p, quiet_help="no summary line")
    p.set_defaults(func=run_propagate)


def propose(
    baseline: Sequence[Roi],
    series: Sequence[SeriesInfo],
    target: SeriesInfo,
    *,
    timepoint: str,
    margin_mm: float = DEFAULT_MARGIN_MM,
    min_ncc: float | None = None,
) -> list[Roi]:
    """Baseline ROIs proposed on a follow-up series (the work of ``hu-roi propagate``).

    For each baseline series the ROIs lie on, ``target`` is registered to it (rigid, in
    the box around that series' ROIs plus ``margin_mm``), each ROI is mapped
    (:func:`map_shape`) and returned with ``proposed=True``, ``timepoint``, the target's
    series, a fresh ``roi_id`` and a ``registration`` record.  Touches no file but the
    two series' DICOM files (safe in a worker thread).

    Parameters
    ----------
    baseline : sequence of Roi
        ROIs of one timepoint (not ``timepoint``) on series of ``series``.
    series : sequence of SeriesInfo
        Indexed series holding the baseline series and ``target``.
    target : SeriesInfo
        The follow-up series.
    timepoint : str
        Timepoint of the follow-up (``T0`` … ``T3``).
    margin_mm : float
        Margin (mm) around the ROIs of one baseline series that drives the registration.
    min_ncc : float, optional
        Least correlation of baseline and registered follow-up around each ROI;
        :data:`DEFAULT_MIN_NCC` (read at call time) when None.

    Returns
    -------
    list of Roi
        In the order of ``baseline`` grouped by baseline series.

    Raises
    ------
    PropagationError
        Why nothing can be proposed: a bad argument, an ROI without its baseline series
        or outside it, another patient, series that do not overlap, a poor registration,
        an ROI mapped outside the follow-up.
    """
    from hu_roi.io import load_series
    from hu_roi.io.registration import neighbourhood_ncc, overlap_fraction, register_rigid
    from hu_roi.roi import Roi
    from hu_roi.series_lookup import SeriesResolver
    from hu_roi.util import show

    if min_ncc is None:
        min_ncc = DEFAULT_MIN_NCC
    if not (math.isfinite(margin_mm) and margin_mm >= 0):
        raise PropagationError(f"the margin must be a number of mm >= 0; got {margin_mm}")
    if not (math.isfinite(min_ncc) and -1 <= min_ncc <= 1):
        raise PropagationError(f"the least correlation must lie in [-1, 1]; got {min_ncc}")
    if not baseline:
        raise PropagationError("no baseline ROI to propagate")
    same = [r for r in baseline if r.timepoint == timepoint]
    if same:
        raise PropagationError(
            f"ROI {show(same[0].roi_id)} is of timepoint {timepoint} already; nothing to propagate"
        )
    resolver = SeriesResolver(series)
    groups: dict[str, tuple[SeriesInfo, list[Roi]]] = {}
    for roi in baseline:
        m = resolver.resolve(roi)
        if m.info is None:
            raise PropagationError(f"ROI {show(roi.roi_id)}: no baseline series ({m.detail})")
        if m.info.series_key == target.series_key:
            raise PropagationError(
                f"ROI {show(roi.roi_id)} already lies on the follow-up series {target.series_key}"
            )
        if m.info.patient_id and target.patient_id and m.info.patient_id != target.patient_id:
            raise PropagationError(
                f"ROI {show(roi.roi_id)}: the baseline series is of patient "
                f"{show(m.info.patient_id)}, the follow-up of {show(target.patient_id)}"
            )
        groups.setdefault(m.info.series_key, (m.info, []))[1].append(roi)

    follow = load_series(target)
    new: list[Roi] = []
    used: set[str] = set()
    for base_info, group in groups.values():
        base = load_series(base_info)
        for roi in group:  # before registering: the region must not span a stray ROI
            centre = _roi_centre(roi)
            if not _inside_image(centre, base):
                raise PropagationError(
                    f"ROI {show(roi.roi_id)} lies outside its baseline series "
                    f"{base_info.series_key} (centre LPS "
                    f"{[round(float(v), 1) for v in centre]} mm); fix it before propagating"
                )
        pts = np.vstack([_roi_points(r) for r in group])
        lo, hi = pts.min(axis=0) - margin_mm, pts.max(axis=0) + margin_mm
        frac = overlap_fraction(base, follow, lo, hi)
        if frac < MIN_OVERLAP:
            raise PropagationError(
                f"the series do not overlap: {frac:.0%} of the region around the ROIs of "
                f"baseline series {base_info.series_key} lies inside follow-up series "
                f"{target.series_key} (at least {MIN_OVERLAP:.0%} needed)"
            )
        res = register_rigid(base, follow, region_lo_mm=lo, region_hi_mm=hi, search_mm=SEARCH_MM)
        logger.info(
            "registered %s to %s in %.1f s: MI %.4f, %d iterations, rotation %.2f°, "
            "translation %s mm",
            target.series_key,
            base_info.series_key,
            res.seconds,
            res.metric_value,
            res.iterations,
            res.rotation_deg,
            [round(v, 2) for v in res.translation_mm],
        )
        for roi in group:
            centre = _roi_centre(roi)
            ncc, inside = neighbourhood_ncc(base, follow, res, centre, NCC_HALF_MM)
            if inside < MIN_OVERLAP:
                raise PropagationError(
                    f"the series do not overlap at ROI {show(roi.roi_id)}: {inside:.0%} of "
                    "its neighbourhood maps into the follow-up image"
                )
            if not (ncc >= min_ncc):  # NaN included
                raise PropagationError(
                    f"poor registration at ROI {show(roi.roi_id)}: correlation of baseline "
                    f"and registered follow-up {ncc:.3f} < {min_ncc:g} (--min-ncc); "
                    "place this ROI by hand"
                )
            shape_d, notes = map_shape(roi.shape, res, base, follow)
            mapped = np.asarray(shape_d.get("center_mm") or np.mean(shape_d["points_mm"], axis=0))
            if not _inside_image(mapped, follow):
                raise PropagationError(
                    f"ROI {show(roi.roi_id)} maps outside the follow-up image (LPS "
                    f"{[round(float(v), 1) for v in mapped]} mm)"
                )
            label = roi.level if roi.kind == "target" and roi.level else roi.kind
            rid = f"{roi.patient_id}-{timepoint}-{label}"
            k = 2
            while rid in used:
                rid = f"{roi.patient_id}-{timepoint}-{label}-{k}"
                k += 1
            used.add(rid)
            reg = {
                "method": "rigid Euler3D; Mattes mutual information; 3 levels",
                "metric": "mattes-mutual-information",
                "metric_value": round(res.metric_value, 6),
                "ncc": round(ncc, 4),
                "iterations": res.iterations,
                "rotation_rad": [round(v, 8) for v in res.rotation_rad],
                "translation_mm": [round(v, 4) for v in res.translation_mm],
                "center_mm": [round(v, 4) for v in res.center_mm],
                "rotation_deg": round(res.rotation_deg, 3),
                **notes,
                "baseline_roi_id": roi.roi_id,
                "baseline_series": base_info.series_instance_uid or base_info.series_key,
            }
            d = roi.to_dict()
            d.update(
                roi_id=rid,
                timepoint=timepoint,
                series_instance_uid=target.series_instance_uid,
                proposed=True,
                registration=reg,
                shape=shape_d,
            )
            d.pop("series_key", None)
            d.pop("study_date", None)
            if not target.series_instance_uid:
                d["series_key"] = target.series_key
            if target.study_date:
                d["study_date"] = target.study_date
            new.append(Roi.from_dict(d))
    return new


def run_propagate(args: argparse.Namespace) -> int:
    """Run ``hu-roi propagate`` (see the module docstring; the work is :func:`propose`)."""
    from hu_roi.io import index_folder
    from hu_roi.roi import RoiSet, load_roiset, save_roiset
    from hu_roi.util import OutputSet, printable

    dicom = Path(args.dicom)
    out = Path(args.out)
    if not dicom.is_dir():
        raise CliError(f"no such DICOM folder: {dicom}")
    if not (math.isfinite(args.margin) and args.margin >= 0):
        raise CliError(f"--margin must be a number of mm >= 0; got {args.margin}")
    if not (math.isfinite(args.min_ncc) and -1 <= args.min_ncc <= 1):
        raise CliError(f"--min-ncc must lie in [-1, 1]; got {args.min_ncc}")
    if args.timepoint == args.from_timepoint:
        raise CliError(
            f"--timepoint {args.timepoint} equals --from-timepoint; nothing to propagate"
        )
    OutputSet([("the ROI file", args.rois), ("the DICOM folder", dicom)]).check(out)
    if out.exists():
        raise CliError(f"{printable(out)} exists; choose another --out (nothing written)")
    rs = load_roiset(args.rois)
    rois = [r for r in rs.rois if r.timepoint == args.from_timepoint]
    if not rois:
        raise CliError(f"{args.rois} holds no ROI of timepoint {args.from_timepoint}")
    skipped = len(rs.rois) - len(rois)
    cache = None
    if not args.no_cache:
        from hu_roi.io.cache import HeaderCache

        cache = HeaderCache.default()
    index = index_folder(dicom, cache=cache)
    target = _find_series(index.series, args.to_series, dicom)
    new = propose(
        rois,
        index.series,
        target,
        timepoint=args.timepoint,
        margin_mm=args.margin,
        min_ncc=args.min_ncc,
    )
    saved = save_roiset(
        replace(RoiSet(reader=rs.reader), rois=tuple(new)), out, expected_stamp=None
    )
    if not getattr(args, "quiet", False):
        print(
            f"hu-roi propagate: {plural(len(saved.rois), 'ROI')} proposed on series "
            f"{target.series_key} ({args.timepoint}); wrote {printable(out)}"
            + (
                f"; {plural(skipped, 'ROI')} of other timepoints left out (--from-timepoint)"
                if skipped
                else ""
            ),
            file=sys.stderr,
        )
    return 0
