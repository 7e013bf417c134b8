"""RT dose and vertebra label maps beside the HU: ``hu-roi measure --rtdose/--labels``.

Three steps, each a function here (the user-facing description is docs/dose_and_labels.md):

1. **Binding** (main process, headers only): :func:`bind_doses` gives every RTDOSE to the
   measured series that share its Frame of Reference (and patient); :func:`bind_labels`
   gives every label map to the one measured series on whose grid it lies (NIfTI) or
   that it was made from (DICOM SEG).  A dose or label map that fits no measured series
   is an input error before anything is measured.
2. **Per ROI** (in the per-series task, on the slices read for the HU):
   :func:`dose_columns` samples the dose at the ROI's voxel centres (trilinear);
   :func:`label_check` compares the ROI's voxels with the label map
   (``level-mismatch``, ``roi-outside-body``).
3. **Irradiated from dose** (main process, all rows): :func:`apply_prescription` marks a
   level irradiated when the ROI's mean dose reaches :data:`IRRADIATED_DOSE_FRACTION` of
   the prescription, fills an empty ``irradiated`` and flags a contradicting reader's
   label (``irradiated-mismatch``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hu_roi.errors import HuRoiError

if TYPE_CHECKING:
    from hu_roi.io.labels import LabelMap
    from hu_roi.io.rtdose import DoseGrid
    from hu_roi.measure import Measurement
    from hu_roi.rasterize import RoiMask
    from hu_roi.roi import Roi
    from hu_roi.series import SeriesInfo
    from hu_roi.volume import Volume

__all__ = [
    "IRRADIATED_DOSE_FRACTION",
    "OUTSIDE_BODY_FRACTION",
    "MISMATCH_FRACTION",
    "DoseLabelError",
    "LabelSource",
    "SeriesAddons",
    "parse_label_spec",
    "bind_doses",
    "bind_labels",
    "annotate",
    "dose_columns",
    "dose_stats",
    "values_under",
    "label_check",
    "apply_prescription",
]

#: A level is irradiated by dose when its ROI's mean dose is at least this fraction of the
#: prescription: the 50 % isodose is by definition the edge of a radiation field (the
#: geometric field edge, ICRU Report 50), so a vertebral body whose mean dose reaches it
#: lies mostly inside the field; a neighbouring level in the penumbra gets less.
IRRADIATED_DOSE_FRACTION = 0.5
#: ``roi-outside-body``: more than this fraction of a target ROI's voxels lie off its
#: level's label.  5 % allows for the label's own boundary (a segmentation is uncertain
#: by about a voxel at the cortex) while an ROI reaching into the disc, the canal or soft
#: tissue by a few millimetres exceeds it.
OUTSIDE_BODY_FRACTION = 0.05
#: ``level-mismatch``: more than this fraction of the ROI's voxels lie on one other
#: labelled level.
MISMATCH_FRACTION = 0.5


class DoseLabelError(HuRoiError, ValueError):
    """An RTDOSE or label map that cannot be used with the measured series (one line)."""


@dataclass(frozen=True, eq=False)
class LabelSource:
    """A label map bound to one series.

    Attributes
    ----------
    path : Path
    label_map : LabelMap or None
        The NIfTI's labels (None for a DICOM SEG, read per series task on its slices).
    """

    path: Path
    label_map: LabelMap | None = None


@dataclass(frozen=True, eq=False)
class SeriesAddons:
    """What a series task samples beside the HU (picklable)."""

    doses: tuple[DoseGrid, ...] = ()
    labels: LabelSource | None = None

    def __bool__(self) -> bool:
        return bool(self.doses) or self.labels is not None


# ------------------------------------------------------------------------------ binding
def parse_label_spec(text: str) -> tuple[str | None, Path]:
    """``--labels [SERIES=]PATH`` -> (series key or UID or None, path).

    A value that names an existing file is a path even if it holds ``=``.
    """
    if Path(text).exists() or "=" not in text:
        return None, Path(text)
    key, _, path = text.partition("=")
    return key.strip() or None, Path(path)


def _measured_names(infos: Mapping[str, SeriesInfo]) -> str:
    keys = sorted(infos)
    return ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def bind_doses(
    paths: Sequence[str | Path], infos: Mapping[str, SeriesInfo]
) -> dict[str, tuple[DoseGrid, ...]]:
    """Read every RTDOSE and give it to the measured series of its Frame of Reference.

    Several doses on one series (a plan and its boost, or one file per beam) are summed
    when the ROI is sampled.

    Parameters
    ----------
    paths : sequence of path
        RTDOSE files (``--rtdose``, repeatable).
    infos : mapping series_key -> SeriesInfo
        The series that have ROIs to measure.

    Returns
    -------
    dict series_key -> tuple of DoseGrid

    Raises
    ------
    DoseLabelError
        Unreadable or relative dose; the same dose given twice; a dose whose Frame of
        Reference (or patient) is that of no measured series.
    """
    from hu_roi.io.rtdose import DoseError, check_dose_for_series, read_rtdose

    out: dict[str, list[DoseGrid]] = defaultdict(list)
    seen: dict[str, Path] = {}
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise DoseLabelError(f"--rtdose: no such file: {p}")
        try:
            grid = read_rtdose(p)
        except DoseError as exc:
            raise DoseLabelError(f"--rtdose: {exc}") from None
        if grid.sop_instance_uid and grid.sop_instance_uid in seen:
            raise DoseLabelError(
                f"--rtdose: {p} is the same RTDOSE as {seen[grid.sop_instance_uid]} "
                "(SOPInstanceUID); give each dose once"
            )
        seen[grid.sop_instance_uid] = p
        reasons = []
        for key, info in infos.items():
            try:
                check_dose_for_series(grid, info)
            except DoseError as exc:
                reasons.append(str(exc))
                continue
            out[key].append(grid)
        if not any(grid in v for v in out.values()):
            if not reasons:
                why = "no series is measured"
            elif len(reasons) == 1:
                why = reasons[0]
            else:
                why = f"none of {_measured_names(infos)} shares it; first: {reasons[0]}"
            raise DoseLabelError(f"--rtdose: {p} fits no measured series: {why}")
    for key, grids in out.items():
        # a plan's dose is the sum of its beams' (or fractions'): both together count twice
        parts = {g.summation_type for g in grids} - {"PLAN", ""}
        if any(g.summation_type == "PLAN" for g in grids) and parts:
            raise DoseLabelError(
                f"--rtdose: series {key} has a PLAN dose and {'/'.join(sorted(parts))} "
                "doses; their sum would count the plan twice; give either the plan or its parts"
            )
    return {k: tuple(v) for k, v in out.items()}


def bind_labels(specs: Sequence[str], infos: Mapping[str, SeriesInfo]) -> dict[str, LabelSource]:
    """Give every label map to the one measured series it belongs to.

    A NIfTI belongs to the series on whose voxel grid it lies
    (:func:`hu_roi.io.labels.check_labels_fit`); when it lies on the grid of several
    measured series (repeat scans with one protocol), it must be named: ``SERIES=PATH``
    with the series_key or SeriesInstanceUID.  A DICOM SEG belongs to the series it
    references.

    Raises
    ------
    DoseLabelError
        Unreadable map; no vertebra label; on the grid of no measured series (the reason
        of the grid check); ambiguous; two maps for one series; a SEG of another series.
    """
    from hu_roi.io.labels import (
        TOTALSEG_V2_LEVELS,
        LabelMapError,
        check_labels_fit,
        is_dicom_file,
        read_label_map,
        seg_references,
    )
    from hu_roi.roisfromlabels import LabelProposalError, require_vertebrae
    from hu_roi.volume import header_volume

    out: dict[str, LabelSource] = {}
    for spec in specs:
        key, path = parse_label_spec(spec)
        if not path.exists():
            raise DoseLabelError(f"--labels: no such file: {path}")
        chosen: list[str]
        if key is not None:
            chosen = [k for k, i in infos.items() if key in (k, i.series_instance_uid)]
            if not chosen:
                raise DoseLabelError(
                    f"--labels {spec}: no ROI is measured on series {key} "
                    f"(measured: {_measured_names(infos)})"
                )
        else:
            chosen = list(infos)
        try:
            if is_dicom_file(path):
                refs, _, levels = seg_references(path)
                if not levels:
                    raise DoseLabelError(
                        f"--labels: {path} holds no vertebra segment (a SegmentLabel such as "
                        "vertebrae_L1 or 'L1 vertebra'; see docs/labels.md)"
                    )
                if not refs:
                    raise DoseLabelError(
                        f"--labels: {path} references no series (ReferencedSeriesSequence); "
                        "it cannot be matched to a CT"
                    )
                hits = [k for k in chosen if infos[k].series_instance_uid in refs]
                if not hits:
                    raise DoseLabelError(
                        f"--labels: {path} belongs to another series (it references "
                        f"{', '.join(sorted(refs))}; measured: {_measured_names(infos)})"
                    )
                src = LabelSource(path)
            else:
                lm = read_label_map(path)
                try:
                    require_vertebrae(lm.labels, TOTALSEG_V2_LEVELS, lm.path)
                except LabelProposalError as exc:
                    raise DoseLabelError(f"--labels: {exc}") from None
                hits, reasons = [], []
                for k in chosen:
                    try:
                        check_labels_fit(lm, header_volume(infos[k]))
                        hits.append(k)
                    except LabelMapError as exc:
                        reasons.append(f"series {k}: {exc}")
                if not hits:
                    raise DoseLabelError(f"--labels: {path} fits no measured series: {reasons[0]}")
                src = LabelSource(path, lm)
        except LabelMapError as exc:
            raise DoseLabelError(f"--labels: {exc}") from None
        if len(hits) > 1:
            raise DoseLabelError(
                f"--labels: {path} lies on the grid of {len(hits)} measured series "
                f"({', '.join(hits[:4])}); name one: --labels SERIES_KEY={path}"
            )
        if hits[0] in out:
            raise DoseLabelError(
                f"--labels: two label maps for series {hits[0]}: {out[hits[0]].path} and {path}"
            )
        out[hits[0]] = src
    return out


# ------------------------------------------------------------------------------ per ROI
def _voxel_points(volume: Volume, rm: RoiMask) -> np.ndarray:
    """LPS centres (mm) of the ROI's voxels, shape (n, 3)."""
    pts = [volume.pixel_to_lps(p.k, *p.rows_cols()) for p in rm.parts if p.n_voxels]
    return np.concatenate(pts) if pts else np.empty((0, 3))


def dose_columns(
    volume: Volume, rm: RoiMask, doses: Sequence[DoseGrid]
) -> tuple[tuple[float, float, float] | None, list[str], str]:
    """Dose at the ROI's voxel centres: mean, min and max (Gy), summed over ``doses``
    (trilinear, :meth:`hu_roi.io.rtdose.DoseGrid.sample`; see :func:`dose_stats`)."""
    pts = _voxel_points(volume, rm)
    if not doses or pts.shape[0] == 0:
        return None, [], ""
    total = np.zeros(pts.shape[0])
    for g in doses:
        total += g.sample(pts)
    return dose_stats(total)


def values_under(rm: RoiMask, array: np.ndarray, *, full_series: bool = False) -> np.ndarray:
    """The values of a per-voxel array (labels, dose) at every voxel of an ROI, shape
    (n_voxels,).

    ``array`` (slices, rows, columns) is indexed by the loaded slice (``SliceMask.k``; a
    label map put on the volume the mask was made on), or with ``full_series`` by the
    slice's index in the series (``SliceMask.slice_index``; a label map or dose of the
    whole series, as the viewer holds them).
    """
    vals = [
        array[
            p.slice_index if full_series else p.k,
            p.row0 : p.row0 + p.mask.shape[0],
            p.col0 : p.col0 + p.mask.shape[1],
        ][p.mask]
        for p in rm.parts
    ]
    return np.concatenate(vals) if vals else np.empty(0, dtype=array.dtype)


def label_check(
    roi: Roi, values: np.ndarray, table: Mapping[int, str], source: str
) -> tuple[list[str], str]:
    """Compare a target ROI with the vertebra label map.

    Parameters
    ----------
    values : numpy.ndarray of int, shape (n_voxels,)
        Label value at each of the ROI's voxels (:func:`values_under`).
    table : mapping label value -> level
    source : str
        Name of the label map, for the detail.

    Returns
    -------
    (flags, detail)
        ``level-mismatch`` when more than :data:`MISMATCH_FRACTION` of the voxels lie on
        one other labelled level; otherwise ``roi-outside-body`` when more than
        :data:`OUTSIDE_BODY_FRACTION` lie off the ROI's own level; else nothing.  Only
        target ROIs with a level are checked.
    """
    if roi.kind != "target" or not roi.level:
        return [], ""
    n = int(values.size)
    if n == 0:
        return [], ""
    counts = Counter(table.get(int(x)) for x in values.tolist())
    on_level = counts.get(roi.level, 0)
    others = [(c, lvl) for lvl, c in counts.items() if lvl is not None and lvl != roi.level]
    if others:
        c, lvl = max(others)
        if c > MISMATCH_FRACTION * n:
            return (
                ["level-mismatch"],
                f"ROI labelled {roi.level} lies on {lvl} in {source} ({100 * c / n:.0f} % of "
                f"its {n} voxels; {100 * on_level / n:.0f} % on {roi.level})",
            )
    off = n - on_level
    if off > OUTSIDE_BODY_FRACTION * n:
        where = "the level is not labelled there" if on_level == 0 else f"{100 * off / n:.0f} %"
        return (
            ["roi-outside-body"],
            f"ROI leaves {roi.level}'s label in {source}: {off} of {n} voxels off it ({where})",
        )
    return [], ""


def dose_stats(values_gy: np.ndarray) -> tuple[tuple[float, float, float] | None, list[str], str]:
    """(mean, min, max) of the dose (Gy) at an ROI's voxels, or None with the flag
    ``dose-outside-grid`` when a voxel has no dose (NaN: outside the grid)."""
    n = int(values_gy.size)
    if n == 0:
        return None, [], ""
    bad = int(np.count_nonzero(~np.isfinite(values_gy)))
    if bad:
        return (
            None,
            ["dose-outside-grid"],
            f"{bad} of {n} voxels lie outside the dose grid; no dose written",
        )
    v = values_gy.astype(np.float64)
    return (math.fsum(v.tolist()) / n, float(v.min()), float(v.max())), [], ""


def annotate(
    m: Measurement,
    roi: Roi,
    volume: Volume,
    rm: RoiMask,
    *,
    doses: Sequence[DoseGrid] = (),
    labels: tuple[np.ndarray, Mapping[int, str], str] | str | None = None,
    full_series: bool = False,
) -> Measurement:
    """A measured row with the dose columns and the label-map flags (``measure`` and the
    viewer alike).

    Parameters
    ----------
    m : Measurement
        The ROI's row (fail rows are returned as they are).
    volume, rm
        The volume and the ROI's mask the row was measured from.
    doses : sequence of DoseGrid
        Summed and sampled at the voxel centres (:func:`dose_columns`).
    labels : (array, value -> level, name), str or None
        The label map on the volume's slices (or the whole series with ``full_series``),
        or why it could not be put there (flag ``labels-unusable``).
    """
    from hu_roi.measure import add_flags

    if m.qc_status == "fail":
        return m
    if doses:
        dose, flags, detail = dose_columns(volume, rm, doses)
        if dose is not None:
            m = replace(m, dose_mean_gy=dose[0], dose_min_gy=dose[1], dose_max_gy=dose[2])
        m = add_flags(m, *flags, detail=detail)
    if isinstance(labels, str):
        m = add_flags(m, "labels-unusable", detail=labels)
    elif labels is not None:
        array, table, source = labels
        values = values_under(rm, array, full_series=full_series)
        flags, detail = label_check(roi, values, table, source)
        m = add_flags(m, *flags, detail=detail)
    return m


# -------------------------------------------------------------------- irradiated from dose
def apply_prescription(
    rows: Sequence[Measurement],
    prescription_gy: float,
    *,
    fraction: float = IRRADIATED_DOSE_FRACTION,
) -> list[Measurement]:
    """``irradiated`` from dose, row by row.

    A target ROI with a mean dose is irradiated by dose when ``dose_mean_gy ≥ fraction ·
    prescription_gy``.  The verdict holds for its level: rows of the same patient and level
    without a dose of their own (follow-up scans in another Frame of Reference, heights)
    take it too, unless the dosed ROIs of that level disagree.  On each row:

    - an empty ``irradiated`` is filled, with the info flag ``irradiated-from-dose``;
    - a reader's label that contradicts it is kept and flagged ``irradiated-mismatch``
      (warn);
    - the detail names the dose and the threshold.

    Fail rows and reference ROIs are left as they are.
    """
    from hu_roi.measure import add_flags

    threshold = fraction * prescription_gy
    verdict: dict[tuple[str, str], set[bool]] = defaultdict(set)
    dose_of: dict[tuple[str, str], float] = {}
    for m in rows:
        if m.kind == "target" and m.level and m.dose_mean_gy is not None and m.qc_status != "fail":
            key = (m.patient_id, m.level)
            verdict[key].add(m.dose_mean_gy >= threshold)
            dose_of[key] = max(dose_of.get(key, -math.inf), m.dose_mean_gy)
    out: list[Measurement] = []
    for m in rows:
        key = (m.patient_id, m.level or "")
        if (
            m.qc_status == "fail"
            or not m.level
            or not (m.kind == "target" or m.kind.startswith("height-"))
        ):
            out.append(m)
            continue
        if m.dose_mean_gy is not None and m.kind == "target":
            irr = m.dose_mean_gy >= threshold
            how = f"mean dose {m.dose_mean_gy:.2f} Gy"
        elif len(verdict.get(key, ())) == 1:
            irr = next(iter(verdict[key]))
            how = f"mean dose of {m.level} {dose_of[key]:.2f} Gy on the planning CT"
        else:
            out.append(m)
            continue
        rule = f"{'≥' if irr else '<'} {threshold:g} Gy ({100 * fraction:g} % of {prescription_gy:g} Gy)"
        if m.irradiated is None:
            out.append(
                add_flags(
                    replace(m, irradiated=irr),
                    "irradiated-from-dose",
                    detail=f"irradiated={'true' if irr else 'false'} from dose: {how} {rule}",
                )
            )
        elif m.irradiated != irr:
            out.append(
                add_flags(
                    m,
                    "irradiated-mismatch",
                    detail=f"reader: irradiated={'true' if m.irradiated else 'false'}, but {how} {rule}",
                )
            )
        else:
            out.append(m)
    return out
