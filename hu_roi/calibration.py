"""Calibration checks: reference ROIs, header sanity, consistency vs baseline, phantom fit.

All results land in the measurement rows' ``qc_flags`` (codes in
:data:`hu_roi.measure.QC_FLAGS`, documented in ``docs/qc_flags.md``).  Thresholds and
their sources:

=================  ===================  ==================================================
reference kind     accepted mean (HU)   source
=================  ===================  ==================================================
reference-air      −1000 ± 50           HU scale definition (air = −1000 HU); ±50 HU is a
                                        project tolerance for clinical scanners
reference-water    0 ± 7                ACR CT Accreditation Program phantom criterion
                                        (water 0 ± 7 HU)
reference-fat      −130 … −70           subcutaneous fat ≈ −100 HU; range = project choice
reference-muscle   20 … 70              paraspinal muscle ≈ +40 HU; range = project choice
=================  ===================  ==================================================

A failing reference check flags **every ROI of that scan** (``cal-<tissue>-off``): the
scan's calibration, not just the reference ROI, is in doubt.

Automatic air check (:func:`auto_air_check`), used only when the reader placed no
``reference-air`` ROI on the scan.  Heuristic: on up to three of the loaded slices,
voxels below −500 HU that are not padding (padding value or ≤ −2000 HU) and that belong to a connected region
(4-connectivity, padding counted as part of it) touching the image border are "air
outside the body" — lungs and bowel gas are enclosed by tissue and so excluded.  The
region is found with numpy alone (row and column runs, :func:`_border_connected`) so a
batch does not pay the half-second import of ``scipy.ndimage``; tests check it against
``scipy.ndimage.label`` and ``binary_erosion``.  The region
is eroded by 2 pixels (partial-volume at the skin and table), and at least
:data:`AUTO_AIR_MIN_VOXELS` voxels are required.  Images of 256 pixels or more are
examined at every second row and column (and eroded by 1 such pixel).  Their mean is checked against
−1000 ± 50 HU.  Images whose field of view is smaller than :data:`AUTO_AIR_MIN_FOV_MM`
in either direction are skipped: such tight (targeted) reconstructions cut through the body,
so lung or fat touching the image border would be taken for air (e.g. an 85 mm spine FOV).

Header checks per scan: RescaleType present and not ``HU`` → ``rescale-type-not-hu``;
slope ≤ 0 or > 10, intercept outside −10000…1000 → ``rescale-unusual`` (missing
slope/intercept is the index's ``no-rescale`` problem, flagged as ``series-no-rescale``);
ContrastBolusAgent recorded (non-empty and not NONE/NO/N) → ``contrast-agent``.  The index
holds the rescale of the series' first image only, so :func:`rescale_flags` applies the same
limits to the rescale of **every slice read** (``Volume.rescale_slopes`` /
``rescale_intercepts``); the batch sets its flag on every ROI of the scan.

Consistency across a patient's timepoints: each scan is compared with the patient's
baseline (T0) scan — kVp, convolution kernel, slice thickness (> 0.01 mm apart),
manufacturer/model, contrast — each difference a flag ``<what>-differs-from-T0``.

Phantom calibration: ``phantom-<name>`` ROIs carrying ``density_mg_cm3`` on a scan give a
least-squares line density = a + b·HU; R² < :data:`PHANTOM_MIN_R2` → ``phantom-fit-poor``;
target ROIs of that scan get ``bmd_mg_cm3 = a + b·mean_hu``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from hu_roi.measure import PADDING_HU_LIMIT, Measurement, add_flags
from hu_roi.series import SeriesInfo
from hu_roi.volume import Volume

logger = logging.getLogger(__name__)

__all__ = [
    "EXPECTED",
    "AUTO_AIR_MIN_VOXELS",
    "AUTO_AIR_MIN_FOV_MM",
    "PHANTOM_MIN_R2",
    "AirCheck",
    "PhantomFit",
    "reference_flag",
    "auto_air_check",
    "header_flags",
    "rescale_flags",
    "consistency_flags",
    "contrast_recorded",
    "phantom_fit",
    "apply_calibration",
]

#: kind -> (low HU, high HU, flag code) of the accepted mean (see the module docstring).
EXPECTED: dict[str, tuple[float, float, str]] = {
    "reference-air": (-1050.0, -950.0, "cal-air-off"),
    "reference-water": (-7.0, 7.0, "cal-water-off"),
    "reference-fat": (-130.0, -70.0, "cal-fat-off"),
    "reference-muscle": (20.0, 70.0, "cal-muscle-off"),
}
AIR_EXPECTED_HU = -1000.0
AIR_TOLERANCE_HU = 50.0
#: Threshold below which a voxel may be air for the automatic check (HU).
AUTO_AIR_BELOW_HU = -500.0
#: Erosion (pixels) of the outside-air region before averaging.
AUTO_AIR_EROSION_PX = 2
#: Smallest field of view (mm, rows·ΔR and columns·ΔC) for the automatic air check.
AUTO_AIR_MIN_FOV_MM = 150.0
#: Minimal number of air voxels (of those examined) for the automatic check.
AUTO_AIR_MIN_VOXELS = 200
#: Images with at least this many rows and columns are examined at every
#: :data:`AUTO_AIR_STRIDE`-th pixel along both.
AUTO_AIR_STRIDE_FROM_PX = 256
AUTO_AIR_STRIDE = 2
#: Minimal R² of the phantom line (project choice).
PHANTOM_MIN_R2 = 0.98
#: Slice thickness differences up to this are not flagged (mm).
THICKNESS_TOL_MM = 0.01
_NO_CONTRAST = frozenset({"", "NONE", "NO", "N", "-", "NO CONTRAST"})


def contrast_recorded(agent: str) -> bool:
    """True when ContrastBolusAgent names an agent (not empty, NONE, NO, N, -)."""
    return agent.strip().upper() not in _NO_CONTRAST


def reference_flag(m: Measurement) -> str | None:
    """The ``cal-*-off`` code when a reference ROI's mean is outside its range, else None."""
    if m.kind not in EXPECTED or m.n_voxels == 0 or not np.isfinite(m.mean_hu):
        return None
    lo, hi, code = EXPECTED[m.kind]
    return None if lo <= m.mean_hu <= hi else code


@dataclass(frozen=True)
class AirCheck:
    """Result of :func:`auto_air_check`.

    Attributes
    ----------
    mean_hu : float
        Mean of the air voxels found (NaN when too few).
    n_voxels : int
        Air voxels examined (every second pixel of large images, see module docstring).
    ok : bool or None
        True/False = within/outside −1000 ± 50 HU; None = not enough air found.
    """

    mean_hu: float
    n_voxels: int
    ok: bool | None

    @property
    def flag(self) -> str | None:
        if self.ok is None:
            return "cal-air-auto-unavailable"
        return None if self.ok else "cal-air-auto-off"


#: The automatic air check looks at this many of the loaded slices at most (first, middle,
#: last ...): air HU does not change along a scan, and each slice costs a labelling and an
#: erosion of the whole image.
AUTO_AIR_MAX_SLICES = 3


def auto_air_check(volume: Volume, *, max_slices: int = AUTO_AIR_MAX_SLICES) -> AirCheck:
    """Mean HU of air outside the body on the loaded slices (heuristic in module docstring).

    Parameters
    ----------
    volume : Volume
        Any loaded slices of the scan (batch uses the slices the ROIs touched).
    max_slices : int
        At most this many loaded slices, evenly spread, are examined.

    Returns
    -------
    AirCheck
    """
    total = 0.0
    count = 0
    dr, dc = volume.pixel_spacing_mm
    nr, nc = volume.hu.shape[1:]
    if min(nr * dr, nc * dc) < AUTO_AIR_MIN_FOV_MM:
        return AirCheck(float("nan"), 0, None)
    n_loaded = volume.hu.shape[0]
    picks = sorted(set(np.linspace(0, n_loaded - 1, min(max_slices, n_loaded)).round().astype(int)))
    # Large images are examined at every second pixel (a quarter of the work; the mean of
    # ~10⁵ air voxels does not need more) with the erosion scaled to match.
    stride = AUTO_AIR_STRIDE if min(nr, nc) >= AUTO_AIR_STRIDE_FROM_PX else 1
    erosion = -(-AUTO_AIR_EROSION_PX // stride)
    for k in picks:
        img = volume.hu[k, ::stride, ::stride]
        pad = img <= PADDING_HU_LIMIT
        if volume.padding_hu is not None and np.isfinite(volume.padding_hu):
            pad |= img == volume.padding_hu
        airish = (img < AUTO_AIR_BELOW_HU) | pad
        air = _border_connected(airish) & ~pad
        if erosion:
            # erode against tissue only (padding is not tissue: keep air next to padding)
            air = _erode_square(air | pad, erosion) & air
        vals = img[air].astype(np.float64)
        with np.errstate(all="ignore"):  # inf HU (absurd rescale): no RuntimeWarning
            total += float(vals.sum())
        count += int(vals.size)
    if count < AUTO_AIR_MIN_VOXELS or not np.isfinite(total):
        return AirCheck(float("nan"), count, None)
    mean = total / count
    return AirCheck(mean, count, abs(mean - AIR_EXPECTED_HU) <= AIR_TOLERANCE_HU)


def _run_ids(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Number the runs of True along the rows and along the columns of a 2-D mask.

    Returns two int32 arrays with one entry per True pixel, in row-major order: the
    pixel's row-run number and its column-run number (each unique over the image).
    """
    flat = mask.ravel()
    starts = mask.copy()
    starts[:, 1:] &= ~mask[:, :-1]
    start_at = np.flatnonzero(starts.ravel()[flat])
    lengths = np.diff(start_at, append=np.count_nonzero(flat))
    row_ids = np.repeat(np.arange(1, start_at.size + 1, dtype=np.int32), lengths)
    col_starts = mask.copy()
    col_starts[1:, :] &= ~mask[:-1, :]
    cs = col_starts.astype(np.int32)
    # numpy's cumsum along axis 0 is several times slower than adding row by row
    for i in range(1, cs.shape[0]):
        cs[i] += cs[i - 1]
    cs += np.cumsum(cs[-1]) - cs[-1]  # offset each column past the runs of those before
    return row_ids, cs.ravel()[flat]


def _border_connected(mask: np.ndarray, max_rounds: int = 1000) -> np.ndarray:
    """The part of a 2-D mask that is 4-connected to the image border through the mask.

    Filling along row runs and column runs in turn until nothing changes gives the same
    set as keeping the border-touching components of ``scipy.ndimage.label`` with
    4-connectivity (each round follows one more turn of a winding path); a body slice
    needs two or three rounds.

    Parameters
    ----------
    mask : ndarray of bool, shape (rows, columns)
    max_rounds : int
        Safety stop for pathological spirals (the result is then a subset).

    Returns
    -------
    ndarray of bool, shape (rows, columns)
    """
    nr, nc = mask.shape
    flat = mask.ravel()
    row_ids, col_ids = _run_ids(mask)
    edge = np.zeros_like(mask)
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    reached = edge.ravel()[flat]
    row_hit = np.zeros(int(row_ids.max(initial=0)) + 1, dtype=bool)
    col_hit = np.zeros(int(col_ids.max(initial=0)) + 1, dtype=bool)
    count = -1
    for _ in range(max_rounds):
        row_hit[row_ids[reached]] = True
        reached = row_hit[row_ids]
        col_hit[col_ids[reached]] = True
        reached = col_hit[col_ids]
        new_count = int(np.count_nonzero(reached))
        if new_count == count:
            break
        count = new_count
    out = np.zeros(mask.size, dtype=bool)
    out[flat] = reached
    return out.reshape(nr, nc)


def _erode_square(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a (2·radius+1)² square, outside the image counted as True.

    Equal to ``scipy.ndimage.binary_erosion(mask, np.ones((3, 3)), iterations=radius,
    border_value=1)``; done as AND of shifted copies, rows then columns (the square is
    separable).
    """
    out = mask
    for axis in (0, 1):
        cur = out.copy()
        n = out.shape[axis]
        for d in range(1, min(radius, n - 1) + 1):
            lead = [slice(None), slice(None)]
            trail = [slice(None), slice(None)]
            lead[axis], trail[axis] = slice(0, n - d), slice(d, n)
            cur[tuple(lead)] &= out[tuple(trail)]  # neighbour d ahead
            cur[tuple(trail)] &= out[tuple(lead)]  # neighbour d behind
        out = cur
    return out


#: Sane RescaleSlope (HU per stored unit, exclusive low end) and RescaleIntercept (HU)
#: ranges; outside them a scan is flagged ``rescale-unusual`` (project sanity limits).
RESCALE_SLOPE_RANGE = (0.0, 10.0)
RESCALE_INTERCEPT_RANGE = (-10000.0, 1000.0)


def _rescale_unusual(slope: float | None, intercept: float | None) -> bool:
    """True when a slope or intercept lies outside the sane ranges (NaN included)."""
    s_lo, s_hi = RESCALE_SLOPE_RANGE
    b_lo, b_hi = RESCALE_INTERCEPT_RANGE
    return (slope is not None and not (s_lo < slope <= s_hi)) or (
        intercept is not None and not (b_lo <= intercept <= b_hi)
    )


def rescale_flags(volume: Volume) -> list[str]:
    """``["rescale-unusual"]`` when the rescale of any loaded slice is outside the sane
    ranges (same limits as :func:`header_flags`, which sees the first image only)."""
    slopes, inters = volume.rescale_slopes, volume.rescale_intercepts
    if slopes is None and inters is None:
        return []
    n = volume.hu.shape[0]
    s = np.full(n, 1.0) if slopes is None else np.asarray(slopes, dtype=float)
    b = np.full(n, 0.0) if inters is None else np.asarray(inters, dtype=float)
    bad = any(_rescale_unusual(float(si), float(bi)) for si, bi in zip(s, b, strict=True))
    return ["rescale-unusual"] if bad else []


def header_flags(info: SeriesInfo) -> list[str]:
    """Per-scan header checks: rescale type/slope/intercept sanity, contrast agent."""
    flags = []
    if info.rescale_type and info.rescale_type.strip().upper() != "HU":
        flags.append("rescale-type-not-hu")
    if _rescale_unusual(info.rescale_slope, info.rescale_intercept):
        flags.append("rescale-unusual")
    if contrast_recorded(info.contrast_agent):
        flags.append("contrast-agent")
    return flags


def consistency_flags(info: SeriesInfo, baseline: SeriesInfo) -> list[str]:
    """Differences of a scan from the patient's baseline (T0) scan, as flag codes."""
    if info.series_key == baseline.series_key:
        return []
    flags = []
    if info.kvp is not None and baseline.kvp is not None and abs(info.kvp - baseline.kvp) > 1e-6:
        flags.append("kvp-differs-from-T0")
    if info.kernel.strip().upper() != baseline.kernel.strip().upper():
        flags.append("kernel-differs-from-T0")
    ta, tb = info.slice_thickness_mm, baseline.slice_thickness_mm
    if ta is not None and tb is not None and abs(ta - tb) > THICKNESS_TOL_MM:
        flags.append("thickness-differs-from-T0")
    if (info.manufacturer.strip().upper(), info.model.strip().upper()) != (
        baseline.manufacturer.strip().upper(),
        baseline.model.strip().upper(),
    ):
        flags.append("scanner-differs-from-T0")
    if contrast_recorded(info.contrast_agent) != contrast_recorded(baseline.contrast_agent):
        flags.append("contrast-differs-from-T0")
    return flags


@dataclass(frozen=True)
class PhantomFit:
    """Least-squares line density (mg/cm³) = intercept + slope · HU over phantom inserts.

    Attributes
    ----------
    slope : float
        mg/cm³ per HU.
    intercept : float
        mg/cm³.
    r2 : float
        Coefficient of determination 1 − SS_res/SS_tot.
    n : int
        Number of inserts.
    """

    slope: float
    intercept: float
    r2: float
    n: int

    def bmd(self, hu: float) -> float:
        """Density (mg/cm³) for a mean HU."""
        return self.intercept + self.slope * hu


def phantom_fit(hu: Sequence[float], density_mg_cm3: Sequence[float]) -> PhantomFit | None:
    """Fit density = a + b·HU (ordinary least squares); None with fewer than 2 distinct HU."""
    x = np.asarray(hu, dtype=np.float64)
    y = np.asarray(density_mg_cm3, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 or np.ptp(x) == 0:
        return None
    b, a = np.polyfit(x, y, 1)
    ss_res = float(np.sum((y - (a + b * x)) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return PhantomFit(float(b), float(a), r2, int(x.size))


def _baselines(
    rows: Sequence[Measurement], infos: Mapping[str, SeriesInfo]
) -> dict[str, SeriesInfo]:
    """Per patient: the T0 series carrying most target ROIs."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for m in rows:
        if m.timepoint == "T0" and m.series_key in infos:
            counts[m.patient_id][m.series_key] += 1 + (m.kind == "target") * 1000
    return {
        pid: infos[max(c.items(), key=lambda kv: (kv[1], kv[0]))[0]] for pid, c in counts.items()
    }


def apply_calibration(
    rows: Sequence[Measurement],
    infos: Mapping[str, SeriesInfo],
    air_checks: Mapping[str, AirCheck] | None = None,
) -> tuple[list[Measurement], dict[str, PhantomFit]]:
    """Add calibration flags (and ``bmd_mg_cm3``) to measurement rows.

    Parameters
    ----------
    rows : sequence of Measurement
        All rows of a batch (several patients, timepoints and series).
    infos : mapping series_key -> SeriesInfo
        The series the rows were measured on.
    air_checks : mapping series_key -> AirCheck, optional
        Automatic air checks; used for scans without a ``reference-air`` ROI.

    Returns
    -------
    rows : list of Measurement
        Same order, flags added.
    fits : dict series_key -> PhantomFit
        Phantom calibrations found.
    """
    air_checks = air_checks or {}
    by_series: dict[str, list[int]] = defaultdict(list)
    for i, m in enumerate(rows):
        if m.series_key in infos:
            by_series[m.series_key].append(i)
    baselines = _baselines(rows, infos)
    out = list(rows)
    fits: dict[str, PhantomFit] = {}
    for key, idx in by_series.items():
        info = infos[key]
        scan_flags = header_flags(info)
        members = [rows[i] for i in idx]
        for m in members:
            code = reference_flag(m)
            if code:
                scan_flags.append(code)
        if not any(m.kind == "reference-air" and m.n_voxels > 0 for m in members):
            ac = air_checks.get(key)
            if ac is not None and ac.flag:
                scan_flags.append(ac.flag)
        pids = {m.patient_id for m in members}
        for pid in pids:
            if pid in baselines:
                scan_flags += consistency_flags(info, baselines[pid])
        # phantom
        ph = [m for m in members if m.kind.startswith("phantom-")]
        fit = None
        if ph:
            with_d = [
                (m.mean_hu, m.density_mg_cm3)
                for m in ph
                if m.density_mg_cm3 is not None and m.n_voxels > 0
            ]
            fit = phantom_fit([h for h, _ in with_d], [d for _, d in with_d])
            if fit is None:
                scan_flags.append("phantom-too-few-inserts")
            else:
                fits[key] = fit
                if not (fit.r2 >= PHANTOM_MIN_R2):
                    scan_flags.append("phantom-fit-poor")
        scan_flags = list(dict.fromkeys(scan_flags))
        for i in idx:
            m = add_flags(out[i], *scan_flags)
            if m.kind.startswith("phantom-") and m.density_mg_cm3 is None:
                m = add_flags(m, "phantom-no-density")
            if fit is not None and m.kind == "target" and m.n_voxels > 0:
                m = replace(m, bmd_mg_cm3=fit.bmd(m.mean_hu))
            out[i] = m
    return out, fits
