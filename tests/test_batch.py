"""Batch measurement end to end (real DICOM files written with pydicom, no mocks).

Independent references:
- the sample cohort's ``ground_truth.csv`` (statistics computed by the generator itself);
- DICOM series written by ``tests/dicom_factory.py`` with tricky geometry, measured against
  the brute-force voxel rule on the numpy array and geometry given to the writer;
- the real Siemens thoracolumbar series read with SimpleITK, voxel positions from
  SimpleITK's origin/direction/spacing, the rule applied with numpy.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import hu_roi.io
from hu_roi.batch import measure_batch
from hu_roi.cli import main
from hu_roi.export import MEASUREMENT_COLUMNS, columns, measurement_row, write_measurements_csv
from hu_roi.roi import Roi, RoiSet, save_roiset
from hu_roi.volume import Volume
from tests.dicom_factory import write_ct_series
from tests.test_rasterize import ORIENTATIONS, SHAPES, make_volume, reference_mask, shape_for

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicom"
SIEMENS = REPO.parent / "shared" / "real_ct" / "siemens_biograph_mct_thoracolumbar" / "dicom"


def need_sample():
    if not (SAMPLE / "dicom").is_dir() or not (SAMPLE / "ground_truth.csv").exists():
        pytest.skip("sample_dicom not generated")


@pytest.fixture(scope="module")
def sample_result():
    need_sample()
    return measure_batch(SAMPLE / "dicom", SAMPLE / "rois" / "sample.rois.json")


def ground_truth():
    with open(SAMPLE / "ground_truth.csv", newline="") as fh:
        return {r["roi_id"]: r for r in csv.DictReader(fh) if r["roi_id"]}


# ------------------------------------------------------------------------ sample cohort
def test_sample_cohort_matches_ground_truth(sample_result):
    gt = ground_truth()
    ms = {m.roi_id: m for m in sample_result.measurements}
    assert set(ms) == set(gt)
    for rid, g in gt.items():
        m = ms[rid]
        assert m.qc_status != "fail", (rid, m.qc_flags, m.detail)
        assert m.n_voxels == int(g["roi_n_voxels"]), rid
        # ground truth is rounded to 4 decimals
        assert m.mean_hu == pytest.approx(float(g["roi_mean_hu"]), abs=1.01e-4), rid
        assert m.sd_hu == pytest.approx(float(g["roi_sd_hu"]), abs=1.01e-4), rid
        assert m.median_hu == float(g["roi_median_hu"]), rid
        assert (m.min_hu, m.max_hu) == (float(g["roi_min_hu"]), float(g["roi_max_hu"])), rid
        if g["roi_slice_index"]:
            assert m.slice_index == int(g["roi_slice_index"]), rid
        assert m.kvp == float(g["kvp"]) and m.kernel == g["kernel"]
        assert m.series_instance_uid == g["series_instance_uid"]


def test_sample_cohort_flags(sample_result):
    # P03/T2 was scanned at 100 kVp (README): every ROI of that scan, and only those
    for m in sample_result.measurements:
        has = "kvp-differs-from-T0" in m.qc_flags
        assert has == (m.roi_id.startswith("P03-T2-")), m.roi_id
        # reference ROIs in the sample are placed in their tissues: no calibration flag
        assert not any(f.startswith("cal-") for f in m.qc_flags), (m.roi_id, m.qc_flags)


def test_sample_phantom_bmd(sample_result):
    # independent: np.polyfit on the ground-truth means of the rods of that scan
    gt = ground_truth()
    for m in sample_result.measurements:
        if m.kind != "target":
            continue
        rods = [
            g
            for g in gt.values()
            if g["kind"].startswith("phantom-")
            and g["patient_id"] == m.patient_id
            and g["timepoint"] == m.timepoint
        ]
        if not rods:
            assert m.bmd_mg_cm3 is None
            continue
        b, a = np.polyfit(
            [float(g["roi_mean_hu"]) for g in rods], [float(g["density_mg_cm3"]) for g in rods], 1
        )
        assert m.bmd_mg_cm3 == pytest.approx(a + b * m.mean_hu, abs=1e-3)  # rounded GT means


def test_only_touched_slices_are_loaded(monkeypatch):
    need_sample()
    calls = []
    real = hu_roi.io.load_series

    def spy(info, *, slices=None, accept=(), **kw):
        calls.append((info.n_slices, None if slices is None else list(slices)))
        return real(info, slices=slices, accept=accept, **kw)

    monkeypatch.setattr(hu_roi.io, "load_series", spy)
    res = measure_batch(SAMPLE / "dicom", SAMPLE / "rois" / "sample.rois.json")
    assert len(res.measurements) > 0 and calls
    for n_all, sl in calls:
        assert sl is not None and 0 < len(sl) < n_all


# ------------------------------------------------------------------------ CLI
def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_equals_api(tmp_path, sample_result):
    out1 = tmp_path / "m1.csv"
    rois = str(SAMPLE / "rois" / "sample.rois.json")
    assert (
        main(
            [
                "measure",
                "--dicom",
                str(SAMPLE / "dicom"),
                "--rois",
                rois,
                "--out",
                str(out1),
                "--quiet",
            ]
        )
        == 0
    )
    rows = read_csv(out1)
    header = next(csv.reader(open(out1)))
    assert tuple(header[: len(MEASUREMENT_COLUMNS)]) == MEASUREMENT_COLUMNS
    assert tuple(header) == columns()
    api = {m.roi_id: m for m in sample_result.measurements}
    assert len(rows) == len(api)
    for r in rows:
        m = api[r["roi_id"]]
        assert r == measurement_row(m), r["roi_id"]
        assert float(r["mean_hu"]) == m.mean_hu  # bit-identical through the CSV
    meta = json.loads((tmp_path / "m1.csv.meta.json").read_text())
    assert meta["tool"].startswith("hu-roi ") and meta["n_rows"] == len(rows)
    assert meta["inputs"]["roi_files"][0]["sha256"]
    assert meta["settings"]["min_voxels"] == 20
    # no direct identifiers by default; the option adds them
    text = out1.read_text()
    assert "SAMPLE^" not in text and "patient_name" not in text
    out3 = write_measurements_csv(
        sample_result.measurements, tmp_path / "m3.csv", include_identifiers=True
    )
    assert read_csv(out3)[0]["patient_name"].startswith("SAMPLE^")


def test_workers_give_the_same_rows(sample_result):
    # a folder of ROI files and two worker processes: same rows as in-process
    res = measure_batch(SAMPLE / "dicom", SAMPLE / "rois", workers=2)
    assert [measurement_row(m) for m in res.measurements] == [
        measurement_row(m) for m in sample_result.measurements
    ]


def test_cli_cannot_run_exits_nonzero_with_one_line(tmp_path, capsys):
    need_sample()
    cases = [
        ["--dicom", str(tmp_path / "nope"), "--rois", str(SAMPLE / "rois")],
        ["--dicom", str(SAMPLE / "dicom"), "--rois", str(REPO / "pyproject.toml")],
        ["--dicom", str(SAMPLE / "dicom"), "--rois", str(tmp_path)],  # no ROI files
        ["--dicom", str(SAMPLE / "dicom"), "--rois", str(tmp_path / "missing.rois.json")],
    ]
    for args in cases:
        capsys.readouterr()
        assert main(["measure", *args, "--quiet", "--out", str(tmp_path / "x.csv")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hu-roi measure: error:") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.csv").exists()


def test_failed_rois_are_rows(tmp_path):
    need_sample()
    gt = ground_truth()
    g = gt["P01-T0-L1"]
    uid = g["series_instance_uid"]
    base = {"patient_id": "P01", "timepoint": "T0", "kind": "target", "level": "L1"}
    centre = [float(g["center_x_mm"]), float(g["center_y_mm"]), float(g["center_z_mm"])]
    rois = [
        Roi.from_dict(
            {
                **base,
                "roi_id": "ok",
                "series_instance_uid": uid,
                "shape": {"type": "circle", "center_mm": centre, "radius_mm": 5},
            }
        ),
        Roi.from_dict(
            {
                **base,
                "roi_id": "no-series",
                "series_instance_uid": "9.9.9",
                "shape": {"type": "circle", "center_mm": centre, "radius_mm": 5},
            }
        ),
        Roi.from_dict(
            {
                **base,
                "roi_id": "outside",
                "series_instance_uid": uid,
                "shape": {"type": "circle", "center_mm": [500.0, 0.0, centre[2]], "radius_mm": 5},
            }
        ),
        Roi.from_dict(
            {
                **base,
                "roi_id": "tie",
                "series_instance_uid": uid,
                "shape": {
                    "type": "circle",
                    "center_mm": [*centre[:2], centre[2] + 1.5],
                    "radius_mm": 5,
                },
            }
        ),
        Roi.from_dict(
            {
                **base,
                "roi_id": "ambiguous",  # P01/T0 also holds a B30f decoy
                "shape": {"type": "circle", "center_mm": centre, "radius_mm": 5},
            }
        ),
    ]
    # P02 has one CT series per visit: an ROI without UID is placed by the study date
    # of the other P02-T2 ROI that names its series; without that ROI it is ambiguous
    g2 = gt["P02-T2-L1"]
    c2 = [float(g2["center_x_mm"]), float(g2["center_y_mm"]), float(g2["center_z_mm"])]
    p02 = {**base, "patient_id": "P02", "timepoint": "T2", "level": "L1"}
    shape2 = {"type": "circle", "center_mm": c2, "radius_mm": 5}
    rois += [
        Roi.from_dict(
            {
                **p02,
                "roi_id": "p02-uid",
                "series_instance_uid": g2["series_instance_uid"],
                "shape": shape2,
            }
        ),
        Roi.from_dict({**p02, "roi_id": "p02-by-date", "shape": shape2}),
        Roi.from_dict({**p02, "roi_id": "p02-T3-alone", "timepoint": "T3", "shape": shape2}),
    ]
    f = tmp_path / "t.rois.json"
    save_roiset(RoiSet(rois=tuple(rois), reader="R2"), f)
    out = tmp_path / "t.csv"
    assert (
        main(
            [
                "measure",
                "--dicom",
                str(SAMPLE / "dicom"),
                "--rois",
                str(f),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    rows = {r["roi_id"]: r for r in read_csv(out)}
    assert rows["ok"]["qc_status"] != "fail" and rows["ok"]["reader"] == "R2"
    assert rows["no-series"]["qc_status"] == "fail"
    assert rows["no-series"]["qc_flags"].split(";")[0] == "series-not-found"
    assert rows["outside"]["qc_flags"].split(";")[0] == "roi-outside-image"
    assert rows["tie"]["qc_flags"].split(";")[0] == "roi-slice-tie"
    assert rows["ambiguous"]["qc_flags"].split(";")[0] == "series-ambiguous"
    assert rows["p02-by-date"]["series_instance_uid"] == g2["series_instance_uid"]
    assert rows["p02-by-date"]["mean_hu"] == rows["p02-uid"]["mean_hu"] != ""
    assert rows["p02-T3-alone"]["qc_flags"].split(";")[0] == "series-ambiguous"
    for k in ("no-series", "outside", "tie", "ambiguous"):
        assert rows[k]["mean_hu"] == "" and rows[k]["n_voxels"] == "0" and rows[k]["detail"]


def test_empty_roi_set_gives_header_only(tmp_path):
    write_ct_series(tmp_path / "dicom", np.zeros((3, 8, 8)))
    e = tmp_path / "e.rois.json"
    save_roiset(RoiSet(rois=(), reader="R2"), e)
    out_e = tmp_path / "e.csv"
    assert (
        main(
            [
                "measure",
                "--dicom",
                str(tmp_path / "dicom"),
                "--rois",
                str(e),
                "--out",
                str(out_e),
                "--quiet",
            ]
        )
        == 0
    )
    assert out_e.read_text().splitlines() == [",".join(columns())]


# ------------------------------------------------------------------------ tricky geometry
UID = "1.2.826.0.1.3680043.10.1234.9.4242"
CASES = {
    "feet-first-descending": dict(
        geom=dict(orientation=ORIENTATIONS["axial-ffs"], descending=True),
        write=dict(patient_position="FFS", transfer_syntax="1.2.840.10008.1.2.5"),
    ),
    "sagittal-aniso-j2k": dict(
        geom=dict(orientation=ORIENTATIONS["sagittal"], spacing=(0.9, 0.5), shape=(9, 40, 36)),
        write=dict(transfer_syntax="1.2.840.10008.1.2.4.90"),
    ),
    "flipY-reverse-instance": dict(
        geom=dict(orientation=ORIENTATIONS["axial-flipY"], spacing=(1.1, 0.6)),
        write=dict(reverse_order=True, unsigned=False),
    ),
    "oblique": dict(geom=dict(orientation=ORIENTATIONS["oblique"]), write={}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_written_series_measured_like_brute_force(tmp_path, case):
    c = CASES[case]
    ref = make_volume(**c["geom"], seed=3)
    write_ct_series(
        tmp_path / "dicom",
        ref.hu,
        pixel_spacing=ref.pixel_spacing_mm,
        origins=ref.slice_origins_lps_mm,
        orientation=tuple(ref.orientation.ravel()),
        series_uid=UID,
        **c["write"],
    )
    rois = tuple(
        Roi.from_dict(
            {
                "roi_id": k,
                "patient_id": "TEST",
                "kind": "target",
                "series_instance_uid": UID,
                "shape": shape_for(k, ref),
            }
        )
        for k in SHAPES
    )
    f = tmp_path / "r.rois.json"
    save_roiset(RoiSet(rois=rois, reader="R1"), f)
    res = measure_batch(tmp_path / "dicom", f)
    for m, r in zip(res.measurements, rois, strict=True):
        x = ref.hu[reference_mask(ref, r)].astype(float)
        assert m.n_voxels == x.size > 10, (case, r.roi_id, m.qc_flags, m.detail)
        assert m.mean_hu == pytest.approx(math.fsum(x) / x.size, abs=1e-9)
        assert m.max_hu == x.max() and m.min_hu == x.min()


# ------------------------------------------------------------------------ real Siemens CT
def _lps(row, col, k):
    # from PROVENANCE.md: IPP of slice k = (-249.51171875, -437.51171875, -804.5 + 2k),
    # orientation [1,0,0,0,1,0], pixel spacing 0.9765625
    return [-249.51171875 + col * 0.9765625, -437.51171875 + row * 0.9765625, -804.5 + 2.0 * k]


@pytest.mark.realct
def test_real_siemens_vertebral_body_vs_simpleitk(tmp_path):
    if not SIEMENS.is_dir():
        pytest.skip("real_ct data not available")
    from tests.sitk_ref import read_with_sitk

    # T12 vertebral body centre chosen by inspecting HU on slice 8 (trabecular bone
    # ≈ 150-250 HU between rows 315-345 and columns 230-270; spine posterior-central)
    c = _lps(330.2, 250.3, 8)
    c_off = _lps(330.2, 250.3, 8.2)  # plane 0.4 mm above slice 8
    X, Y = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    hexagon = [
        (np.array(c) + 9 * math.cos(a) * X + 7 * math.sin(a) * Y).tolist()
        for a in np.linspace(0, 2 * math.pi, 6, endpoint=False) + 0.1
    ]
    shapes = {
        "circle": {"type": "circle", "center_mm": c_off, "radius_mm": 9.0},
        "ellipse": {"type": "ellipse", "center_mm": c, "radii_mm": [12.0, 8.0]},
        "rotated-ellipse": {
            "type": "ellipse",
            "center_mm": c,
            "radii_mm": [12.0, 7.0],
            "angle_deg": 30.0,
        },
        "polygon": {"type": "polygon", "points_mm": hexagon},
        "sphere": {"type": "sphere", "center_mm": c_off, "radius_mm": 7.0},
    }
    rois = tuple(
        Roi.from_dict(
            {"roi_id": k, "patient_id": "S01", "kind": "target", "level": "T12", "shape": s}
        )
        for k, s in shapes.items()
    )
    f = tmp_path / "siemens.rois.json"
    save_roiset(RoiSet(rois=rois, reader="R1"), f)
    res = measure_batch(SIEMENS, f)
    # reference: SimpleITK pixels and geometry, the voxel rule by brute force in numpy
    img = read_with_sitk(SIEMENS)
    arr = np.asarray(__import__("SimpleITK").GetArrayFromImage(img))
    D = np.asarray(img.GetDirection()).reshape(3, 3)
    sx, sy, sz = img.GetSpacing()
    o = np.asarray(img.GetOrigin())
    ref = Volume(
        hu=arr,
        orientation=D[:, :2].T,
        pixel_spacing_mm=(sy, sx),
        slice_origins_lps_mm=o + np.arange(arr.shape[0])[:, None] * sz * D[:, 2],
    )
    for m, r in zip(res.measurements, rois, strict=True):
        x = arr[reference_mask(ref, r)].astype(float)
        assert m.qc_status in ("pass", "warn"), (r.roi_id, m.qc_flags, m.detail)
        assert m.n_voxels == x.size > 50
        assert m.mean_hu == pytest.approx(math.fsum(x) / x.size, abs=1e-9)
        assert m.sd_hu == pytest.approx(np.std(x, ddof=1), rel=1e-9)
        assert 100 < m.mean_hu < 350, (r.roi_id, m.mean_hu)  # trabecular bone
        assert "series-empty-uid" in m.qc_flags
        assert "contrast-agent" in m.qc_flags  # ContrastBolusAgent APPLIED
        assert "cortical-contamination" not in m.qc_flags
    assert res.measurements[0].slice_index == 8


# ------------------------------------------------------------------------ series problems
def _one_roi_file(tmp_path, uid, z):
    r = Roi.from_dict(
        {
            "roi_id": "r",
            "patient_id": "TEST",
            "kind": "target",
            "series_instance_uid": uid,
            "shape": {"type": "circle", "center_mm": [8.0, 8.0, z], "radius_mm": 5},
        }
    )
    f = tmp_path / "r.rois.json"
    save_roiset(RoiSet(rois=(r,), reader="R1"), f, overwrite=True)
    return f


def test_refused_series_and_accepted_problems(tmp_path):
    hu = np.full((4, 16, 16), 100.0)
    # duplicate positions: refused (series-refused + the problem code)
    write_ct_series(tmp_path / "dup", hu, slice_positions=[0, 2, 2, 4], series_uid=UID + ".1")
    m = measure_batch(tmp_path / "dup", _one_roi_file(tmp_path, UID + ".1", 0.0)).measurements[0]
    assert m.qc_status == "fail"
    assert {"series-refused", "series-duplicate-positions"} <= set(m.qc_flags)
    # ... unless the caller accepts it (CLI: --accept duplicate-positions)
    a = measure_batch(
        tmp_path / "dup",
        _one_roi_file(tmp_path, UID + ".1", 0.0),
        accept=("duplicate-positions",),
    ).measurements[0]
    assert a.qc_status == "warn" and "series-duplicate-positions" in a.qc_flags
    assert "series-refused" not in a.qc_flags and a.mean_hu == 100.0
    out = tmp_path / "dup.csv"
    args = ["measure", "--dicom", str(tmp_path / "dup"), "--rois", str(tmp_path / "r.rois.json")]
    assert main([*args, "--out", str(out), "--quiet", "--accept", "duplicate-positions"]) == 0
    assert "series-refused" not in out.read_text()
    assert main([*args, "--quiet", "--accept", "no-such-code"]) == 2
    # a gap (missing-slices) is accepted: measured, with a warning
    write_ct_series(tmp_path / "gap", hu, slice_positions=[0, 2, 4, 10], series_uid=UID + ".2")
    g = measure_batch(tmp_path / "gap", _one_roi_file(tmp_path, UID + ".2", 2.0)).measurements[0]
    assert g.qc_status == "warn" and "series-missing-slices" in g.qc_flags
    assert "series-refused" not in g.qc_flags and g.mean_hu == 100.0
    # no problem: quiet
    write_ct_series(tmp_path / "ok", hu, slice_positions=[0, 2, 4, 6], series_uid=UID + ".3")
    ok = measure_batch(tmp_path / "ok", _one_roi_file(tmp_path, UID + ".3", 2.0)).measurements[0]
    assert not any(f.startswith("series-") for f in ok.qc_flags) and ok.mean_hu == 100.0


def test_unreadable_pixels_give_series_load_failed(tmp_path):
    from hu_roi.batch import _Item, measure_series
    from hu_roi.io import index_folder

    hu = np.full((3, 16, 16), 100.0)
    paths = write_ct_series(tmp_path / "d", hu, slice_positions=[0, 2, 4], series_uid=UID + ".4")
    info = index_folder(tmp_path / "d").series[0]
    r = Roi.from_dict(
        {
            "roi_id": "r",
            "patient_id": "TEST",
            "kind": "target",
            "shape": {"type": "circle", "center_mm": [8.0, 8.0, 2.0], "radius_mm": 5},
        }
    )
    rows, _ = measure_series(info, [_Item(0, r, "R1", "f")])
    assert rows[0][1].qc_status == "pass"
    # the file of the touched slice is truncated after indexing (a real broken file)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 300])
    rows, _ = measure_series(info, [_Item(0, r, "R1", "f")])
    m = rows[0][1]
    assert m.qc_status == "fail" and m.qc_flags[0] == "series-load-failed" and m.detail


def _small_series(tmp_path, n_series=2):
    rng = np.random.default_rng(7)
    rois = []
    for i in range(n_series):
        hu = rng.integers(-100, 400, size=(4, 20, 20)).astype(float)
        write_ct_series(
            tmp_path / "d" / str(i), hu, slice_positions=[0, 2, 4, 6], series_uid=f"{UID}.9{i}"
        )
        rois.append(
            Roi.from_dict(
                {
                    "roi_id": f"r{i}",
                    "patient_id": "TEST",
                    "kind": "target",
                    "series_instance_uid": f"{UID}.9{i}",
                    "shape": {"type": "circle", "center_mm": [9.0, 9.0, 2.0], "radius_mm": 5},
                }
            )
        )
    f = tmp_path / "r.rois.json"
    save_roiset(RoiSet(rois=tuple(rois), reader="R1"), f)
    return tmp_path / "d", f


def test_dask_scheduler_gives_the_same_rows(tmp_path):
    distributed = pytest.importorskip("distributed")
    d, f = _small_series(tmp_path)
    local = measure_batch(d, f)
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as client:
        remote = measure_batch(d, f, scheduler=client)
    assert [measurement_row(m) for m in remote.measurements] == [
        measurement_row(m) for m in local.measurements
    ]
    assert all(m.qc_status != "fail" for m in local.measurements)


def test_a_crashing_series_task_gives_fail_rows(tmp_path, monkeypatch):
    import hu_roi.batch as batch

    d, f = _small_series(tmp_path)
    real = batch.measure_series

    def crash_on_first(info, items, accepted, addons=None):
        if info.series_instance_uid.endswith(".90"):
            raise MemoryError("simulated: out of memory")
        return real(info, items, accepted, addons)

    monkeypatch.setattr(batch, "measure_series", crash_on_first)
    res = measure_batch(d, f)
    m0, m1 = res.measurements
    assert m0.qc_status == "fail" and m0.qc_flags[0] == "series-load-failed"
    assert "MemoryError" in m0.detail
    assert m1.qc_status != "fail" and m1.n_voxels > 0
