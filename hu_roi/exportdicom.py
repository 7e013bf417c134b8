"""``hu-roi export-dicom``: the measurements as DICOM SR (TID 1500) and SEG, per series.

Steps of :func:`export_dicom`:

1. measure every ROI with :func:`hu_roi.batch.measure_batch` (the same rows, values and qc
   flags as ``hu-roi measure`` on the same input);
2. group the measured ROIs by series and reader (one SR and one SEG each: the reader is the
   SR's observer);
3. per group, load the slices the ROIs lie on, rasterise every ROI with
   :func:`hu_roi.rasterize.rasterize_roi` (the voxels measured; checked against the row's
   voxel count and slices) and build the SR and SEG
   (:func:`hu_roi.io.dicom_export.build_series_export`).

Which ROIs are exported: every ROI with statistics, whatever its qc status (a ``fail`` from
a calibration check keeps its numbers; the status is in the SR).  ROIs that could not be
measured (no voxels, no statistics: ``qc_status=fail`` with a reason such as
``series-not-found`` or ``roi-outside-image``) and line ROIs (a length, no HU) are skipped
and listed with their reason in ``export.csv`` and on stderr.

A series that cannot be exported (no UIDs, a Frame of Reference mismatch, …) stops the
command with exit 2 and nothing written, unless ``--skip-unexportable`` is given: then its
ROIs are listed as skipped with the reason and the other series are written.

Output folder (written as a whole, :meth:`hu_roi.util.OutputSet.add_folder`):
``<SeriesInstanceUID>[_<reader>].SR.dcm``, ``….SEG.dcm`` and ``export.csv``
(:data:`EXPORT_COLUMNS`, one row per ROI).
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hu_roi.clibase import (
    CliError,
    add_common_options,
    add_formula_escape_option,
    csv_text,
    plural,
)

if TYPE_CHECKING:
    from hu_roi.measure import Measurement
    from hu_roi.roi import Roi

logger = logging.getLogger(__name__)

__all__ = [
    "EXPORT_COLUMNS",
    "HELP",
    "ExportResult",
    "export_dicom_to",
    "export_dicom",
    "add_export_dicom_parser",
    "run_export_dicom",
]

HELP = "DICOM SR (TID 1500) and SEG of the measured ROIs, per series"

#: Columns of ``export.csv``: one row per ROI of the input, in input order.
EXPORT_COLUMNS = [
    "roi_id",
    "reader",
    "series_key",
    "series_instance_uid",
    "qc_status",
    "exported",
    "reason",
    "sr_file",
    "seg_file",
    "segment_number",
    "tracking_uid",
]
_OWN = re.compile(r"^(.+\.(SR|SEG)\.dcm|export\.csv)$")


@dataclass
class ExportResult:
    """What :func:`export_dicom` made.

    Attributes
    ----------
    files : dict file name -> bytes
        The SR and SEG files and ``export.csv``.
    rows : list of dict
        ``export.csv`` rows (:data:`EXPORT_COLUMNS`).
    skipped_series : list of (series_key, reason)
        Series not written (only with ``skip_unexportable``).
    """

    files: dict[str, bytes] = field(default_factory=dict)
    rows: list[dict[str, str]] = field(default_factory=list)
    skipped_series: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_exported(self) -> int:
        """ROIs written to an SR and a SEG."""
        return sum(r["exported"] == "true" for r in self.rows)


def _skip_reason(m: Measurement, roi: Roi) -> str:
    """Why a measurement row is not exported ('' = exported)."""
    if roi.shape.type == "line":
        return "line ROI: a length, no HU statistics"
    mean = m.mean_hu
    if m.n_voxels <= 0 or mean is None or not math.isfinite(mean):
        flags = ";".join(m.qc_flags) or "no statistics"
        return f"not measured ({flags})"
    return ""


def _file_base(series_uid: str, reader: str, taken: set[str]) -> str:
    from hu_roi.io.dicom_export import safe_file_part

    base = safe_file_part(series_uid) + (f"_{safe_file_part(reader)}" if reader else "")
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def export_dicom(
    dicom_dir: str | Path,
    rois: str | Path | Sequence[str | Path],
    *,
    accept: Sequence[str] = (),
    cache: object | None = None,
    patient_codes: dict[str, str] | None = None,
    follow_links: bool = False,
    skip_unexportable: bool = False,
    progress: bool = False,
    formula_escape: bool = True,
    sr_groups: str = "geometry",
) -> ExportResult:
    """Measure the ROIs and build one DICOM SR and SEG per series and reader.

    Parameters
    ----------
    dicom_dir, rois, accept, cache, patient_codes, follow_links, progress
        As for :func:`hu_roi.batch.measure_batch`.
    skip_unexportable : bool
        A series that cannot be exported is listed as skipped instead of stopping.
    formula_escape : bool
        Text cells of ``export.csv`` starting with = + - @ get a leading apostrophe
        (:func:`hu_roi.csvtext.escape_cell`).
    sr_groups : {"geometry", "segment"}
        What each SR measurement group points at: the ROI's geometry, or its SEG segment
        (:func:`hu_roi.io.dicom_export.build_series_export`).

    Returns
    -------
    ExportResult

    Raises
    ------
    DicomExportError
        A series cannot be exported (without ``skip_unexportable``), or nothing at all
        can be exported.
    BatchInputError
        As :func:`hu_roi.batch.measure_batch`.
    """
    from hu_roi.batch import ACCEPTED_PROBLEMS, load_roi_inputs, measure_batch
    from hu_roi.csvtext import escape_cell
    from hu_roi.io import index_folder, load_series
    from hu_roi.io.dicom_export import (
        DicomExportError,
        ExportItem,
        build_series_export,
        tracking_uid,
    )
    from hu_roi.rasterize import rasterize_roi
    from hu_roi.util import show

    res = measure_batch(
        dicom_dir,
        rois,
        progress=progress,
        accept=accept,
        cache=cache,
        patient_codes=patient_codes,
        follow_links=follow_links,
    )
    # the same ROI files in the same order as measure_batch read them
    items = [(roi, rs.reader) for _, rs in load_roi_inputs(rois) for roi in rs.rois]
    if len(items) != len(res.measurements) or any(
        r.roi_id != m.roi_id for (r, _), m in zip(items, res.measurements, strict=False)
    ):
        raise DicomExportError("the ROI files changed while measuring; run the export again")
    idx = index_folder(dicom_dir, cache=cache, follow_links=follow_links)
    infos = {s.series_key: s for s in idx.series}
    out = ExportResult()
    rows: list[dict[str, str]] = []
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, ((roi, reader), m) in enumerate(zip(items, res.measurements, strict=True)):
        why = _skip_reason(m, roi)
        if not why and m.series_key not in infos:
            why = f"series {show(m.series_key)} not found when exporting"
        rows.append(
            {
                "roi_id": roi.roi_id,
                "reader": reader,
                "series_key": m.series_key,
                "series_instance_uid": m.series_instance_uid,
                "qc_status": m.qc_status,
                "exported": "false",
                "reason": why,
            }
        )
        if not why:
            groups[(m.series_key, reader)].append(i)
    accepted = tuple(dict.fromkeys([*ACCEPTED_PROBLEMS, *accept]))
    taken: set[str] = set()
    seen_uid: dict[str, int] = defaultdict(int)
    for (key, reader), members in groups.items():
        info = infos[key]
        try:
            need = sorted({k for i in members for k in res.measurements[i].slice_indices})
            vol = load_series(info, slices=need, accept=[p for p in info.problems if p in accepted])
            export_items = []
            for i in members:
                roi, m = items[i][0], res.measurements[i]
                mask = rasterize_roi(vol, roi)
                if mask.n_voxels != m.n_voxels or mask.slice_indices != tuple(m.slice_indices):
                    # never a SEG that differs from what was measured
                    raise DicomExportError(
                        f"ROI {show(roi.roi_id)}: its mask ({mask.n_voxels} voxels on slices "
                        f"{list(mask.slice_indices)}) differs from its measurement "
                        f"({m.n_voxels} voxels on {list(m.slice_indices)}); the series "
                        "changed while exporting?"
                    )
                occ_key = f"{info.series_instance_uid}\0{reader}\0{roi.roi_id}"
                occurrence = seen_uid[occ_key]
                seen_uid[occ_key] += 1
                uid = tracking_uid(info.series_instance_uid, reader, roi.roi_id, occurrence)
                export_items.append(ExportItem(m, roi, mask, uid))
            built = build_series_export(info, export_items, reader=reader, sr_groups=sr_groups)
        except (DicomExportError, OSError, ValueError) as exc:
            reason = (
                str(exc) if isinstance(exc, DicomExportError) else f"{type(exc).__name__}: {exc}"
            )
            if not skip_unexportable:
                raise DicomExportError(
                    f"{reason} (give --skip-unexportable to write the other series)"
                ) from None
            out.skipped_series.append((key, reason))
            for i in members:
                rows[i]["reason"] = f"series not exported: {reason}"
            continue
        base = _file_base(info.series_instance_uid, reader, taken)
        sr_name, seg_name = f"{base}.SR.dcm", f"{base}.SEG.dcm"
        out.files[sr_name] = built.sr
        out.files[seg_name] = built.seg
        for j, (i, it) in enumerate(zip(members, export_items, strict=True)):
            rows[i].update(
                exported="true",
                sr_file=sr_name,
                seg_file=seg_name,
                segment_number=str(j + 1),
                tracking_uid=it.tracking_uid,
            )
    if not out.files:
        reasons = sorted({r["reason"] for r in rows if r["reason"]})
        raise DicomExportError(
            "nothing to export: "
            + (
                "; ".join(reasons[:3])
                + (f" … and {len(reasons) - 3} more" if len(reasons) > 3 else "")
                or "no ROI"
            )
        )
    out.rows = rows
    esc = escape_cell if formula_escape else str
    text_cols = ("roi_id", "reader", "series_key", "reason")
    cells = [{k: esc(v) if k in text_cols else v for k, v in r.items()} for r in rows]
    out.files["export.csv"] = csv_text(EXPORT_COLUMNS, cells).encode("utf-8")
    return out


def export_dicom_to(
    out: str | Path,
    dicom_dir: str | Path,
    rois: str | Path | Sequence[str | Path],
    *,
    inputs: Sequence[tuple[str, str | Path]] = (),
    **kwargs: Any,
) -> ExportResult:
    """:func:`export_dicom` written into the folder ``out`` (the command and the viewer).

    ``out`` must be new, or a folder this command wrote before (its SR, SEG and
    ``export.csv`` only): it is then replaced whole, atomically
    (:meth:`hu_roi.util.OutputSet.add_folder`).  It is checked against ``inputs`` (label,
    path) before anything is measured, so a refused folder costs nothing.

    Raises
    ------
    OutputError, HuRoiError
        The folder is refused, or as :func:`export_dicom`.
    """
    import os

    from hu_roi.util import OutputSet

    outs = OutputSet(list(inputs))
    own: list[str] = []
    if os.path.isdir(out):
        own = [n for n in os.listdir(out) if _OWN.match(n)]
    outs.check_folder(out, own=own)
    res = export_dicom(dicom_dir, rois, **kwargs)
    with outs:
        folder = outs.add_folder(out, own=own)
        for name, data in res.files.items():
            (folder / name).write_bytes(data)
    return res


# --------------------------------------------------------------------------------------
# CLI
def add_export_dicom_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hu-roi export-dicom`` (``set_defaults(func=run_export_dicom)``)."""
    from hu_roi.batch import add_measure_inputs  # the same inputs as measure

    p = subparsers.add_parser(
        "export-dicom",
        help=HELP,
        description="Measure the stored ROIs (as hu-roi measure does) and write, per series "
        "and reader, a DICOM Structured Report (TID 1500 Measurement Report: mean, SD and "
        "median HU, area, qc status, finding site, ROI geometry) and a binary DICOM SEG "
        "(one segment per ROI, the voxels measured), plus export.csv listing every ROI. "
        "See docs/dicom_export.md.",
    )
    add_measure_inputs(p)
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder (new, or one this command wrote before: it is replaced whole)",
    )
    p.add_argument(
        "--sr-groups",
        choices=("geometry", "segment"),
        default="geometry",
        help="what each SR measurement group points at: the ROI's own geometry (SCOORD3D, "
        "default) or its segment of the SEG written beside it (TID 1411 Referenced Segment, "
        "as dcmqi / 3D Slicer QuantitativeReporting write and read them)",
    )
    p.add_argument(
        "--skip-unexportable",
        action="store_true",
        help="write the series that can be exported and list the others (by default a "
        "series that cannot be exported, e.g. without UIDs, stops the command)",
    )
    add_common_options(p)
    add_formula_escape_option(p)
    p.set_defaults(func=run_export_dicom)


def run_export_dicom(args: argparse.Namespace) -> int:
    """Run ``hu-roi export-dicom``; 0 when written.  Bad input raises (exit 2)."""
    from hu_roi.batch import input_paths, measure_kwargs
    from hu_roi.util import printable

    dicom = Path(args.dicom)
    if not dicom.exists():
        raise CliError(f"no such DICOM folder: {printable(dicom)}")
    quiet = getattr(args, "quiet", False)
    res = export_dicom_to(
        args.out,
        dicom,
        args.rois,
        inputs=input_paths(args),
        **measure_kwargs(args),
        skip_unexportable=getattr(args, "skip_unexportable", False),
        progress=not quiet,
        formula_escape=getattr(args, "formula_escape", True),
        sr_groups=getattr(args, "sr_groups", "geometry"),
    )
    if not quiet:
        n_sr = sum(n.endswith(".SR.dcm") for n in res.files)
        skipped = [r for r in res.rows if r["exported"] != "true"]
        print(
            f"hu-roi export-dicom: {plural(res.n_exported, 'ROI')} in "
            f"{plural(n_sr, 'SR')} and {plural(n_sr, 'SEG')}; {len(skipped)} skipped"
            + (
                f"; {plural(len(res.skipped_series), 'series', 'series')} not exported"
                if res.skipped_series
                else ""
            ),
            file=sys.stderr,
        )
        from hu_roi.util import show

        for r in skipped:
            print(f"  skipped {show(r['roi_id'])}: {printable(r['reason'])}", file=sys.stderr)
        print(f"  wrote {printable(args.out)}", file=sys.stderr)
    return 0
