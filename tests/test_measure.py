"""measure_roi: statistics against independent references (numpy / statistics module on the
brute-force voxel selection of test_rasterize), and every ROI quality flag fired and kept
quiet.  Also: docs/qc_flags.md lists exactly the codes of QC_FLAGS."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hu_roi.measure import QC_FLAGS, measure_roi, qc_status_of, severity_of
from hu_roi.roi import Roi
from hu_roi.series import PROBLEM_CODES
from hu_roi.volume import Volume
from tests.test_rasterize import _info_for, make_volume, reference_mask

DOCS = Path(__file__).resolve().parents[1] / "docs" / "qc_flags.md"


def roi(shape, kind="target", rid="R"):
    return Roi.from_dict(
        {
            "roi_id": rid,
            "patient_id": "P",
            "timepoint": "T0",
            "kind": kind,
            "level": "L1" if kind == "target" else None,
            "shape": shape,
        }
    )


def flat_volume(value=150, shape=(5, 60, 60), spacing=(1.0, 1.0), padding_hu=None, info=False):
    hu = np.full(shape, value, dtype=np.int16)
    origins = np.array([[0.0, 0.0, 2.0 * k] for k in range(shape[0])])
    v = Volume(
        hu=hu,
        orientation=np.array([[1, 0, 0], [0, 1, 0]], float),
        pixel_spacing_mm=spacing,
        slice_origins_lps_mm=origins,
        padding_hu=padding_hu,
    )
    if info:
        v = replace(v, info=_info_for(v))
    return v


@pytest.mark.parametrize(
    "shape",
    [
        {"type": "circle", "center_mm": None, "radius_mm": 8.3},
        {"type": "ellipse", "center_mm": None, "radii_mm": [9.0, 5.5], "angle_deg": 27.0},
        {"type": "sphere", "center_mm": None, "radius_mm": 6.1},
    ],
)
def test_statistics_match_independent_reference(shape):
    vol = make_volume(orientation=(0, 1, 0, 0, 0, -1), spacing=(0.8, 1.1))
    c = (
        vol.slice_origins_lps_mm[4]
        + 17.3 * 1.1 * vol.orientation[0]
        + 21.1 * 0.8 * vol.orientation[1]
    )
    shape = dict(shape, center_mm=c.tolist())
    r = roi(shape)
    m = measure_roi(vol, r, reader="R9", roi_file="x.rois.json")
    x = vol.hu[reference_mask(vol, r)].astype(float).tolist()
    assert m.n_voxels == len(x)
    assert m.mean_hu == pytest.approx(statistics.fmean(x), rel=0, abs=1e-12)
    assert m.sd_hu == pytest.approx(statistics.stdev(x), rel=1e-12)  # n-1
    assert m.median_hu == statistics.median(x)
    assert (m.min_hu, m.max_hu) == (min(x), max(x))
    # type-7 quantiles (R's default), written out by hand
    xs = sorted(x)
    for p, got in ((0.05, m.p5_hu), (0.95, m.p95_hu)):
        h = (len(xs) - 1) * p
        lo = math.floor(h)
        ref = xs[lo] + (h - lo) * (xs[min(lo + 1, len(xs) - 1)] - xs[lo])
        assert got == pytest.approx(ref, abs=1e-9)
    dr, dc = vol.pixel_spacing_mm
    if shape["type"] == "sphere":
        assert m.area_mm2 is None and m.volume_mm3 == pytest.approx(len(x) * dr * dc * 2.5)
        assert len(m.slice_indices) > 1
    else:
        assert m.volume_mm3 is None and m.area_mm2 == pytest.approx(len(x) * dr * dc)
        assert m.slice_index == 4
    assert m.reader == "R9" and m.roi_file == "x.rois.json" and m.shape == shape["type"]
    # the volume is uniform noise over -200 … 800 HU (SD ≈ 290 HU): a target ROI on it is
    # rightly heterogeneous (cortex guard), and nothing else
    assert m.qc_flags == ("roi-heterogeneous",), m.qc_flags


def test_mean_is_exact_in_float64():
    # float32 HU with large values: the mean is the correctly rounded float64 mean (fsum)
    vol = flat_volume(value=0, shape=(3, 40, 40))
    hu = vol.hu.astype(np.float32)
    hu[1, 10:30, 10:30] = np.float32(3000.1)
    hu[1, 20, 20] = np.float32(-1000.7)
    vol = replace(vol, hu=hu)
    r = roi({"type": "circle", "center_mm": [20.0, 20.0, 2.0], "radius_mm": 9})
    m = measure_roi(vol, r)
    x = vol.hu[reference_mask(vol, r)].astype(np.float64)
    assert m.mean_hu == math.fsum(x.tolist()) / x.size


# ------------------------------------------------------------------------------- flags
CENTRE = {"type": "circle", "center_mm": [30.0, 30.0, 4.0], "radius_mm": 8.0}


def test_quiet_roi_has_no_flags():
    m = measure_roi(flat_volume(info=True), roi(CENTRE))
    assert m.qc_flags == () and m.qc_status == "pass"


def test_partly_outside_fires_and_quiet():
    m = measure_roi(flat_volume(), roi({**CENTRE, "center_mm": [2.0, 30.0, 4.0]}))
    assert "roi-partly-outside" in m.qc_flags and m.qc_status == "warn" and m.n_outside > 0
    assert "roi-partly-outside" not in measure_roi(flat_volume(), roi(CENTRE)).qc_flags
    # a sphere poking out of the stack (z 0..8)
    sph = measure_roi(
        flat_volume(), roi({"type": "sphere", "center_mm": [30, 30, 8.0], "radius_mm": 4})
    )
    assert "roi-partly-outside" in sph.qc_flags


def test_outside_image_is_a_fail_row():
    m = measure_roi(flat_volume(), roi({**CENTRE, "center_mm": [-50.0, 30.0, 4.0]}))
    assert m.qc_status == "fail" and "roi-outside-image" in m.qc_flags and m.n_voxels == 0
    assert math.isnan(m.mean_hu)
    far = measure_roi(flat_volume(), roi({**CENTRE, "center_mm": [30.0, 30.0, 50.0]}))
    assert far.qc_status == "fail" and far.qc_flags[0] == "roi-outside-image"


def test_tie_and_not_parallel_are_fail_rows():
    tie = measure_roi(flat_volume(), roi({**CENTRE, "center_mm": [30.0, 30.0, 3.0]}))
    assert (
        tie.qc_status == "fail" and "roi-slice-tie" in tie.qc_flags and "equally far" in tie.detail
    )
    tilted = roi(
        {"type": "polygon", "points_mm": [[20, 20, 4], [40, 20, 4], [40, 40, 5], [20, 40, 5]]}
    )
    m = measure_roi(flat_volume(), tilted)
    assert m.qc_status == "fail" and "roi-not-parallel" in m.qc_flags


def test_on_padding_fires_and_quiet():
    vol = flat_volume(padding_hu=-3024.0)
    hu = vol.hu.copy()
    hu[2, 30, 30] = -3024
    m = measure_roi(replace(vol, hu=hu), roi(CENTRE))
    assert "roi-on-padding" in m.qc_flags and m.n_padding == 1
    hu2 = vol.hu.copy()
    hu2[2, 30, 31] = -2500  # below the -2000 limit, padding value unknown
    m2 = measure_roi(replace(vol, hu=hu2, padding_hu=None), roi(CENTRE))
    assert "roi-on-padding" in m2.qc_flags
    hu3 = vol.hu.copy()
    hu3[2, 30, 31] = -1024  # real air-like value: not padding
    assert "roi-on-padding" not in measure_roi(replace(vol, hu=hu3), roi(CENTRE)).qc_flags


def test_too_few_voxels_and_area_minimum():
    small = measure_roi(flat_volume(), roi({**CENTRE, "radius_mm": 2.0}))  # 13 voxels, 13 mm²
    assert small.n_voxels == 13
    assert {"too-few-voxels", "area-below-minimum"} <= set(small.qc_flags)
    mid = measure_roi(flat_volume(), roi({**CENTRE, "radius_mm": 3.0}))  # 29 voxels, 29 mm²
    assert "too-few-voxels" not in mid.qc_flags and "area-below-minimum" in mid.qc_flags
    ok = measure_roi(flat_volume(), roi({**CENTRE, "radius_mm": 4.0}))  # 49 voxels... <50
    big = measure_roi(flat_volume(), roi({**CENTRE, "radius_mm": 4.5}))
    assert ok.area_mm2 < 50 and "area-below-minimum" in ok.qc_flags
    assert big.area_mm2 >= 50 and "area-below-minimum" not in big.qc_flags
    # area minimum is for target ROIs only
    ref = measure_roi(flat_volume(), roi({**CENTRE, "radius_mm": 3.0}, kind="reference-fat"))
    assert "area-below-minimum" not in ref.qc_flags


def test_cortical_contamination_fires_and_quiet():
    vol = flat_volume()
    n = measure_roi(vol, roi(CENTRE)).n_voxels  # 197
    hu = vol.hu.copy()
    k = math.floor(0.05 * n)  # exactly 5 %: quiet (rule is "more than 5 %")
    rows, cols = np.nonzero(reference_mask(vol, roi(CENTRE))[2])
    hu[2, rows[:k], cols[:k]] = 1200
    assert "cortical-contamination" not in measure_roi(replace(vol, hu=hu), roi(CENTRE)).qc_flags
    hu[2, rows[: k + 1], cols[: k + 1]] = 1200
    m = measure_roi(replace(vol, hu=hu), roi(CENTRE))
    assert "cortical-contamination" in m.qc_flags and m.cortical_fraction > 0.05
    # 1000 HU itself does not count (strictly above)
    hu2 = vol.hu.copy()
    hu2[2, rows[:50], cols[:50]] = 1000
    assert "cortical-contamination" not in measure_roi(replace(vol, hu=hu2), roi(CENTRE)).qc_flags
    # not for reference ROIs
    assert (
        "cortical-contamination"
        not in measure_roi(replace(vol, hu=hu), roi(CENTRE, kind="reference-muscle")).qc_flags
    )


def test_series_problem_flags():
    vol = flat_volume(info=True)
    tilted = replace(vol, info=replace(vol.info, problems=("gantry-tilt", "empty-uid")))
    m = measure_roi(tilted, roi(CENTRE))
    assert "series-gantry-tilt" in m.qc_flags and m.qc_status == "warn"
    only_info = replace(vol, info=replace(vol.info, problems=("empty-uid",)))
    m2 = measure_roi(only_info, roi(CENTRE))
    assert m2.qc_flags == ("series-empty-uid",) and m2.qc_status == "pass"


def test_status_rules():
    assert qc_status_of([]) == "pass"
    assert qc_status_of(["series-empty-uid"]) == "pass"
    assert qc_status_of(["too-few-voxels"]) == "warn"
    assert qc_status_of(["too-few-voxels", "series-not-found"]) == "fail"
    assert severity_of("series-missing-slices") == "warn"


def test_docs_table_lists_every_code():
    if not DOCS.exists():
        pytest.fail("docs/qc_flags.md is missing")
    text = DOCS.read_text()
    documented = set(re.findall(r"^\|\s*`([^`]+)`\s*\|", text, flags=re.M))
    missing = set(QC_FLAGS) - documented
    assert not missing, f"codes not in docs/qc_flags.md: {sorted(missing)}"
    for p in PROBLEM_CODES:  # series-<problem> are explained by the generic row
        assert p in text


def test_too_large_and_slice_not_loaded_are_fail_rows():
    huge = measure_roi(flat_volume(), roi({**CENTRE, "radius_mm": 10000.0}))
    assert huge.qc_status == "fail" and huge.qc_flags[0] == "roi-too-large"
    assert "roi-too-large" not in measure_roi(flat_volume(), roi(CENTRE)).qc_flags
    # a partial volume (with its series info) that lacks the ROI's slice
    full = flat_volume(info=True)
    part = Volume(
        hu=full.hu[:1],
        orientation=full.orientation,
        pixel_spacing_mm=full.pixel_spacing_mm,
        slice_origins_lps_mm=full.slice_origins_lps_mm[:1],
        slice_indices=[0],
        info=full.info,
    )
    m = measure_roi(part, roi(CENTRE))  # CENTRE lies on slice 2
    assert m.qc_status == "fail" and m.qc_flags[0] == "slice-not-loaded"
    on0 = measure_roi(part, roi({**CENTRE, "center_mm": [30.0, 30.0, 0.0]}))
    assert on0.qc_status == "pass" and on0.slice_index == 0
