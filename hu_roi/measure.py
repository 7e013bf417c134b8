"""HU statistics of one ROI on one Volume, with ROI quality flags.

:func:`measure_roi` is *the* measurement: the napari viewer and the batch command both call
it, so an ROI measured interactively and in batch gives identical numbers.  A line ROI (a
vertebral height) is measured by :func:`measure_line` (``measure_roi`` hands it on): its
length in mm from the geometry alone, with empty HU columns.

Every qc flag code the measurement engine can emit is declared once in :data:`QC_FLAGS`
(severity, meaning, source of the threshold); ``docs/qc_flags.md`` is the same table and a
test keeps the two in sync.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hu_roi.rasterize import EPS_MM, RoiMask, RoiPlacementError, rasterize_roi
from hu_roi.roi import HEIGHT_KINDS, Roi, frame_hint
from hu_roi.series import PROBLEM_CODES, SeriesInfo
from hu_roi.util import show
from hu_roi.volume import Volume

__all__ = [
    "QcFlag",
    "QC_FLAGS",
    "SEVERITY_ORDER",
    "MIN_VOXELS",
    "MIN_TARGET_AREA_MM2",
    "PADDING_HU_LIMIT",
    "CORTICAL_HU",
    "CORTICAL_FRACTION",
    "HETEROGENEITY_SD_HU",
    "HETEROGENEITY_GAP_HU",
    "Measurement",
    "measure_roi",
    "measure_line",
    "heterogeneity_flags",
    "failed_measurement",
    "patient_mismatch",
    "label_flags",
    "qc_status_of",
    "severity_of",
    "add_flags",
]

#: Fewer voxels than this: statistics unstable (project choice; a 5 × 4 pixel patch).
MIN_VOXELS = 20
#: Minimum area of a 2D *target* ROI (mm²), project choice: a circle of 8 mm diameter
#: (≈ 50 mm²).  Trabecular ROIs in vertebral-body HU studies are usually several hundred
#: mm² (as large as possible while avoiding the cortex).
MIN_TARGET_AREA_MM2 = 50.0
#: Voxels at or below this HU are padding / outside the reconstruction field (real tissue
#: and air are ≥ −1024 HU; scanners pad with −2000, −3024 or −32768).
PADDING_HU_LIMIT = -2000.0
#: Voxels above this HU in a *target* ROI are counted as cortical bone (project heuristic:
#: cortical bone reads ≳ 1000 HU at 120 kVp, trabecular bone ≈ 100–300 HU).
CORTICAL_HU = 1000.0
#: Flag a target ROI when more than this fraction of voxels is above CORTICAL_HU.
CORTICAL_FRACTION = 0.05
#: A target ROI whose sample SD exceeds this (HU) mixes tissues (``roi-heterogeneous``).
#: Project choice, set from the real Siemens series of the test data (120 kVp, Br38f,
#: 3 mm): 879 trabecular circles of radius 3-8 mm inside the T11/T12 vertebral bodies had
#: SD ≤ 77 HU (99th percentile), while an ROI half on cortex reads SD ≈ 360 HU.
HETEROGENEITY_SD_HU = 150.0
#: ... or whose mean and median differ by more than this (HU): a bright minority (cortex,
#: endplate) drags the mean away from the median.  Same calibration: |mean − median| ≤ 36
#: HU in all those trabecular circles, 264 HU in the ROI half on cortex reported in issue
#: 13 (n 32, mean 314.6, median 51).
HETEROGENEITY_GAP_HU = 50.0

SEVERITY_ORDER = {"pass": 0, "info": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True)
class QcFlag:
    """One qc flag code: severity (``info``/``warn``/``fail``), meaning, threshold source."""

    code: str
    severity: str
    meaning: str
    source: str


def _f(code: str, severity: str, meaning: str, source: str) -> tuple[str, QcFlag]:
    return code, QcFlag(code, severity, meaning, source)


#: Every qc code of the measurement CSV (``series-<problem>`` stands for one code per
#: series problem of :data:`hu_roi.series.PROBLEM_CODES`).
QC_FLAGS: dict[str, QcFlag] = dict(
    [
        # -- placing the ROI (rasterize) -------------------------------------------------
        _f(
            "series-not-found",
            "fail",
            "No series in the DICOM folder matches the ROI (UID, series_key, or the only CT series of the patient)",
            "matching rule, hu_roi.roi.match_series",
        ),
        _f(
            "series-ambiguous",
            "fail",
            "Several series could be the ROI's; the ROI needs series_instance_uid or series_key",
            "matching rule, hu_roi.roi.match_series",
        ),
        _f(
            "series-key-legacy",
            "info",
            "The ROI names its series (no SeriesInstanceUID) by an old path-based series_key; matched by the folder or by patient, study date and extent (see the detail column)",
            "hu_roi.series_lookup",
        ),
        _f(
            "patient-id-missing",
            "fail",
            "A target ROI has no patient_id (the study code) and the DICOM PatientID is empty: the row cannot enter the longitudinal table",
            "hu_roi.series_lookup.patient_id_rule",
        ),
        _f(
            "series-refused",
            "fail",
            "The series has a problem that makes measurements wrong (see the series-<problem> flag) and was not loaded",
            "hu_roi.series.REFUSING_PROBLEMS",
        ),
        _f(
            "series-load-failed",
            "fail",
            "The series' pixel data could not be read, or its measurement task failed (see the detail column)",
            "hu_roi.io.load_series error",
        ),
        _f(
            "roi-outside-image",
            "fail",
            "The ROI covers no voxel of the image: its plane (a sphere's centre) lies beyond the first/last slice by more than half the slice spacing (the detail gives the distance in mm), or it lies entirely outside the rows/columns",
            "voxel rule of docs/roi_format.md",
        ),
        _f(
            "roi-in-gap",
            "fail",
            "The ROI's plane (a sphere's centre) lies between the first and last slice but farther than half the nominal slice spacing from every slice present (missing slices): not measured on a far slice; the detail gives the distance in mm",
            "hu_roi.rasterize.max_plane_distance: half the series' median slice step (+1 %, the index's uniformity tolerance)",
        ),
        _f(
            "roi-slice-tie",
            "fail",
            "A 2D ROI's plane is equally far (within 0.001 mm) from two slices, or two slices share the nearest position",
            "docs/roi_format.md: ties are an error; tolerance hu_roi.rasterize.TIE_TOL_MM",
        ),
        _f(
            "roi-not-parallel",
            "fail",
            "A polygon is not parallel to the slices (vertices span > 0.1 mm along the slice normal)",
            "hu_roi.rasterize.PARALLEL_TOL_MM (project choice)",
        ),
        _f(
            "roi-too-large",
            "fail",
            "The ROI spans more than 8192 pixels (probably wrong units)",
            "hu_roi.rasterize.MAX_BOX_PIXELS",
        ),
        _f(
            "slice-not-loaded",
            "fail",
            "The slice the ROI lies on was not loaded (internal error of a partial load)",
            "hu_roi.rasterize",
        ),
        _f(
            "roi-partly-outside",
            "warn",
            "Some voxel centres of the shape lie outside the image rows/columns, or a sphere reaches beyond the first/last slice; only the inside is measured",
            "voxel rule of docs/roi_format.md",
        ),
        _f(
            "roi-partly-in-gap",
            "warn",
            "A sphere whose centre is imaged reaches into a gap of missing slices; only the imaged part is measured",
            "hu_roi.rasterize.max_plane_distance",
        ),
        _f(
            "patient-mismatch",
            "fail",
            "The ROI's patient_id and the series' PatientID are both set and differ (and no pseudonym map given with --pseudonym-map links them): the ROI names another patient's series; the detail names both",
            "hu_roi.measure.patient_mismatch",
        ),
        _f(
            "non-finite-hu",
            "fail",
            "Some voxel values or the statistics of the ROI are not finite numbers (an absurd RescaleSlope/RescaleIntercept overflows): no statistics",
            "hu_roi.measure.measure_roi",
        ),
        # -- ROI labels (batch) ----------------------------------------------------------
        _f(
            "no-timepoint",
            "warn",
            "A target or height ROI has no timepoint: measured, but hu-roi longitudinal cannot place it (counted in the measure summary)",
            "hu_roi.measure.label_flags",
        ),
        _f(
            "no-level",
            "warn",
            "A target or height ROI has no level: measured, but hu-roi longitudinal cannot place it (counted in the measure summary)",
            "hu_roi.measure.label_flags",
        ),
        _f(
            "proposed-unconfirmed",
            "warn",
            "The ROI is a proposal (proposed: true, e.g. from hu-roi propagate) that the reader has not confirmed yet",
            "ROI file (hu_roi.measure.label_flags)",
        ),
        # -- ROI quality (measure) -------------------------------------------------------
        _f(
            "roi-on-padding",
            "warn",
            "Some voxels are padding: equal to the series' padding value or ≤ −2000 HU",
            "hu_roi.measure.PADDING_HU_LIMIT; PixelPaddingValue",
        ),
        _f(
            "too-few-voxels",
            "warn",
            "Fewer than 20 voxels: statistics unstable",
            "hu_roi.measure.MIN_VOXELS (project choice)",
        ),
        _f(
            "area-below-minimum",
            "warn",
            "A 2D target ROI covers less than 50 mm² (≈ 8 mm circle)",
            "hu_roi.measure.MIN_TARGET_AREA_MM2 (project choice; trabecular ROIs are usually several hundred mm²)",
        ),
        _f(
            "roi-heterogeneous",
            "warn",
            "A target ROI mixes tissues: its SD exceeds 150 HU or its mean and median differ by more than 50 HU (e.g. an ROI partly on the cortex or an endplate, whose bright voxels pull the mean up while fewer than 5 % exceed 1000 HU); check its placement",
            "hu_roi.measure.HETEROGENEITY_SD_HU, HETEROGENEITY_GAP_HU (project choice, calibrated on real trabecular ROIs: SD ≤ 77 HU, |mean − median| ≤ 36 HU; docs/qc_flags.md)",
        ),
        # -- label map and RT dose (measure --labels / --rtdose; hu_roi.doselabels) -----
        _f(
            "level-mismatch",
            "warn",
            "More than half of a target ROI's voxels lie on another labelled vertebra than its level (measure --labels): the ROI or its level is wrong, or the label map numbers the vertebrae differently",
            "hu_roi.doselabels.MISMATCH_FRACTION (majority rule)",
        ),
        _f(
            "roi-outside-body",
            "warn",
            "More than 5 % of a target ROI's voxels lie off its level's label in the label map (measure --labels): it reaches into the disc, the canal or soft tissue",
            "hu_roi.doselabels.OUTSIDE_BODY_FRACTION (project choice: a label's edge is uncertain by about a voxel)",
        ),
        _f(
            "labels-unusable",
            "warn",
            "The label map bound to this series could not be put on the slices read (the detail says why): no label check on this row",
            "hu_roi.io.labels",
        ),
        _f(
            "dose-outside-grid",
            "warn",
            "Some voxel centres of the ROI lie outside the RT dose grid (measure --rtdose): no dose written for it",
            "RTDOSE grid extent",
        ),
        _f(
            "irradiated-from-dose",
            "info",
            "The ROI had no irradiated label; it was set from the dose (mean dose ≥ 50 % of --prescription-gy = irradiated), for its level on the planning CT when the row has no dose of its own",
            "hu_roi.doselabels.IRRADIATED_DOSE_FRACTION (50 % isodose = field edge)",
        ),
        _f(
            "irradiated-mismatch",
            "warn",
            "The reader's irradiated label contradicts the dose (mean dose ≥ 50 % of --prescription-gy = irradiated); the reader's label is kept",
            "hu_roi.doselabels.IRRADIATED_DOSE_FRACTION (50 % isodose = field edge)",
        ),
        _f(
            "line-outside-image",
            "fail",
            "An end point of a line ROI (a vertebral height) lies outside the image volume: beyond the first/last slice by more than half the slice spacing, or outside the rows/columns by more than half a pixel; no length is written (the detail names the point and how far out it is)",
            "image extent of the series (voxel centres ± half a voxel), docs/roi_format.md",
        ),
        _f(
            "cortical-contamination",
            "warn",
            "More than 5 % of the voxels of a target ROI are above 1000 HU (cortical bone or sclerosis in the ROI)",
            "hu_roi.measure.CORTICAL_HU, CORTICAL_FRACTION (project heuristic)",
        ),
        _f(
            "series-<problem>",
            "warn",
            "The series carries the named problem code (e.g. series-missing-slices, series-gantry-tilt, series-no-rescale); see hu_roi.series.PROBLEM_CODES. series-empty-uid is info only",
            "hu-roi index",
        ),
        # -- calibration (calibration.py) ------------------------------------------------
        _f(
            "cal-air-off",
            "warn",
            "A reference-air ROI on this scan reads outside −1000 ± 50 HU (flag set on every ROI of the scan)",
            "hu_roi.calibration.EXPECTED; air is −1000 HU by definition of the HU scale, ±50 HU project tolerance",
        ),
        _f(
            "cal-water-off",
            "warn",
            "A reference-water ROI reads outside 0 ± 7 HU",
            "ACR CT Accreditation Program phantom criterion: water 0 ± 7 HU",
        ),
        _f(
            "cal-fat-off",
            "warn",
            "A reference-fat (subcutaneous) ROI reads outside −130 … −70 HU",
            "typical subcutaneous fat −100 HU; range is a project choice",
        ),
        _f(
            "cal-muscle-off",
            "warn",
            "A reference-muscle (paraspinal) ROI reads outside 20 … 70 HU",
            "typical skeletal muscle ≈ +40 HU; range is a project choice",
        ),
        _f(
            "cal-air-auto-off",
            "warn",
            "No reference-air ROI: air found automatically outside the body (below −500 HU, not padding, connected to the image border, eroded 2 px; ≥ 200 voxels) reads outside −1000 ± 50 HU",
            "hu_roi.calibration.auto_air_check heuristic",
        ),
        _f(
            "cal-air-auto-unavailable",
            "info",
            "No reference-air ROI, and the automatic air check could not run (fewer than 200 air voxels outside the body, or field of view < 150 mm)",
            "hu_roi.calibration.auto_air_check heuristic",
        ),
        _f(
            "rescale-type-not-hu",
            "warn",
            "RescaleType is present and not HU",
            "DICOM PS3.3 C.11.1.1.2",
        ),
        _f(
            "rescale-unusual",
            "warn",
            "RescaleSlope ≤ 0 or > 10, or RescaleIntercept outside −10000 … 1000, on the series' first image or on any slice read",
            "project sanity limits (typical slope 1, intercept −1024/−1000/−8192/0)",
        ),
        _f(
            "contrast-agent",
            "warn",
            "ContrastBolusAgent is recorded: iodine raises vertebral HU (by about 10–25 HU)",
            "DICOM ContrastBolusAgent (0018,0010)",
        ),
        _f(
            "kvp-differs-from-T0",
            "warn",
            "kVp differs from the patient's baseline (T0) scan: trabecular HU moves by several percent",
            "header comparison vs T0",
        ),
        _f(
            "kernel-differs-from-T0",
            "warn",
            "Convolution kernel differs from the T0 scan",
            "header comparison vs T0",
        ),
        _f(
            "thickness-differs-from-T0",
            "warn",
            "Slice thickness differs from the T0 scan by more than 0.01 mm",
            "header comparison vs T0",
        ),
        _f(
            "scanner-differs-from-T0",
            "warn",
            "Manufacturer or model differs from the T0 scan",
            "header comparison vs T0",
        ),
        _f(
            "contrast-differs-from-T0",
            "warn",
            "Contrast agent recorded on one of this scan and the T0 scan but not the other",
            "header comparison vs T0",
        ),
        _f(
            "phantom-fit-poor",
            "warn",
            "Phantom calibration HU→mg/cm³ has R² < 0.98",
            "hu_roi.calibration.PHANTOM_MIN_R2 (project choice)",
        ),
        _f(
            "phantom-too-few-inserts",
            "warn",
            "Fewer than 2 phantom inserts with density_mg_cm3 on the scan: no calibration",
            "a line needs two points",
        ),
        _f("phantom-no-density", "warn", "A phantom-<name> ROI has no density_mg_cm3", "ROI file"),
    ]
)


def severity_of(code: str) -> str:
    """Severity of a qc code (``info``, ``warn`` or ``fail``); unknown codes are ``warn``."""
    if code in QC_FLAGS:
        return QC_FLAGS[code].severity
    if code == "series-empty-uid":
        return "info"
    if code.startswith("series-") and code[len("series-") :] in PROBLEM_CODES:
        return "warn"
    return "warn"


def qc_status_of(flags: Iterable[str]) -> str:
    """``fail`` if any flag fails, else ``warn`` if any warns, else ``pass``."""
    worst = 0
    for f in flags:
        worst = max(worst, SEVERITY_ORDER[severity_of(f)])
    return {0: "pass", 1: "warn", 2: "fail"}[worst]


@dataclass(frozen=True)
class Measurement:
    """One ROI's measurement: a row of the measurement CSV.

    Statistics are over the ROI's voxels ``x_1..x_n`` (HU after rescale, float64):

    - ``mean_hu`` = Σ x_i / n (``math.fsum``, correctly rounded)
    - ``sd_hu`` = sqrt(Σ (x_i − mean)² / (n − 1)) (sample SD; NaN for n < 2)
    - ``median_hu``, ``p5_hu``, ``p95_hu``: percentiles with linear interpolation between
      order statistics (R's ``quantile(type = 7)``, numpy's default)
    - ``area_mm2`` = n · ΔR · ΔC for 2D shapes (None for spheres)
    - ``volume_mm3`` = n · ΔR · ΔC · slice spacing for spheres (None for 2D shapes)

    ``slice_index`` is the index (in the full series, sorted by position) of the slice a 2D
    shape lies on; for a sphere, of the touched slice nearest to its centre (all touched
    slices are in ``slice_indices``).  ``slice_position_mm`` is that slice's position along
    the slice normal.  ``cortical_fraction`` is the fraction of voxels above
    :data:`CORTICAL_HU`; ``n_outside`` the shape's voxel centres outside the image;
    ``n_padding`` the padding voxels included.

    ``length_mm`` is the length of a line ROI (a vertebral height): the Euclidean distance
    between its two points in mm (None for area and volume ROIs, whose HU columns are
    filled instead; a line row has n_voxels 0 and empty HU columns).

    ``dose_mean_gy``, ``dose_min_gy``, ``dose_max_gy`` (Gy) are the RT dose at the ROI's
    voxel centres (``hu-roi measure --rtdose``, :mod:`hu_roi.doselabels`); None without a
    dose for the series.

    ``qc_flags`` are short codes (see :data:`QC_FLAGS`); ``qc_status`` is derived from them.
    """

    roi_id: str
    patient_id: str
    timepoint: str | None
    study_date: str
    series_instance_uid: str
    level: str | None
    irradiated: bool | None
    lesion_type: str | None
    kind: str
    shape: str
    slice_index: int | None
    n_voxels: int
    area_mm2: float | None
    volume_mm3: float | None
    mean_hu: float
    sd_hu: float
    median_hu: float
    min_hu: float
    max_hu: float
    kvp: float | None
    kernel: str
    slice_thickness_mm: float | None
    manufacturer: str
    model: str
    qc_flags: tuple[str, ...]
    reader: str
    p5_hu: float = math.nan
    p95_hu: float = math.nan
    bmd_mg_cm3: float | None = None
    density_mg_cm3: float | None = None
    series_key: str = ""
    roi_file: str = ""
    slice_position_mm: float | None = None
    slice_indices: tuple[int, ...] = ()
    n_outside: int = 0
    n_padding: int = 0
    cortical_fraction: float = math.nan
    length_mm: float | None = None
    dose_mean_gy: float | None = None
    dose_min_gy: float | None = None
    dose_max_gy: float | None = None
    contrast_agent: str = ""
    detail: str = ""
    patient_name: str = field(default="", repr=False)
    patient_birth_date: str = field(default="", repr=False)

    @property
    def qc_status(self) -> str:
        """``pass``, ``warn`` or ``fail`` from :attr:`qc_flags`."""
        return qc_status_of(self.qc_flags)


def add_flags(m: Measurement, *codes: str, detail: str = "") -> Measurement:
    """A copy of ``m`` with ``codes`` added (no duplicates, order kept)."""
    flags = list(m.qc_flags)
    for c in codes:
        if c not in flags:
            flags.append(c)
    d = m.detail if not detail else (f"{m.detail}; {detail}" if m.detail else detail)
    return replace(m, qc_flags=tuple(flags), detail=d)


def _series_fields(info: SeriesInfo | None) -> dict[str, Any]:
    if info is None:
        return {
            "study_date": "",
            "series_instance_uid": "",
            "kvp": None,
            "kernel": "",
            "slice_thickness_mm": None,
            "manufacturer": "",
            "model": "",
            "series_key": "",
            "contrast_agent": "",
            "patient_name": "",
            "patient_birth_date": "",
        }
    return {
        "study_date": info.study_date,
        "series_instance_uid": info.series_instance_uid,
        "kvp": info.kvp,
        "kernel": info.kernel,
        "slice_thickness_mm": info.slice_thickness_mm,
        "manufacturer": info.manufacturer,
        "model": info.model,
        "series_key": info.series_key,
        "contrast_agent": info.contrast_agent,
        "patient_name": info.patient_name,
        "patient_birth_date": info.patient_birth_date,
    }


def _identity_fields(roi: Roi, info: SeriesInfo | None) -> dict[str, Any]:
    """The ROI's labels and its series' header facts (the ROI's own ids fill the gaps)."""
    sf = _series_fields(info)
    for k in ("series_instance_uid", "series_key", "study_date"):
        if not sf[k]:
            sf[k] = getattr(roi, k)
    return dict(
        roi_id=roi.roi_id,
        patient_id=roi.patient_id,
        timepoint=roi.timepoint,
        level=roi.level,
        irradiated=roi.irradiated,
        lesion_type=roi.lesion_type,
        kind=roi.kind,
        shape=roi.shape.type,
        density_mg_cm3=roi.density_mg_cm3,
        **sf,
    )


def _series_problem_flags(info: SeriesInfo | None) -> list[str]:
    if info is None:
        return []
    return [f"series-{p}" for p in info.problems]


def failed_measurement(
    roi: Roi,
    codes: Iterable[str],
    *,
    info: SeriesInfo | None = None,
    detail: str = "",
    reader: str = "",
    roi_file: str = "",
) -> Measurement:
    """The row of an ROI that could not be measured (qc_status ``fail``, empty statistics)."""
    flags = list(dict.fromkeys([*codes, *_series_problem_flags(info)]))
    if (
        "roi-outside-image" in flags or "line-outside-image" in flags
    ) and info is not None:  # where the image is; RAS hint
        hint = frame_hint(roi.shape, info)
        detail = f"{detail}; {hint}" if detail and hint else detail or hint
    return _voxel_free_row(roi, info, flags, reader=reader, roi_file=roi_file, detail=detail)


def _voxel_free_row(
    roi: Roi,
    info: SeriesInfo | None,
    flags: Iterable[str],
    *,
    reader: str,
    roi_file: str,
    detail: str = "",
    length_mm: float | None = None,
) -> Measurement:
    """A row without voxels (empty HU statistics): a failed ROI, or a height line."""
    nan = math.nan
    return Measurement(
        slice_index=None,
        n_voxels=0,
        area_mm2=None,
        volume_mm3=None,
        mean_hu=nan,
        sd_hu=nan,
        median_hu=nan,
        min_hu=nan,
        max_hu=nan,
        qc_flags=tuple(flags),
        reader=reader,
        roi_file=roi_file,
        detail=detail,
        length_mm=length_mm,
        **_identity_fields(roi, info),
    )


def _stats(x: np.ndarray) -> dict[str, Any]:
    """Statistics of ``x`` (formulas in :class:`Measurement`).

    Raises
    ------
    _NonFinite
        A value or a statistic is not a finite number (the caller makes it a fail row).
    """
    n = x.size
    if n == 0:
        nan = math.nan
        return dict(
            mean_hu=nan, sd_hu=nan, median_hu=nan, min_hu=nan, max_hu=nan, p5_hu=nan, p95_hu=nan
        )
    n_bad = int(np.count_nonzero(~np.isfinite(x)))
    if n_bad:
        raise _NonFinite(f"{n_bad} of {n} voxel values are not finite numbers")
    try:
        # numpy would warn on overflow (squares beyond 1e308); the condition becomes the
        # row's fail flag instead
        with np.errstate(all="ignore"):
            mean = math.fsum(x.tolist()) / n
            sq = math.fsum(((x - mean) ** 2).tolist()) if n > 1 else math.nan
            sd = math.sqrt(sq / (n - 1)) if n > 1 else math.nan
            p5, med, p95 = np.percentile(x, [5.0, 50.0, 95.0])
    except (OverflowError, ValueError) as exc:  # fsum: intermediate overflow
        raise _NonFinite(f"the statistics overflow ({exc})") from None
    if not all(map(math.isfinite, (mean, med, p5, p95))) or (n > 1 and not math.isfinite(sd)):
        raise _NonFinite("the statistics overflow (|HU| too large)")
    return dict(
        mean_hu=float(mean),
        sd_hu=float(sd),
        median_hu=float(med),
        min_hu=float(x.min()),
        max_hu=float(x.max()),
        p5_hu=float(p5),
        p95_hu=float(p95),
    )


class _NonFinite(ValueError):
    """The voxel values or statistics of an ROI are not finite (message: which)."""


def patient_mismatch(
    roi: Roi, info: SeriesInfo | None, codes: Mapping[str, str] | None = None
) -> str | None:
    """Why the ROI and its series belong to different patients, or None when they do not.

    They differ when the ROI's ``patient_id`` and the series' PatientID are both non-empty
    and differ -- unless ``codes`` (a pseudonym map, DICOM PatientID → study code, see
    :mod:`hu_roi.pseudonym`) gives the ROI's ``patient_id`` as the study code of that
    PatientID.  Surrounding spaces are ignored; case is not.

    Returns
    -------
    str or None
        The detail for a ``patient-mismatch`` fail row, naming both IDs (each cut to about
        80 characters).
    """
    if info is None:
        return None
    rid, did = roi.patient_id.strip(), info.patient_id.strip()
    if not rid or not did or rid == did:
        return None
    if codes is not None:
        code = codes.get(did)
        if code == rid:
            return None
        return f"ROI patient_id {show(rid)} is neither the series' PatientID {show(did)} nor " + (
            f"its study code {show(code)}"
            if code is not None
            else "a study code of it (the PatientID is not in the pseudonym map)"
        )
    return (
        f"ROI patient_id {show(rid)} differs from the series' PatientID {show(did)}; if the ROI "
        "holds study codes, give the pseudonym map (--pseudonym-map MAP.csv)"
    )


def label_flags(roi: Roi) -> list[str]:
    """``proposed-unconfirmed`` for an unconfirmed proposal (any kind), and ``no-timepoint`` /
    ``no-level`` for a target or height ROI lacking them (longitudinal needs both)."""
    flags = ["proposed-unconfirmed"] if roi.proposed else []
    if roi.kind != "target" and roi.kind not in HEIGHT_KINDS:
        return flags
    if not roi.timepoint:
        flags.append("no-timepoint")
    if not roi.level:
        flags.append("no-level")
    return flags


def measure_roi(
    volume: Volume,
    roi: Roi,
    *,
    reader: str = "",
    roi_file: str = "",
    mask: RoiMask | None = None,
) -> Measurement:
    """Measure one ROI on a Volume: HU statistics and ROI quality flags.

    This is the one measurement function of hu-roi (viewer and batch both call it).

    Parameters
    ----------
    volume : Volume
        Full or partial volume holding the slices the ROI touches (HU after rescale).
    roi : Roi
    reader : str
        Reader of the ROI set (copied to the row).
    roi_file : str
        Path of the ROI file (provenance column).
    mask : RoiMask, optional
        A mask already computed with :func:`hu_roi.rasterize.rasterize_roi` for this
        volume and ROI (saves recomputing it).

    Returns
    -------
    Measurement
        Statistics over the selected voxels (formulas in :class:`Measurement`), or, when
        the ROI cannot be placed (tie, outside the image, ...), a row with
        ``qc_status == "fail"`` and the reason code in ``qc_flags``.
    """
    if roi.shape.is_line:  # a height: a length, no voxels
        return measure_line(volume, roi, reader=reader, roi_file=roi_file)
    info = volume.info
    try:
        rm = mask if mask is not None else rasterize_roi(volume, roi)
    except RoiPlacementError as exc:
        return failed_measurement(
            roi, [exc.code], info=info, detail=str(exc), reader=reader, roi_file=roi_file
        )
    x = rm.values(volume)
    n = int(x.size)
    flags = _series_problem_flags(info)
    if n == 0:
        return failed_measurement(
            roi,
            ["roi-outside-image"],
            info=info,
            reader=reader,
            roi_file=roi_file,
            detail=f"ROI {show(roi.roi_id)} covers no voxel centre of the image",
        )
    try:
        stats = _stats(x)
    except _NonFinite as exc:
        return failed_measurement(
            roi,
            ["non-finite-hu"],
            info=info,
            reader=reader,
            roi_file=roi_file,
            detail=f"ROI {show(roi.roi_id)}: {exc}; check the series' RescaleSlope and "
            "RescaleIntercept",
        )
    if rm.n_outside > 0 or rm.beyond_stack:
        flags.append("roi-partly-outside")
    if rm.partly_in_gap:
        flags.append("roi-partly-in-gap")
    pad = x <= PADDING_HU_LIMIT
    if volume.padding_hu is not None and np.isfinite(volume.padding_hu):
        pad |= x == float(volume.padding_hu)
    n_pad = int(np.count_nonzero(pad))
    if n_pad:
        flags.append("roi-on-padding")
    if n < MIN_VOXELS:
        flags.append("too-few-voxels")
    dr, dc = volume.pixel_spacing_mm
    area = volume_mm3 = None
    if roi.shape.is_2d:
        area = n * dr * dc
        if roi.kind == "target" and area < MIN_TARGET_AREA_MM2:
            flags.append("area-below-minimum")
    else:
        sp = volume.slice_spacing_mm
        volume_mm3 = n * dr * dc * sp if np.isfinite(sp) else None
    cort = float(np.count_nonzero(x > CORTICAL_HU)) / n
    if roi.kind == "target" and cort > CORTICAL_FRACTION:
        flags.append("cortical-contamination")
    if roi.kind == "target":
        flags += heterogeneity_flags(stats["mean_hu"], stats["median_hu"], stats["sd_hu"])
    # reference slice: the one slice of a 2D shape; for a sphere the slice nearest its centre
    slice_k = _centre_k(volume, roi, rm)
    return Measurement(
        slice_index=int(volume.slice_indices[slice_k]),
        n_voxels=n,
        area_mm2=area,
        volume_mm3=volume_mm3,
        qc_flags=tuple(dict.fromkeys(flags)),
        reader=reader,
        roi_file=roi_file,
        slice_position_mm=float(volume.slice_positions_mm[slice_k]),
        slice_indices=rm.slice_indices,
        n_outside=rm.n_outside,
        n_padding=n_pad,
        cortical_fraction=cort,
        **stats,
        **_identity_fields(roi, info),
    )


def _centre_k(volume: Volume, roi: Roi, rm: RoiMask) -> int:
    ks = [p.k for p in rm.parts if p.n_voxels]
    if len(ks) == 1 or roi.shape.center_mm is None:
        return ks[0]
    c = float(np.asarray(roi.shape.center_mm) @ volume.normal)
    pos = volume.slice_positions_mm[ks]
    return ks[int(np.argmin(np.abs(pos - c)))]


def heterogeneity_flags(mean_hu: float, median_hu: float, sd_hu: float) -> list[str]:
    """``["roi-heterogeneous"]`` when a target ROI's statistics show mixed tissues, else ``[]``.

    Rule: ``sd_hu > HETEROGENEITY_SD_HU`` (150 HU) or ``|mean_hu − median_hu| >
    HETEROGENEITY_GAP_HU`` (50 HU).  Trabecular bone is homogeneous at CT resolution (noise
    and texture); an ROI partly on the cortex or an endplate adds a bright minority that
    raises the SD and pulls the mean away from the median even when fewer than
    :data:`CORTICAL_FRACTION` of its voxels exceed :data:`CORTICAL_HU`.  NaN statistics
    (n < 2 for the SD) do not flag.

    Parameters
    ----------
    mean_hu, median_hu, sd_hu : float
        The ROI's mean, median and sample SD (HU).

    Returns
    -------
    list of str
    """
    sd_high = math.isfinite(sd_hu) and sd_hu > HETEROGENEITY_SD_HU
    gap = mean_hu - median_hu
    gap_high = math.isfinite(gap) and abs(gap) > HETEROGENEITY_GAP_HU
    return ["roi-heterogeneous"] if sd_high or gap_high else []


def _grid(
    volume: Volume | SeriesInfo,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, int, int, float]:
    """The image block of a volume or series: slice origins (n, 3), X, Y, ΔR, ΔC, rows,
    columns and the slice spacing (mm); from the full series when a volume knows it (a
    partial load then gives the same answer as a full one)."""
    info = volume if isinstance(volume, SeriesInfo) else volume.info
    if info is not None and info.slices and info.rows > 0 and info.columns > 0:
        origins = np.array([sl.position_lps_mm for sl in info.slices], dtype=float).reshape(-1, 3)
        o = np.asarray(info.orientation, dtype=float)
        dr, dc = info.pixel_spacing_mm
        return origins, o[:3], o[3:], dr, dc, info.rows, info.columns, info.slice_spacing_mm
    if isinstance(volume, SeriesInfo):  # a series without slices or grid
        return np.zeros((0, 3)), np.eye(3)[0], np.eye(3)[1], 1.0, 1.0, 0, 0, math.nan
    dr, dc = volume.pixel_spacing_mm
    _, rows, cols = volume.hu.shape
    return (
        np.asarray(volume.slice_origins_lps_mm, dtype=float).reshape(-1, 3),
        np.asarray(volume.orientation[0], dtype=float),
        np.asarray(volume.orientation[1], dtype=float),
        dr,
        dc,
        rows,
        cols,
        volume.slice_spacing_mm,
    )


def _point_outside(p: np.ndarray, volume: Volume | SeriesInfo) -> str:
    """Why point ``p`` (LPS mm) lies outside the image block, or "" when it lies inside.

    Inside: along the slice normal within half the slice spacing of the first/last slice
    (half a millimetre for a single slice without spacing), and in the plane of the
    nearest slice within half a pixel of the outermost voxel centres -- the extent of the
    voxels themselves, the voxel rule's limits -- with the voxel rule's boundary tolerance
    :data:`hu_roi.rasterize.EPS_MM` (a point on the border, up to rounding, is inside).
    """
    origins, x, y, dr, dc, rows, cols, sp = _grid(volume)
    if origins.shape[0] == 0 or rows < 1 or cols < 1:
        return "the image has no slices"
    normal = np.cross(x, y)
    normal /= np.linalg.norm(normal)
    pos = origins @ normal
    half = 0.5 * sp if math.isfinite(sp) and sp > 0 else 0.5
    with np.errstate(all="ignore"):  # absurd coordinates are simply outside
        h = float(p @ normal)
        lo, hi = float(pos.min()) - half - EPS_MM, float(pos.max()) + half + EPS_MM
        if not math.isfinite(h) or h < lo or h > hi:
            by = lo - h if h < lo else h - hi
            return (
                f"{by:.2f} mm beyond the {'first' if h < lo else 'last'} slice (± half the spacing)"
            )
        k = int(np.argmin(np.abs(pos - h)))
        d = p - origins[k]
        col = float(d @ x) / dc
        row = float(d @ y) / dr
    out = []
    for what, i, n, step in (("columns", col, cols, dc), ("rows", row, rows, dr)):
        by = max(-0.5 - i, i - (n - 0.5)) * step  # mm beyond the nearer edge (< 0: inside)
        if not by <= EPS_MM:  # also NaN
            out.append(f"{by:.2f} mm outside the {what}")
    return " and ".join(out)


def measure_line(
    volume: Volume | SeriesInfo, roi: Roi, *, reader: str = "", roi_file: str = ""
) -> Measurement:
    """Measure a line ROI (a vertebral height): its length, from the geometry alone.

    ``length_mm`` = ‖p₂ − p₁‖ (Euclidean distance of the two points, LPS mm).  The HU
    columns stay empty (NaN), ``n_voxels`` is 0, and no pixel is read -- only the image's
    geometry (``volume.info`` when set, else the loaded slices) is used.

    Parameters
    ----------
    volume : Volume or SeriesInfo
        The image: a volume (with ``volume.info`` the extent is that of the full series,
        else of the loaded slices), or the series' header alone (the batch reads no
        pixels for a line).
    roi : Roi
        An ROI with a line shape.
    reader, roi_file : str
        Provenance, copied to the row.

    Returns
    -------
    Measurement
        qc ``pass`` (plus the series' own problem flags), or a ``fail`` row
        ``line-outside-image`` without a length when an end point lies outside the image
        volume (the detail names the point and how far out it is).
    """
    if not roi.shape.is_line or roi.shape.points_mm is None:
        raise ValueError(f"measure_line: ROI {show(roi.roi_id)} is a {roi.shape.type}, not a line")
    info = volume if isinstance(volume, SeriesInfo) else volume.info
    why = []
    for i, pt in enumerate(roi.shape.points_mm, start=1):
        p = np.asarray(pt, dtype=float)
        problem = _point_outside(p, volume)
        if problem:
            why.append(f"point {i} ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm lies {problem}")
    if why:
        return failed_measurement(
            roi,
            ["line-outside-image"],
            info=info,
            reader=reader,
            roi_file=roi_file,
            detail=f"line ROI {show(roi.roi_id)}: " + "; ".join(why),
        )
    return _voxel_free_row(
        roi,
        info,
        _series_problem_flags(info),
        reader=reader,
        roi_file=roi_file,
        length_mm=roi.shape.length_mm,
    )
