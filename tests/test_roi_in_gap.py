"""ROIs in a gap of missing slices are fail rows (``roi-in-gap``) with the distance, never
measured on the nearest far slice; ROIs on slices present keep their values exactly.

Real DICOM series written with pydicom (tests/dicom_factory.py); slices are removed by
deleting their files after writing, as a broken export or transfer does.  Each ROI is also
measured on the complete series, which is the independent reference for "keeps its value".
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from hu_roi.rasterize import RoiPlacementError, max_plane_distance, rasterize_roi
from hu_roi.roi import Roi, RoiSet, save_roiset
from hu_roi.volume import Volume
from tests.cli_helpers import run_main
from tests.dicom_factory import write_ct_series

UID = "1.2.826.0.1.3680043.10.1234.9.7777"
STEP = 3.0
#: slice positions 0, 3, ..., 99 mm; those in 36 ... 87 mm go missing (a 57 mm gap)
POSITIONS = np.arange(0.0, 100.0, STEP)
MISSING = (POSITIONS > 34.0) & (POSITIONS < 88.0)
#: two "vertebrae": trabecular bone 79 HU up to 33 mm, 183 HU above (noise ±10 HU)
LOWER_HU, UPPER_HU = 79.0, 183.0


def _hu() -> np.ndarray:
    rng = np.random.default_rng(11)
    base = np.where(POSITIONS <= 33.0, LOWER_HU, UPPER_HU)[:, None, None]
    return base + rng.integers(-10, 11, size=(POSITIONS.size, 24, 24))


def _roi(rid: str, shape: dict) -> Roi:
    return Roi.from_dict(
        {
            "roi_id": rid,
            "patient_id": "TEST",
            "timepoint": "T0",
            "level": "L1",
            "kind": "target",
            "series_instance_uid": UID,
            "shape": shape,
        }
    )


def _circle(z: float) -> dict:
    return {"type": "circle", "center_mm": [11.5, 11.5, z], "radius_mm": 6.0}


ROIS = {
    # the case: 27 mm from the nearest slice present (33 mm), on the other vertebra
    "gap-27mm": _circle(60.0),
    "gap-just-beyond-half": _circle(34.6),  # 1.6 mm > 1.5 mm from slice 33
    "gap-ellipse": {"type": "ellipse", "center_mm": [11.5, 11.5, 45.0], "radii_mm": [7.0, 4.0]},
    "gap-polygon": {
        "type": "polygon",
        "points_mm": [[5.0, 5.0, 75.0], [18.0, 6.0, 75.0], [17.0, 18.0, 75.0], [6.0, 17.0, 75.0]],
    },
    "gap-sphere-small": {"type": "sphere", "center_mm": [11.5, 11.5, 60.0], "radius_mm": 5.0},
    # reaches slices on both sides of the gap, but its centre is 27 mm from any slice
    "gap-sphere-caps": {"type": "sphere", "center_mm": [11.5, 11.5, 60.0], "radius_mm": 31.0},
    # present slices next to the gap, on them or within half the spacing
    "on-33": _circle(33.0),
    "near-33": _circle(34.4),  # 1.4 mm from slice 33: still its slice
    "on-90": _circle(90.0),
    "near-90-polygon": {
        "type": "polygon",
        "points_mm": [[5.0, 5.0, 89.0], [18.0, 6.0, 89.0], [17.0, 18.0, 89.0], [6.0, 17.0, 89.0]],
    },
    "sphere-on-12": {"type": "sphere", "center_mm": [11.5, 11.5, 12.0], "radius_mm": 5.0},
    # centre on slice 30, reaches 4 mm into the gap (beyond 34.5 mm)
    "sphere-into-gap": {"type": "sphere", "center_mm": [11.5, 11.5, 30.0], "radius_mm": 8.5},
    # beyond the last slice (99 mm) by more than half the spacing
    "beyond-last": _circle(101.0),
}


def _measure(dicom: Path, rois_file: Path, out: Path) -> tuple[dict[str, dict[str, str]], str]:
    proc = run_main("measure", "--dicom", str(dicom), "--rois", str(rois_file), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with open(out, newline="", encoding="utf-8") as fh:
        return {r["roi_id"]: r for r in csv.DictReader(fh)}, proc.stderr


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("gap")
    paths = write_ct_series(
        tmp / "dicom", _hu(), slice_positions=POSITIONS, series_uid=UID, file_names="sequential"
    )
    f = tmp / "gap.rois.json"
    save_roiset(RoiSet(rois=tuple(_roi(k, s) for k, s in ROIS.items()), reader="R1"), f)
    full, _ = _measure(tmp / "dicom", f, tmp / "full.csv")
    for p, gone in zip(paths, MISSING, strict=True):
        if gone:
            p.unlink()
    gapped, err = _measure(tmp / "dicom", f, tmp / "gapped.csv")
    return full, gapped, err


def test_index_sees_the_gap(measured):
    _, gapped, _ = measured
    assert "series-missing-slices" in gapped["on-33"]["qc_flags"]


def test_the_27_mm_case_is_a_fail_row_with_the_distance(measured):
    full, gapped, err = measured
    # on the complete series it reads the upper vertebra
    assert abs(float(full["gap-27mm"]["mean_hu"]) - UPPER_HU) < 3
    r = gapped["gap-27mm"]
    assert r["qc_status"] == "fail" and r["qc_flags"].split(";")[0] == "roi-in-gap"
    assert "27.00 mm" in r["detail"], r["detail"]
    assert r["mean_hu"] == "" and r["n_voxels"] == "0"
    assert any("gap-27mm" in ln and ": roi-in-gap" in ln for ln in err.splitlines()), err


@pytest.mark.parametrize(
    "rid, distance",
    [
        ("gap-just-beyond-half", "1.60 mm"),
        ("gap-ellipse", "12.00 mm"),
        ("gap-polygon", "15.00 mm"),
        ("gap-sphere-small", "27.00 mm"),
        ("gap-sphere-caps", "27.00 mm"),
    ],
)
def test_every_shape_in_the_gap_fails(measured, rid, distance):
    _, gapped, _ = measured
    r = gapped[rid]
    assert r["qc_status"] == "fail", (rid, r["qc_flags"], r["mean_hu"])
    assert r["qc_flags"].split(";")[0] == "roi-in-gap", r["qc_flags"]
    assert distance in r["detail"], r["detail"]


@pytest.mark.parametrize("rid", ["on-33", "near-33", "on-90", "near-90-polygon", "sphere-on-12"])
def test_rois_on_slices_present_keep_their_values(measured, rid):
    full, gapped, _ = measured
    a, b = full[rid], gapped[rid]
    assert b["qc_status"] == "warn" and "roi-in-gap" not in b["qc_flags"], b["qc_flags"]
    for col in ("n_voxels", "mean_hu", "sd_hu", "median_hu", "min_hu", "max_hu"):
        assert a[col] == b[col], (rid, col)
    # the same slice (its index in the series shifts when slices before it are missing)
    assert a["slice_position_mm"] == b["slice_position_mm"] != ""
    expected = LOWER_HU if rid in ("on-33", "near-33", "sphere-on-12") else UPPER_HU
    assert abs(float(b["mean_hu"]) - expected) < 3


def test_sphere_reaching_into_the_gap_is_measured_on_its_imaged_part(measured):
    full, gapped, _ = measured
    r = gapped["sphere-into-gap"]
    assert r["qc_status"] == "warn" and "roi-partly-in-gap" in r["qc_flags"].split(";")
    assert "roi-partly-in-gap" not in full["sphere-into-gap"]["qc_flags"]
    # only slices up to 33 mm remain: fewer voxels than on the complete series
    assert 0 < int(r["n_voxels"]) < int(full["sphere-into-gap"]["n_voxels"])


def test_beyond_the_last_slice_gives_the_distance(measured):
    _, gapped, _ = measured
    r = gapped["beyond-last"]
    assert r["qc_flags"].split(";")[0] == "roi-outside-image"
    assert "2.00 mm" in r["detail"], r["detail"]


# ------------------------------------------------------------------ irregular spacing
def _stack(positions: list[float]) -> Volume:
    hu = np.arange(len(positions), dtype=np.int16)[:, None, None] * np.ones((1, 20, 20), np.int16)
    return Volume(
        hu=hu,
        orientation=np.array([[1.0, 0, 0], [0, 1.0, 0]]),
        pixel_spacing_mm=(1.0, 1.0),
        slice_origins_lps_mm=np.array([[0.0, 0.0, z] for z in positions]),
    )


def _where(vol: Volume, z: float) -> int | str:
    """The slice a circle at height z is measured on, or the error code."""
    try:
        rm = rasterize_roi(vol, _roi("r", _circle(z)))
    except RoiPlacementError as exc:
        return exc.code
    return rm.slice_indices[0]


def test_irregular_spacing_uses_the_nominal_spacing():
    # median step 1 mm; one step of 1.4 mm (not a gap for the index: < 1.5x)
    vol = _stack([0.0, 1.0, 2.0, 3.0, 4.4, 5.4, 6.4, 7.4])
    assert _where(vol, 3.5) == 3  # 0.5 mm from slice 3
    assert _where(vol, 3.6) == "roi-in-gap"  # 0.6 mm from the nearest slice
    assert _where(vol, 3.7) == "roi-in-gap"  # equally far, but from neither imaged
    assert _where(vol, 3.9) == 4  # 0.5 mm from slice 4.4


def test_jitter_below_one_percent_is_no_gap():
    # steps alternate 1.004 / 0.996 mm (median 1.0): a plane 0.5005 mm from slice 2 and
    # 0.5035 mm from slice 3.004 lies in no gap
    pos = [0.0, 1.004, 2.0, 3.004, 4.0, 5.004, 6.0]
    vol = _stack(pos)
    assert max_plane_distance(1.0) > 0.5035
    assert _where(vol, 2.5005) == 2
    assert _where(vol, 2.52) == 3


def test_partial_volume_with_info_decides_like_the_full_series(measured):
    # rasterize with a SeriesInfo uses the series' positions, not the loaded ones: the
    # batch loads only the slices ROIs touch, so the loaded stack may have no gap at all
    from hu_roi.io import index_folder, load_series
    from hu_roi.rasterize import slices_needed

    full, gapped, _ = measured
    dicom = Path(str(gapped["on-33"]["roi_file"])).parent / "dicom"
    info = index_folder(dicom).series[0]
    roi = _roi("x", _circle(60.0))
    with pytest.raises(RoiPlacementError) as ei:
        slices_needed(roi, info)
    assert ei.value.code == "roi-in-gap"
    vol = load_series(info, slices=[10, 11], accept=("missing-slices",))
    with pytest.raises(RoiPlacementError) as ei:
        rasterize_roi(vol, roi)
    assert ei.value.code == "roi-in-gap" and "27.00 mm" in str(ei.value)
    assert math.isclose(info.slice_spacing_mm, STEP)
