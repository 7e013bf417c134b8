"""``hu-roi roi``: ROI files without a viewer.

``hu-roi roi validate FILE_OR_DIR …``
    The checks ``hu-roi measure`` makes on ROI files (the same loader,
    :func:`hu_roi.batch.load_roi_inputs`), without DICOM.  Exit 0 with one summary line
    per file on stdout, or exit 2 with the reason (file, ROI and field) on stderr.

``hu-roi roi new --dicom DIR --series KEY --voxel SLICE ROW COL --radius MM …  --out FILE``
    A circle ROI centred on the centre of voxel (slice, row, column) of the series, in LPS
    mm (:func:`hu_roi.roi.voxel_lps_mm`), appended to the ROI set ``FILE`` (created when
    missing) with :func:`hu_roi.roi.save_roiset`: atomic, under the save lock, and refused
    when the file changed between reading and writing.

The format is described in ``docs/roi_format.md``.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from hu_roi.clibase import add_common_options, plural
from hu_roi.errors import HuRoiError

logger = logging.getLogger(__name__)

__all__ = ["RoiInputError", "add_roi_parser", "run_validate", "run_new"]

FORMAT_PAGE = "docs/roi_format.md"


class RoiInputError(HuRoiError, ValueError):
    """``hu-roi roi`` cannot run with these arguments (the message says why)."""


def add_roi_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hu-roi roi`` with its ``validate`` and ``new`` subcommands."""
    from hu_roi.roi import LESION_TYPES, LEVELS, TIMEPOINTS

    p = subparsers.add_parser(
        "roi",
        help="check ROI files, or add an ROI at a voxel, without a viewer",
        description=f"ROI set files (*.rois.json) without a viewer; format: {FORMAT_PAGE}.",
    )
    sub = p.add_subparsers(dest="roi_command", metavar="ACTION", required=True)
    v = sub.add_parser(
        "validate",
        help="check ROI files as measure does (no DICOM needed)",
        description="Check ROI files with the same rules as `hu-roi measure` (format, "
        "fields, shapes, misspelt field names, numbers), without reading DICOM. Exit 0 with "
        "one summary line per file, or 2 with the reason. Format: " + FORMAT_PAGE + ".",
    )
    v.add_argument(
        "files", nargs="+", metavar="FILE_OR_DIR", help="ROI file(s), or folders of *.rois.json"
    )
    add_common_options(v, quiet_help="no summary line")
    v.set_defaults(func=run_validate)
    n = sub.add_parser(
        "new",
        help="append a circle ROI centred on a voxel (or a height line) to an ROI set",
        description="Append a circle ROI centred on voxel (SLICE, ROW, COL) of a series to "
        "the ROI set FILE (created when missing), or with --line a vertebral height between "
        "two voxels (kind height-anterior, height-middle or height-posterior). SLICE counts "
        "the series' images in their order along the slice normal, from 0 (the slice_index "
        "column of the measurement CSV); ROW and COL count from 0 at the top-left pixel. "
        "Positions are written in LPS mm. Format: " + FORMAT_PAGE + ".",
    )
    n.add_argument("--dicom", required=True, metavar="DIR", help="DICOM folder")
    n.add_argument(
        "--series",
        required=True,
        metavar="KEY",
        help="series_key or SeriesInstanceUID of the series (see `hu-roi index DIR`)",
    )
    where = n.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--voxel",
        nargs=3,
        type=int,
        metavar=("SLICE", "ROW", "COL"),
        help="voxel at the centre of the circle (0-based; needs --radius)",
    )
    where.add_argument(
        "--line",
        nargs=6,
        type=int,
        metavar=("SLICE1", "ROW1", "COL1", "SLICE2", "ROW2", "COL2"),
        help="a vertebral height from one voxel centre to another (0-based; needs --kind "
        "height-anterior|height-middle|height-posterior); measure writes its length_mm",
    )
    n.add_argument("--radius", type=float, metavar="MM", help="radius of the circle in mm")
    n.add_argument("--timepoint", required=True, choices=TIMEPOINTS, help="T0 … T3")
    n.add_argument(
        "--level",
        choices=LEVELS,
        metavar="LEVEL",
        help="vertebral level C1–C7, T1–T12, L1–L5, S1–S5 (required for a target or a height)",
    )
    n.add_argument(
        "--kind",
        default="target",
        help="target (default), reference-air|fat|muscle|water or phantom-<name>; with --line "
        "height-anterior|height-middle|height-posterior",
    )
    n.add_argument(
        "--patient-id",
        metavar="ID",
        help="patient or study code (default: the series' PatientID; required when the "
        "series has none)",
    )
    n.add_argument(
        "--irradiated",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the vertebra lies in the radiotherapy field (default: not recorded)",
    )
    n.add_argument("--lesion-type", choices=LESION_TYPES, help="lesion type of the vertebra")
    n.add_argument(
        "--roi-id",
        metavar="ID",
        help="ROI id (default: PATIENT-TIMEPOINT-LEVEL, PATIENT-TIMEPOINT-LEVEL-KIND for a "
        "height, or PATIENT-TIMEPOINT-KIND)",
    )
    n.add_argument("--reader", metavar="NAME", help="reader of a new ROI set (e.g. R1)")
    n.add_argument("--out", required=True, metavar="FILE", help="ROI set to append to")
    n.add_argument("--no-cache", action="store_true", help="do not use the header cache")
    add_common_options(n, quiet_help="no summary line")
    n.set_defaults(func=run_new)


# --------------------------------------------------------------------------------------
def run_validate(args: argparse.Namespace) -> int:
    """``hu-roi roi validate``: the measure checks, one summary line per file."""
    from hu_roi.batch import load_roi_inputs
    from hu_roi.roi import unknown_fields

    for path, rs in load_roi_inputs(args.files):
        print(f"{path}: {_summary(rs, len(unknown_fields(rs)))}")
    return 0


def _summary(rs: Any, n_unknown: int) -> str:
    """One line describing a valid set: counts by kind, patients, what measure will flag."""
    rois = rs.rois
    targets = [r for r in rois if r.kind == "target"]
    refs = [r for r in rois if r.kind.startswith("reference-")]
    phantoms = [r for r in rois if r.kind.startswith("phantom-")]
    heights = [r for r in rois if r.shape.is_line]
    parts = [
        f"valid, {plural(len(rois), 'ROI')} ({len(targets)} target, {len(refs)} reference, "
        f"{len(phantoms)} phantom"
        + (f", {len(heights)} height line{'s' if len(heights) != 1 else ''}" if heights else "")
        + ")",
        plural(len({r.patient_id for r in rois}), "patient"),
        f"reader {rs.reader!r}" if rs.reader else "no reader",
    ]
    unusable = [r for r in targets if not (r.level and r.timepoint)]
    if unusable:
        parts.append(
            f"{plural(len(unusable), 'target ROI')} without level or timepoint "
            "(longitudinal cannot use them)"
        )
    unplaced = [r for r in heights if not (r.level and r.timepoint)]
    if unplaced:
        parts.append(
            f"{plural(len(unplaced), 'height')} without level or timepoint "
            "(longitudinal cannot use them)"
        )
    no_pid = [r for r in rois if not r.patient_id]
    if no_pid:
        parts.append(f"{plural(len(no_pid), 'ROI')} with an empty patient_id")
    if n_unknown:
        parts.append(f"{plural(n_unknown, 'unknown field name')} kept (listed above)")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------
def _find_series(series: list[Any], key: str, dicom: Path) -> Any:
    """The one series whose series_key or SeriesInstanceUID is ``key``."""
    from hu_roi.util import show

    hits = [s for s in series if key in (s.series_key, s.series_instance_uid)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        known = ", ".join(f"{s.series_key} ({s.n_slices} slices)" for s in series[:5])
        more = f" and {len(series) - 5} more" if len(series) > 5 else ""
        listing = f"series there: {known}{more}" if series else "no DICOM series there"
        raise RoiInputError(
            f"no series {show(key)} in {dicom}; {listing} (see `hu-roi index {dicom}`)"
        )
    raise RoiInputError(
        f"{len(hits)} series match {show(key)} in {dicom}; give the series_key of one of them"
    )


def _header_cache(args: argparse.Namespace) -> object | None:
    if args.no_cache:
        return None
    from hu_roi.io.cache import HeaderCache

    return HeaderCache.default()


def run_new(args: argparse.Namespace) -> int:
    """``hu-roi roi new``: append a circle at a voxel to an ROI set (see the module doc)."""
    from hu_roi.io import index_folder
    from hu_roi.roi import (
        HEIGHT_KINDS,
        FileStamp,
        Roi,
        RoiSet,
        load_roiset,
        save_roiset,
        voxel_lps_mm,
    )
    from hu_roi.util import show

    dicom = Path(args.dicom)
    if not dicom.exists():
        raise RoiInputError(f"no such DICOM folder: {dicom}")
    line = getattr(args, "line", None)
    radius = math.nan
    if line is None:
        if args.radius is None:
            raise RoiInputError("--voxel needs --radius (the circle's radius in mm)")
        radius = float(args.radius)
        if not (math.isfinite(radius) and radius > 0):
            raise RoiInputError(f"--radius must be a positive number of mm; got {args.radius}")
    else:
        if args.radius is not None:
            raise RoiInputError("--radius is for a circle (--voxel), not for --line")
        if args.kind not in HEIGHT_KINDS:
            raise RoiInputError(f"--line needs --kind {'|'.join(HEIGHT_KINDS)}; got {args.kind}")
    if args.kind == "target" and args.level is None:
        raise RoiInputError("--level is required for a target ROI (e.g. --level L1)")
    if args.kind in HEIGHT_KINDS and args.level is None:
        raise RoiInputError("--level is required for a height (e.g. --level L1)")
    out = Path(args.out)
    # read the set first: a bad file is reported before the (slower) DICOM index
    rs: RoiSet
    if out.exists():
        rs = load_roiset(out)
        if args.reader and rs.reader and args.reader != rs.reader:
            raise RoiInputError(
                f"{out} holds reader {show(rs.reader)}'s ROIs; --reader {show(args.reader)} "
                "differs (use another --out per reader)"
            )
    else:
        rs = RoiSet(reader=args.reader or "")
    info = _find_series(index_folder(dicom, cache=_header_cache(args)).series, args.series, dicom)
    given: list[int] = list(args.voxel) if line is None else list(line)
    opt = "--voxel" if line is None else "--line"
    try:
        points = [voxel_lps_mm(info, *given[i : i + 3]) for i in range(0, len(given), 3)]
    except ValueError as exc:
        raise RoiInputError(f"{opt} {' '.join(map(str, given))}: {exc}") from exc
    shape: dict[str, Any]
    if line is None:
        shape = {
            "type": "circle",
            "center_mm": [float(v) for v in points[0]],
            "radius_mm": radius,
        }
    else:
        shape = {"type": "line", "points_mm": [[float(v) for v in p] for p in points]}
    pid = args.patient_id if args.patient_id is not None else info.patient_id
    if not pid:
        raise RoiInputError(
            f"the series {info.series_key} has no PatientID; give the patient's study code "
            "with --patient-id"
        )
    label = {"target": args.level}.get(args.kind, args.kind)
    if args.kind in HEIGHT_KINDS:
        label = f"{args.level}-{args.kind}"
    rid = args.roi_id or f"{pid}-{args.timepoint}-{label}"
    if any(r.roi_id == rid for r in rs.rois):
        raise RoiInputError(f"{out} already holds ROI {show(rid)}; choose another --roi-id")
    d: dict[str, Any] = {
        "roi_id": rid,
        "patient_id": pid,
        "timepoint": args.timepoint,
        "series_instance_uid": info.series_instance_uid,
        "level": args.level,
        "irradiated": args.irradiated,
        "lesion_type": args.lesion_type,
        "kind": args.kind,
        "shape": shape,
    }
    if not info.series_instance_uid:  # the index's key then names the series
        d["series_key"] = info.series_key
    if info.study_date:
        d["study_date"] = info.study_date
    roi = Roi.from_dict(d)  # the same checks as a loaded file (kind, patient_id, …)
    if args.patient_id and info.patient_id and args.patient_id != info.patient_id:
        raise RoiInputError(
            f"--patient-id {show(args.patient_id)} differs from the series' PatientID "
            f"{show(info.patient_id)}; measure would fail the ROI (patient-mismatch)"
        )
    if info.measure_refuses:
        logger.warning(
            "series %s has problems %s: measure refuses it unless they are accepted (--accept)",
            info.series_key,
            ",".join(info.measure_refuses),
        )
    expected: FileStamp | None = rs.stamp
    saved = save_roiset(replace(rs, rois=(*rs.rois, roi)), out, expected_stamp=expected)
    if not getattr(args, "quiet", False):
        if line is None:
            x, y, z = roi.shape.center_mm  # type: ignore[misc]
            what = (
                f"circle, radius {args.radius:g} mm, centre LPS [{x:.3f}, {y:.3f}, {z:.3f}] mm "
                f"= voxel {' '.join(map(str, args.voxel))}"
            )
        else:
            what = (
                f"line, {roi.shape.length_mm:.2f} mm from voxel {' '.join(map(str, line[:3]))} "
                f"to {' '.join(map(str, line[3:]))}"
            )
        print(
            f"added ROI {show(rid)} ({what} of series {info.series_key}) to {out} "
            f"({plural(len(saved.rois), 'ROI')})"
        )
    return 0
