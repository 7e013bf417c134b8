"""Headless batch measurement: ROI files × a DICOM folder → measurement rows → CSV.

Steps of :func:`measure_batch`:

1. load every ROI file (``*.rois.json``; a folder is searched recursively);
2. index the DICOM folder (headers only);
3. match every ROI to its series (:func:`hu_roi.series_lookup.SeriesResolver`, the rule the
   viewer uses too; old path-based keys of series without UID resolve with the info flag
   ``series-key-legacy``); unmatched ROIs become ``fail`` rows with the reason, and so do
   target ROIs without a patient ID in the ROI and in DICOM
   (:func:`hu_roi.series_lookup.patient_id_rule`).  An ROI without UID, series_key and
   study_date but with a timepoint is matched within the study date of the other ROIs of
   the same patient and timepoint that do name their series (when they agree on one date);
4. per series (one task each; ``workers > 1`` runs tasks in local processes): work out from
   the header which slices the ROIs touch (:func:`hu_roi.rasterize.slices_needed`), load
   only those (``load_series(info, slices=...)``), measure every ROI with
   :func:`hu_roi.measure.measure_roi`, and run the automatic air check on the loaded slices;
5. calibration checks across all rows (:func:`hu_roi.calibration.apply_calibration`).

Line ROIs (vertebral heights) are measured from the series' header alone
(:func:`hu_roi.measure.measure_line`: the length in mm, or ``line-outside-image``); no
pixel is read for them, and the scan's HU calibration and header-comparison flags (air,
contrast, kVp vs T0, ...) are not put on their rows, since they do not bear on a length.

Series problems accepted for measurement (:data:`ACCEPTED_PROBLEMS`): ``missing-slices``
and ``gantry-tilt`` — the voxel rule uses each slice's own position, so both still give
correct voxels; rows carry the ``series-<problem>`` warning.  Other refusing problems make
the series' ROIs ``fail`` rows (``series-refused``).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hu_roi import __version__
from hu_roi.calibration import (
    AirCheck,
    PhantomFit,
    apply_calibration,
    auto_air_check,
    rescale_flags,
)
from hu_roi.clibase import add_common_options, add_formula_escape_option, plural
from hu_roi.doselabels import (
    IRRADIATED_DOSE_FRACTION,
    OUTSIDE_BODY_FRACTION,
    SeriesAddons,
    annotate,
    apply_prescription,
    bind_doses,
    bind_labels,
)
from hu_roi.errors import DicomReadError, HuRoiError, RoiFormatError, SeriesProblemError
from hu_roi.measure import (
    CORTICAL_FRACTION,
    CORTICAL_HU,
    HETEROGENEITY_GAP_HU,
    HETEROGENEITY_SD_HU,
    MIN_TARGET_AREA_MM2,
    MIN_VOXELS,
    PADDING_HU_LIMIT,
    Measurement,
    add_flags,
    failed_measurement,
    label_flags,
    measure_line,
    measure_roi,
    patient_mismatch,
)
from hu_roi.parallel import check_scheduler_address, connect_scheduler, map_tasks
from hu_roi.rasterize import RoiPlacementError, rasterize_roi, slices_needed
from hu_roi.roi import Roi, RoiSet, find_roi_files, load_roiset
from hu_roi.series import MEASURE_ACCEPTS, SeriesInfo
from hu_roi.series_lookup import LEGACY_FLAG, LEGACY_HOWS, SeriesResolver, patient_id_rule
from hu_roi.util import show

if TYPE_CHECKING:
    from hu_roi.volume import Volume

logger = logging.getLogger(__name__)

__all__ = [
    "ACCEPTED_PROBLEMS",
    "BatchResult",
    "BatchInputError",
    "load_roi_inputs",
    "measure_series",
    "measure_batch",
    "add_measure_parser",
    "add_measure_inputs",
    "input_paths",
    "measure_kwargs",
    "run_measure",
]

#: Refusing series problems under which the voxel rule still selects the right voxels
#: (defined beside the series so that ``hu-roi index`` counts what measure accepts).
ACCEPTED_PROBLEMS: tuple[str, ...] = MEASURE_ACCEPTS


class BatchInputError(HuRoiError, ValueError):
    """The batch cannot run at all (no ROI files, unreadable ROI file, no DICOM folder)."""


@dataclass(frozen=True)
class _Item:
    order: int
    roi: Roi
    reader: str
    roi_file: str


@dataclass
class BatchResult:
    """Output of :func:`measure_batch`.

    Attributes
    ----------
    measurements : list of Measurement
        One per ROI, in the order of the ROI files and ROIs.
    meta : dict
        Provenance for the sidecar file (inputs, settings, counts).
    phantom_fits : dict series_key -> PhantomFit
    air_checks : dict series_key -> AirCheck
    """

    measurements: list[Measurement]
    meta: dict[str, Any] = field(default_factory=dict)
    phantom_fits: dict[str, PhantomFit] = field(default_factory=dict)
    air_checks: dict[str, AirCheck] = field(default_factory=dict)


def load_roi_inputs(paths: str | Path | Sequence[str | Path]) -> list[tuple[Path, RoiSet]]:
    """Load ROI files given as files and/or folders (folders: every ``*.rois.json`` below).

    Raises
    ------
    BatchInputError
        A path does not exist, a folder holds no ROI file, or a file is not a valid ROI set
        (the message names the file, the ROI and the field).
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise BatchInputError(f"no such ROI file or folder: {p}")
        found = find_roi_files(p)
        if not found:
            raise BatchInputError(f"no ROI files (*.rois.json) in {p}")
        files += found
    out = []
    for f in files:
        try:
            out.append((f, load_roiset(f)))
        except RoiFormatError as exc:
            raise BatchInputError(f"not a valid ROI file: {exc}") from exc
        except OSError as exc:
            raise BatchInputError(f"cannot read ROI file {f}: {exc}") from exc
    return out


def _fail_row(
    it: _Item, codes: Sequence[str], info: SeriesInfo | None, detail: str
) -> tuple[int, Measurement]:
    """(order, fail row) of an item that could not be measured, with the reason."""
    m = failed_measurement(
        it.roi, codes, info=info, detail=detail, reader=it.reader, roi_file=it.roi_file
    )
    return it.order, m


def _measure_one_by_one(
    info: SeriesInfo,
    todo: Sequence[_Item],
    accept: Sequence[str],
    addons: SeriesAddons | None = None,
) -> list[tuple[int, Measurement]]:
    """Fallback when the slices of all ROIs of a series do not load together: each ROI on
    its own slices, so one broken slice fails only the ROIs that touch it."""
    from hu_roi.io import load_series

    out: list[tuple[int, Measurement]] = []
    for it in todo:
        try:
            vol = load_series(info, slices=sorted(slices_needed(it.roi, info)), accept=accept)
        except (DicomReadError, SeriesProblemError, OSError, ValueError) as exc:
            out.append(_fail_row(it, ["series-load-failed"], info, str(exc)))
        else:
            m = _measure_item(vol, it, addons, _label_arrays(vol, addons))
            out.append((it.order, add_flags(m, *rescale_flags(vol))))
    return out


def _label_arrays(
    vol: Volume, addons: SeriesAddons | None
) -> tuple[np.ndarray, dict[int, str], str] | str | None:
    """The bound label map on the loaded slices: (labels, value -> level, file name), the
    reason it cannot be put there (a string), or None without a label map."""
    if addons is None or addons.labels is None:
        return None
    from hu_roi.io.labels import LabelMapError, label_map_on_volume

    src = addons.labels
    try:
        labels, table = label_map_on_volume(src.path, vol, label_map=src.label_map)
    except (LabelMapError, OSError) as exc:
        return f"{src.path.name}: {exc}"
    return labels, table, src.path.name


def _measure_item(
    vol: Volume,
    it: _Item,
    addons: SeriesAddons | None,
    labels: tuple[np.ndarray, dict[int, str], str] | str | None,
) -> Measurement:
    """One ROI on the loaded volume, with the dose and label-map checks of ``addons``."""
    if not addons:
        return measure_roi(vol, it.roi, reader=it.reader, roi_file=it.roi_file)
    try:
        rm = rasterize_roi(vol, it.roi)
    except RoiPlacementError:  # measure_roi makes the fail row with the reason
        return measure_roi(vol, it.roi, reader=it.reader, roi_file=it.roi_file)
    m = measure_roi(vol, it.roi, reader=it.reader, roi_file=it.roi_file, mask=rm)
    return annotate(m, it.roi, vol, rm, doses=addons.doses, labels=labels)


def measure_series(
    info: SeriesInfo,
    items: Sequence[_Item],
    accepted: Sequence[str] = ACCEPTED_PROBLEMS,
    addons: SeriesAddons | None = None,
) -> tuple[list[tuple[int, Measurement]], AirCheck | None]:
    """Measure the ROIs of one series, loading only the slices they touch.

    ``accepted`` are the series problems measured anyway (rows carry ``series-<problem>``).
    ``addons``: RT doses to sample and a label map to check the ROIs against
    (:mod:`hu_roi.doselabels`).  Runs in a worker process when ``workers > 1`` (arguments
    and results are picklable).
    """
    from hu_roi.io import check_loadable, load_series

    out: list[tuple[int, Measurement]] = []
    accept = [p for p in info.problems if p in accepted]
    try:  # a series that will not load fails for that reason, before any geometry
        check_loadable(info, accept)
    except SeriesProblemError as exc:
        codes = ["series-refused", *(f"series-{p}" for p in exc.problems)]
        return [_fail_row(it, codes, info, str(exc)) for it in items], None
    need: set[int] = set()
    todo: list[_Item] = []
    for it in items:
        if it.roi.shape.is_line:  # a height: the header's geometry, no pixels
            out.append(
                (it.order, measure_line(info, it.roi, reader=it.reader, roi_file=it.roi_file))
            )
            continue
        try:
            need.update(slices_needed(it.roi, info))
            todo.append(it)
        except RoiPlacementError as exc:
            out.append(_fail_row(it, [exc.code], info, str(exc)))
    if not todo:
        return out, None
    try:
        vol = load_series(info, slices=sorted(need), accept=accept)
    except SeriesProblemError as exc:
        codes = ["series-refused", *(f"series-{p}" for p in exc.problems)]
        return out + [_fail_row(it, codes, info, str(exc)) for it in todo], None
    except (DicomReadError, OSError, ValueError) as exc:
        if len(todo) > 1:  # a broken slice: fail only the ROIs that need it
            return out + _measure_one_by_one(info, todo, accept, addons), None
        return out + [_fail_row(it, ["series-load-failed"], info, str(exc)) for it in todo], None
    labels = _label_arrays(vol, addons)
    for it in todo:
        out.append((it.order, _measure_item(vol, it, addons, labels)))
    # the rescale of every slice read, not only the index's first image: a scan flag
    scan = rescale_flags(vol)
    if scan:
        out = [(order, add_flags(m, *scan)) for order, m in out]
    # always computed (cheap); apply_calibration uses it only for scans without a
    # measured reference-air ROI
    return out, auto_air_check(vol)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def measure_batch(
    dicom_dir: str | Path,
    rois: str | Path | Sequence[str | Path],
    *,
    workers: int = 1,
    scheduler: str | object | None = None,
    progress: bool = False,
    accept: Sequence[str] = (),
    cache: object | None = None,
    patient_codes: Mapping[str, str] | None = None,
    follow_links: bool = False,
    rtdose: Sequence[str | Path] = (),
    labels: Sequence[str] = (),
    prescription_gy: float | None = None,
    irradiated_fraction: float = IRRADIATED_DOSE_FRACTION,
) -> BatchResult:
    """Measure every stored ROI on its series (see the module docstring for the steps).

    Parameters
    ----------
    dicom_dir : path
        DICOM folder (searched recursively).
    rois : path or sequence of paths
        ROI files and/or folders of ``*.rois.json``.
    workers : int
        Local processes (per-series tasks, and reading the headers the cache does not
        hold); 1 runs in this process.
    scheduler : str, distributed.Client or None
        Address of a running dask scheduler (or a client): run the per-series tasks
        there instead (see :mod:`hu_roi.parallel`; workers must see the same paths).
    progress : bool
        tqdm progress bar on stderr (only shown when stderr is a terminal).
    accept : sequence of str
        Series problems to measure anyway, on top of :data:`ACCEPTED_PROBLEMS` (e.g.
        ``("duplicate-positions",)``); codes that are never loadable stay refused.
    cache : HeaderCache or None
        Persistent header cache for the index (:mod:`hu_roi.io.cache`); it holds no
        patient names, so leave it out when identifiers are to be written.
    follow_links : bool
        Also index folders reached through symbolic links that leave the DICOM folder
        (:func:`hu_roi.io.dicom.iter_files`); by default they are skipped and reported.
    patient_codes : mapping DICOM PatientID -> study code, optional
        A pseudonym map (:mod:`hu_roi.pseudonym`): an ROI whose ``patient_id`` is the study
        code of its series' PatientID is not a ``patient-mismatch``
        (:func:`hu_roi.measure.patient_mismatch`).
    rtdose : sequence of path
        RTDOSE files: each is sampled on the measured series of its Frame of Reference
        (``dose_mean_gy``, ``dose_min_gy``, ``dose_max_gy``; :mod:`hu_roi.doselabels`).
    labels : sequence of str
        Vertebra label maps, ``PATH`` or ``SERIES=PATH`` (NIfTI or DICOM SEG): target ROIs
        are checked against the one of their series (``level-mismatch``,
        ``roi-outside-body``).
    prescription_gy : float, optional
        Prescribed dose (Gy): ``irradiated`` from the mean dose
        (:func:`hu_roi.doselabels.apply_prescription`); needs ``rtdose``.
    irradiated_fraction : float
        Fraction of the prescription from which a level is irradiated (default 0.5).

    Returns
    -------
    BatchResult

    Raises
    ------
    BatchInputError
        No such DICOM folder; no or invalid ROI files; a malformed scheduler address.
    DoseLabelError
        An RTDOSE or label map that fits no measured series (before any pixel is read).
    """
    from hu_roi.io import index_folder

    if isinstance(scheduler, str):  # before any work: never minutes of connection retries
        try:
            check_scheduler_address(scheduler)
        except ValueError as exc:
            raise BatchInputError(f"--scheduler: {exc}") from None

    root = Path(dicom_dir)
    if not root.exists():
        raise BatchInputError(f"no such DICOM folder: {root}")
    if prescription_gy is not None:
        if not rtdose:
            raise BatchInputError("--prescription-gy needs --rtdose (the dose to compare with)")
        if not (math.isfinite(prescription_gy) and prescription_gy > 0):
            raise BatchInputError(
                f"--prescription-gy must be a positive dose; got {prescription_gy}"
            )
    if not (math.isfinite(irradiated_fraction) and 0 < irradiated_fraction <= 1):
        raise BatchInputError(
            f"--irradiated-fraction must lie in (0, 1]; got {irradiated_fraction}"
        )
    roisets = load_roi_inputs(rois)
    idx = index_folder(
        root, progress=progress, cache=cache, workers=workers, follow_links=follow_links
    )
    items: list[_Item] = []
    results: dict[int, Measurement] = {}
    groups: dict[str, list[_Item]] = defaultdict(list)
    infos: dict[str, SeriesInfo] = {}
    # study date of each (patient, timepoint), learnt from ROIs that name their series: an
    # ROI without UID/series_key/study_date is then matched within that date only
    date_hint: dict[tuple[str, str | None], set[str]] = defaultdict(set)
    # one series rule with the viewer (hu_roi.series_lookup); old path-based keys of series
    # without UID still resolve, noted once per key and flagged on the row
    logger.info(
        "read %s with %s; indexed %s: %s, %d skipped",
        plural(len(roisets), "ROI file"),
        plural(sum(len(rs.rois) for _, rs in roisets), "ROI"),
        plural(idx.n_files, "file"),
        plural(len(idx.series), "series", "series"),
        len(idx.skipped),
    )
    resolver = SeriesResolver(idx.series)
    legacy: dict[int, str] = {}
    for _, rs in roisets:
        for roi in rs.rois:
            if roi.series_instance_uid or roi.series_key:
                mt = resolver.resolve(roi)
                if mt.info is not None and mt.info.study_date:
                    date_hint[(roi.patient_id, roi.timepoint)].add(mt.info.study_date)
    for f, rs in roisets:
        for roi in rs.rois:
            it = _Item(len(items), roi, rs.reader, str(f))
            items.append(it)
            probe = roi
            hint = date_hint.get((roi.patient_id, roi.timepoint), set())
            if (
                not (roi.series_instance_uid or roi.series_key or roi.study_date)
                and roi.timepoint
                and len(hint) == 1
            ):
                probe = replace(roi, study_date=next(iter(hint)))
            mt = resolver.resolve(probe)
            if mt.info is None:
                results[it.order] = failed_measurement(
                    roi, [mt.reason], detail=mt.detail, reader=rs.reader, roi_file=str(f)
                )
                continue
            if mt.how in LEGACY_HOWS:
                legacy[it.order] = mt.detail
            pid = patient_id_rule(roi, mt.info)
            if pid.code:
                results[it.order] = failed_measurement(
                    roi,
                    [pid.code],
                    info=mt.info,
                    detail=pid.detail,
                    reader=rs.reader,
                    roi_file=str(f),
                )
                continue
            if pid.patient_id != roi.patient_id:  # the ROI's empty ID filled from DICOM
                it = replace(it, roi=replace(roi, patient_id=pid.patient_id))
                items[it.order] = it
            why = patient_mismatch(roi, mt.info, patient_codes)
            if why:  # another patient's series: never measured and written as this one
                results[it.order] = failed_measurement(
                    roi,
                    ["patient-mismatch"],
                    info=mt.info,
                    detail=why,
                    reader=rs.reader,
                    roi_file=str(f),
                )
                continue
            infos[mt.info.series_key] = mt.info
            groups[mt.info.series_key].append(it)
    air_checks: dict[str, AirCheck] = {}
    accepted = tuple(dict.fromkeys([*ACCEPTED_PROBLEMS, *accept]))
    tasks = list(groups.items())
    # doses and label maps are bound to series from the headers, before any pixel is read:
    # one that fits no measured series stops the batch here with its reason
    measured = {k: infos[k] for k, _ in tasks}
    doses = bind_doses(rtdose, measured) if rtdose else {}
    label_maps = bind_labels(labels, measured) if labels else {}
    addons = {k: SeriesAddons(doses.get(k, ()), label_maps.get(k)) for k, _ in tasks}
    for k, a in addons.items():
        if a:
            logger.info(
                "series %s: %s%s",
                k,
                plural(len(a.doses), "RTDOSE"),
                f", label map {a.labels.path.name}" if a.labels else "",
            )
    for k, v in tasks:
        need: set[int] = set()
        for it in v:
            try:
                need.update(slices_needed(it.roi, infos[k]))
            except RoiPlacementError:
                pass  # a fail row of measure_series
        logger.info(
            "series %s (%s, %s): %s %s, reading %s%s",
            k,
            show(infos[k].series_description),
            plural(infos[k].n_slices, "slice"),
            plural(len(v), "ROI"),
            ", ".join(show(it.roi.roi_id) for it in v[:6]) + (" …" if len(v) > 6 else ""),
            plural(len(need), "slice"),
            f" {min(need)}-{max(need)}" if need else "",
        )
    # one task per series: in this process, on local processes (ProcessPoolExecutor) or
    # on a dask.distributed cluster (hu_roi.parallel.map_tasks); a task that raises turns
    # its ROIs into fail rows, the others go on
    done = map_tasks(
        measure_series,
        [(infos[k], v, accepted, addons[k] or None) for k, v in tasks],
        workers=workers,
        scheduler=scheduler,
        progress=progress,
        desc="measure",
        unpack=True,
    )
    for (k, v), tr in zip(tasks, done, strict=True):
        if tr.ok and tr.value is not None:
            rows, air = tr.value
        else:
            err = f"{type(tr.error).__name__}: {tr.error}".splitlines()[0]
            logger.error("series %s: measurement task failed: %s", k, err)
            rows = [_fail_row(it, ["series-load-failed"], infos[k], err) for it in v]
            air = None
        _collect(k, rows, air, results, air_checks)
    for i, note in legacy.items():
        results[i] = add_flags(results[i], LEGACY_FLAG, detail=note)
    # target ROIs that longitudinal cannot place: flagged on their rows (and counted)
    for it in items:
        lf = label_flags(it.roi)
        if lf:
            results[it.order] = add_flags(results[it.order], *lf)
    ordered = [results[i] for i in range(len(items))]
    calibrated, fits = apply_calibration(ordered, infos, air_checks)
    # a length does not depend on the HU scale or the scan technique: line rows keep their
    # own flags (series problems, labels), not the scan's calibration flags
    calibrated = [
        before if it.roi.shape.is_line else after
        for it, before, after in zip(items, ordered, calibrated, strict=True)
    ]
    if prescription_gy is not None:
        calibrated = apply_prescription(calibrated, prescription_gy, fraction=irradiated_fraction)
    if logger.isEnabledFor(logging.INFO):
        for m in calibrated:
            hu = (
                f", length {m.length_mm:.1f} mm"
                if m.length_mm is not None
                else f", mean {m.mean_hu:.1f} HU over {m.n_voxels} voxels"
            )
            flags = f" [{';'.join(m.qc_flags)}]" if m.qc_flags else ""
            logger.info("ROI %s: %s%s%s", show(m.roi_id), m.qc_status, hu, flags)
    meta = {
        "tool": f"hu-roi {__version__}",
        "command": "measure",
        "inputs": {
            "dicom_dir": str(root.resolve()),
            "roi_files": [{"path": str(f.resolve()), "sha256": _sha256(f)} for f, _ in roisets],
        },
        "settings": {
            "workers": workers,
            "scheduler": _scheduler_name(scheduler),
            "pseudonym_map": patient_codes is not None,
            "min_voxels": MIN_VOXELS,
            "min_target_area_mm2": MIN_TARGET_AREA_MM2,
            "padding_hu_limit": PADDING_HU_LIMIT,
            "cortical_hu": CORTICAL_HU,
            "cortical_fraction": CORTICAL_FRACTION,
            "heterogeneity_sd_hu": HETEROGENEITY_SD_HU,
            "heterogeneity_gap_hu": HETEROGENEITY_GAP_HU,
            "accepted_series_problems": list(accepted),
            "rtdose": [
                {"path": str(Path(d).resolve()), "sha256": _sha256(Path(d))} for d in rtdose
            ],
            "labels": {k: str(src.path.resolve()) for k, src in label_maps.items()},
            "prescription_gy": prescription_gy,
            "irradiated_dose_fraction": irradiated_fraction,
            "outside_body_fraction": OUTSIDE_BODY_FRACTION,
        },
        "n_files_indexed": idx.n_files,
        "n_series_indexed": len(idx.series),
        "n_series_measured": len(tasks),
        "n_files_skipped": len(idx.skipped),
        "phantom_fits": {
            k: {
                "slope_mg_cm3_per_hu": f.slope,
                "intercept_mg_cm3": f.intercept,
                "r2": f.r2,
                "n_inserts": f.n,
            }
            for k, f in fits.items()
        },
        "auto_air_checks": {
            k: {"mean_hu": a.mean_hu, "n_voxels": a.n_voxels, "ok": a.ok}
            for k, a in air_checks.items()
        },
    }
    return BatchResult(calibrated, meta, fits, air_checks)


def _scheduler_name(scheduler: str | object | None) -> str | None:
    """The scheduler's address for the provenance (a client: its scheduler's address)."""
    if scheduler is None or isinstance(scheduler, str):
        return scheduler
    addr = getattr(getattr(scheduler, "scheduler", None), "address", None)
    return str(addr) if addr else type(scheduler).__name__


def _collect(key, rows, air, results, air_checks) -> None:
    for order, m in rows:
        results[order] = m
    if air is not None:
        air_checks[key] = air


# --------------------------------------------------------------------------------------
# CLI
def add_measure_inputs(p: argparse.ArgumentParser) -> None:
    """The options that say what to measure, shared by ``measure`` and ``export-dicom``:
    ``--dicom``, ``--rois``, ``--accept``, ``--pseudonym-map``, ``--no-cache``,
    ``--follow-links`` (read back by :func:`measure_kwargs` and :func:`input_paths`)."""
    p.add_argument("--dicom", required=True, metavar="DICOM_DIR", help="DICOM folder")
    p.add_argument(
        "--rois",
        required=True,
        nargs="+",
        metavar="FILE_OR_DIR",
        help="ROI file(s) (*.rois.json) or folder(s) searched for them; the format is "
        "described in docs/roi_format.md (check a file with `hu-roi roi validate`)",
    )
    p.add_argument(
        "--accept",
        metavar="CODES",
        default="",
        help="comma-separated series problems to measure anyway, on top of "
        f"{','.join(ACCEPTED_PROBLEMS)} (e.g. duplicate-positions,mixed-orientation); "
        "rows keep a series-<problem> warning",
    )
    p.add_argument(
        "--pseudonym-map",
        metavar="MAP.csv",
        help="pseudonym map (patient_id,study_code; see hu-roi pseudonymize) for ROI files "
        "whose patient_id is the study code while DICOM holds the real PatientID; without "
        "it, an ROI whose patient_id differs from its series' PatientID is a "
        "patient-mismatch fail row",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="do not use the persistent header cache (see hu-roi index)",
    )
    p.add_argument(
        "--follow-links",
        action="store_true",
        help="also read folders that symbolic links inside DICOM_DIR point to outside it "
        "(by default such links are skipped and reported)",
    )


def input_paths(args: argparse.Namespace) -> list[tuple[str, str | Path]]:
    """Every input file or folder of a measuring command, for
    :class:`hu_roi.util.OutputSet` (no output may overwrite one)."""
    out: list[tuple[str, str | Path]] = [("the ROI file or folder", r) for r in args.rois]
    out.append(("DICOM_DIR", args.dicom))
    if getattr(args, "pseudonym_map", None):
        out.append(("the pseudonym map", args.pseudonym_map))
    out += [("the RTDOSE", d) for d in getattr(args, "rtdose", None) or ()]
    from hu_roi.doselabels import parse_label_spec

    out += [("the label map", parse_label_spec(s)[1]) for s in getattr(args, "labels", None) or ()]
    return out


def measure_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`measure_batch` keywords of :func:`add_measure_inputs`' options."""
    return {
        "accept": _accept_codes(getattr(args, "accept", "")),
        "cache": _header_cache(args),
        "patient_codes": _patient_codes(args),
        "follow_links": getattr(args, "follow_links", False),
    }


def add_measure_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hu-roi measure`` to the CLI (``set_defaults(func=run_measure)``)."""
    p = subparsers.add_parser(
        "measure",
        help="measure stored ROIs on a DICOM folder (batch) into a CSV",
        description="Match every ROI of the ROI file(s) to its series in DICOM_DIR, read only "
        "the slices the ROIs touch, and write one CSV row per ROI (failed ROIs are rows with "
        "qc_status=fail and the reason). A sidecar <CSV>.meta.json records provenance.",
    )
    add_measure_inputs(p)
    p.add_argument("--out", metavar="FILE.csv", help="output CSV (default: stdout)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="local worker processes (one task per series; also read the headers the "
        "cache does not hold; default 1)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the per-series tasks on a running dask.distributed scheduler "
        "(e.g. tcp://10.0.0.5:8786); workers must see the DICOM files under the same paths",
    )
    p.add_argument(
        "--rtdose",
        action="append",
        default=[],
        metavar="RTDOSE.dcm",
        help="RT dose (repeatable): dose_mean_gy/min/max at each ROI's voxel centres on the "
        "series of its Frame of Reference (several doses of one series are summed); see "
        "docs/dose_and_labels.md",
    )
    p.add_argument(
        "--prescription-gy",
        type=float,
        metavar="GY",
        help="prescribed dose: a level whose ROI mean dose is at least --irradiated-fraction "
        "of it is irradiated; an empty irradiated label is filled (irradiated-from-dose), a "
        "contradicting one flagged (irradiated-mismatch); needs --rtdose",
    )
    p.add_argument(
        "--irradiated-fraction",
        type=float,
        default=IRRADIATED_DOSE_FRACTION,
        metavar="F",
        help=f"fraction of --prescription-gy from which a level is irradiated (default "
        f"{IRRADIATED_DOSE_FRACTION:g}: the 50%% isodose is the field edge)",
    )
    p.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="[SERIES=]LABELMAP",
        help="vertebra label map (NIfTI on the CT's grid, e.g. TotalSegmentator, or DICOM "
        "SEG; repeatable): target ROIs are flagged level-mismatch or roi-outside-body; a "
        "NIfTI goes to the measured series on whose grid it lies (name it as SERIES=PATH "
        "when several share the grid)",
    )
    add_common_options(p)
    p.add_argument(
        "--include-identifiers",
        action="store_true",
        help="also write patient name and birth date (off by default)",
    )
    add_formula_escape_option(p)
    p.set_defaults(func=run_measure)


def _accept_codes(text: str) -> tuple[str, ...]:
    """Parse ``--accept a,b``; unknown codes are an input error naming the known ones."""
    from hu_roi.series import PROBLEM_CODES

    codes = tuple(c.strip() for c in (text or "").split(",") if c.strip())
    unknown = [c for c in codes if c not in PROBLEM_CODES]
    if unknown:
        from hu_roi.util import show

        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise BatchInputError(
            f"unknown problem code(s) for --accept: {', '.join(map(show, unknown[:5]))}{more}; "
            f"known: {', '.join(PROBLEM_CODES)}"
        )
    return codes


def _header_cache(args: argparse.Namespace) -> object | None:
    """The default header cache, unless --no-cache or identifiers are asked for.

    The cache never stores patient names or birth dates, so ``--include-identifiers``
    reads every header itself.
    """
    if getattr(args, "no_cache", False) or getattr(args, "include_identifiers", False):
        return None
    from hu_roi.io.cache import HeaderCache

    return HeaderCache.default()


def _scheduler_client(args: argparse.Namespace) -> object | None:
    """A client of ``--scheduler`` (None without it), made before any work: a malformed
    address or a scheduler that does not answer is one line and exit 2 at once."""
    address = getattr(args, "scheduler", None)
    if address is None:
        return None
    try:
        check_scheduler_address(address)
        return connect_scheduler(address)
    except (ValueError, OSError) as exc:
        raise BatchInputError(f"--scheduler: {exc}") from None


def _patient_codes(args: argparse.Namespace) -> dict[str, str] | None:
    """``--pseudonym-map``: DICOM PatientID -> study code (None without the option)."""
    path = getattr(args, "pseudonym_map", None)
    if path is None:
        return None
    from hu_roi.pseudonym import load_pseudonyms

    return dict(load_pseudonyms(path).codes)


def run_measure(args: argparse.Namespace) -> int:
    """Run ``hu-roi measure``; returns the exit status (0 = ran).

    Raises :class:`BatchInputError` (a :class:`HuRoiError`) when it cannot run at all; the
    CLI prints it as one line on stderr and exits 2.
    """
    from hu_roi.export import add_measurements_csv, meta_path
    from hu_roi.util import OutputSet, printable, show

    if getattr(args, "scheduler", None) is not None:  # malformed: one line, before any work
        try:
            check_scheduler_address(args.scheduler)
        except ValueError as exc:
            raise BatchInputError(f"--scheduler: {exc}") from None
    if args.workers < 1:
        raise BatchInputError(f"--workers must be ≥ 1; got {args.workers}")
    dicom = Path(args.dicom)
    if not dicom.exists():
        raise BatchInputError(f"no such DICOM folder: {printable(dicom)}")
    # refuse an output that is an input (an ROI file, a DICOM file) before measuring
    out = args.out or "-"
    outs = OutputSet(input_paths(args))
    outs.check(meta_path(out), sidecar_of=out)
    kwargs = measure_kwargs(args)
    if getattr(args, "prescription_gy", None) is not None and not getattr(args, "rtdose", None):
        raise BatchInputError("--prescription-gy needs --rtdose (the dose to compare with)")
    client = _scheduler_client(args)  # connected before any work
    try:
        res = measure_batch(
            dicom,
            args.rois,
            workers=args.workers,
            scheduler=client,
            progress=not getattr(args, "quiet", False),
            rtdose=getattr(args, "rtdose", None) or (),
            labels=getattr(args, "labels", None) or (),
            prescription_gy=getattr(args, "prescription_gy", None),
            irradiated_fraction=getattr(args, "irradiated_fraction", IRRADIATED_DOSE_FRACTION),
            **kwargs,
        )
    finally:
        if client is not None:
            client.close()  # type: ignore[attr-defined]
    meta = dict(res.meta)
    meta["argv"] = sys.argv
    with outs:
        add_measurements_csv(
            outs,
            res.measurements,
            out,
            include_identifiers=args.include_identifiers,
            formula_escape=getattr(args, "formula_escape", True),
            meta=meta,
        )
    if not getattr(args, "quiet", False):
        n = len(res.measurements)
        n_fail = sum(m.qc_status == "fail" for m in res.measurements)
        n_warn = sum(m.qc_status == "warn" for m in res.measurements)
        unplaced = sum(
            1 for m in res.measurements if {"no-timepoint", "no-level"} & set(m.qc_flags)
        )
        print(
            f"hu-roi measure: {plural(n, 'ROI')} ({n - n_fail - n_warn} pass, {n_warn} warn, "
            f"{n_fail} fail) on {plural(res.meta['n_series_measured'], 'series', 'series')}"
            + (
                f"; {plural(unplaced, 'target ROI')} without timepoint or level "
                "(longitudinal cannot use them)"
                if unplaced
                else ""
            ),
            file=sys.stderr,
        )
        for m in res.measurements:
            if m.qc_status == "fail":  # show(): an roi_id with a newline forges no line
                print(f"  fail {show(m.roi_id)}: {';'.join(m.qc_flags)}", file=sys.stderr)
        if out != "-":
            print(f"  wrote {printable(out)}", file=sys.stderr)
    return 0
