"""``hu-roi export-dicom``: DICOM SR (TID 1500) and SEG read back with highdicom and pydicom.

References the export is checked against, each computed independently of the writer:

- values: the measurement CSV of ``hu-roi measure`` on the same input (text cells compared
  to the SR's float values formatted the CSV's way);
- references: the SOPInstanceUIDs of the files the test wrote (dicom_factory) or of the
  real files, read with pydicom;
- masks: :func:`hu_roi.rasterize.rasterize_roi` on the loaded volume (the voxels measured),
  and the CSV's voxel count;
- codes: pydicom's own table of DICOM CID 7603 (Vertebra).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

highdicom = pytest.importorskip("highdicom")

from hu_roi.csvtext import number_text  # noqa: E402
from hu_roi.io import index_folder, load_series  # noqa: E402
from hu_roi.io.dicom_export import VERTEBRA_CODES  # noqa: E402
from hu_roi.rasterize import rasterize_roi  # noqa: E402
from hu_roi.roi import Roi, RoiSet, save_roiset  # noqa: E402
from tests.cli_helpers import run_main  # noqa: E402
from tests.dicom_factory import write_ct_series  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "real_ct"
ANON = {"PatientBirthDate": None, "PatientSex": None, "StudyID": None, "AccessionNumber": None}


# ----------------------------------------------------------------------------- helpers
def _series(folder: Path, *, seed: int = 1, **kw) -> tuple[list[Path], str]:
    """A 6-slice, 48×40 series with noisy HU; returns (paths in slice order, series UID)."""
    rng = np.random.default_rng(seed)
    hu = rng.normal(150.0, 30.0, size=(6, 48, 40)).round()
    kw.setdefault("pixel_spacing", (0.8, 0.7))
    kw.setdefault("slice_positions", np.arange(6) * 2.5)
    kw.setdefault("origin", (-10.0, -20.0, 50.0))
    paths = write_ct_series(folder, hu, **kw)
    return paths, str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)


def _roi(roi_id: str, uid: str, shape: dict, **kw) -> Roi:
    d = {
        "roi_id": roi_id,
        "patient_id": "TEST",
        "timepoint": "T0",
        "series_instance_uid": uid,
        "kind": "target",
        "level": None,
        "shape": shape,
    }
    d.update(kw)
    return Roi.from_dict(d)


def _write_rois(path: Path, rois: list[Roi], reader: str = "R1") -> Path:
    save_roiset(RoiSet(rois=tuple(rois), reader=reader), path)
    return path


def _measure_csv(dicom: Path, rois: Path, out: Path) -> dict[str, dict[str, str]]:
    r = run_main("measure", "-q", "--no-cache", "--dicom", str(dicom), "--rois", str(rois),
                 "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    with open(out, newline="") as fh:
        return {row["roi_id"]: row for row in csv.DictReader(fh)}


def _export(dicom: Path, rois: Path, out: Path, *extra: str):
    return run_main("export-dicom", "--no-cache", "--dicom", str(dicom), "--rois", str(rois),
                    "--out", str(out), *extra)  # fmt: skip


def _manifest(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "export.csv", newline="") as fh:
        return {row["roi_id"]: row for row in csv.DictReader(fh)}


def _sop_uids(folder: Path) -> dict[str, Path]:
    out = {}
    for p in folder.rglob("*"):
        if p.is_file():
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True)
            except pydicom.errors.InvalidDicomError:
                continue  # PROVENANCE.md
            out[str(ds.SOPInstanceUID)] = p
    return out


def _all_values(ds: pydicom.Dataset, keyword: str) -> list[str]:
    """Every value of ``keyword`` anywhere in ``ds`` (nested sequences too), by pydicom."""
    found: list[str] = []

    def walk(d: pydicom.Dataset) -> None:
        for el in d:
            if el.keyword == keyword:
                found.append(str(el.value))
            if el.VR == "SQ":
                for item in el.value:
                    walk(item)

    walk(ds)
    return found


def _groups(sr_path: Path) -> dict[str, object]:
    sr = highdicom.sr.srread(sr_path)
    gs = list(sr.content.get_planar_roi_measurement_groups())
    gs += list(sr.content.get_volumetric_roi_measurement_groups())
    return {g.tracking_identifier: g for g in gs}


def _values(group) -> dict[str, float]:
    """{'mean_hu': …, 'sd_hu': …, 'median_hu': …, 'area_mm2'|'volume_mm3': …}."""
    names = {"Mean": "mean_hu", "Standard Deviation": "sd_hu", "Median": "median_hu"}
    out = {}
    for m in group.get_measurements():
        if m.name.value == "112031":
            assert m.unit.value == "[hnsf'U]"
            out[names[m.derivation.meaning]] = m.value
        elif m.name == codes.SCT.Area:
            assert m.unit.value == "mm2"
            out["area_mm2"] = m.value
        elif m.name == codes.SCT.Volume:
            assert m.unit.value == "mm3"
            out["volume_mm3"] = m.value
    return out


def _qc(group) -> tuple[str, list[str]]:
    status, flags = "", []
    for q in group.get_qualitative_evaluations():
        assert q.name.scheme_designator == "99HUROI"
        if q.name.value == "qc-status":
            status = q.value.value
        else:
            flags.append(q.value.value)
    return status, flags


def _seg_masks(seg_path: Path) -> dict[int, dict[str, np.ndarray]]:
    """segment number -> {source SOPInstanceUID: frame mask}, decoded by pydicom alone."""
    ds = pydicom.dcmread(seg_path)
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    out: dict[int, dict[str, np.ndarray]] = {}
    shared = ds.SharedFunctionalGroupsSequence[0]
    for f, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        # one segment only: its identification may be shared by all frames
        ident = fg if "SegmentIdentificationSequence" in fg else shared
        seg_no = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        src = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        out.setdefault(seg_no, {})[str(src)] = frames[f].astype(bool)
    return out


# ------------------------------------------------------------------------------- cases
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Two series (one anonymised, feet-first order, anisotropic pixels) and one ROI file
    with every area shape, a sphere, an ROI that fails and a line."""
    root = tmp_path_factory.mktemp("export")
    dicom = root / "dicom"
    a_paths, a_uid = _series(dicom / "a", seed=1)
    b_paths, b_uid = _series(
        dicom / "b", seed=2, extra_tags=ANON, reverse_order=True, pixel_spacing=(0.6, 0.9)
    )
    rois = [
        _roi("A-L1", a_uid, {"type": "circle", "center_mm": [5.1, 0.3, 52.6], "radius_mm": 6.2},
             level="L1"),
        _roi("A-T12", a_uid, {"type": "ellipse", "center_mm": [3.0, 4.0, 55.1],
                              "radii_mm": [4.0, 8.5], "angle_deg": 25.0}, level="T12"),
        _roi("A-fat", a_uid, {"type": "polygon", "points_mm": [[-5, -15, 57.4], [10, -14, 57.4],
                                                               [12, -4, 57.4], [-3, -6, 57.4]]},
             kind="reference-fat"),
        _roi("A-muscle", a_uid, {"type": "sphere", "center_mm": [8.0, 6.0, 56.0], "radius_mm": 4.1},
             kind="reference-muscle"),
        _roi("A-outside", a_uid, {"type": "circle", "center_mm": [5.0, 0.0, 120.0],
                                  "radius_mm": 5.0}, level="L2"),
        _roi("A-height", a_uid, {"type": "line", "points_mm": [[0, 0, 52.5], [0, 10, 52.5]]},
             kind="height-anterior", level="L1"),
        _roi("B-S1", b_uid, {"type": "circle", "center_mm": [0.0, 0.0, 57.5], "radius_mm": 5.0},
             level="S1"),
        _roi("B-air-Ü€", b_uid, {"type": "ellipse", "center_mm": [2.0, 1.0, 50.2],
                              "radii_mm": [6.0, 3.0]}, kind="reference-air"),
    ]  # fmt: skip
    rois_path = _write_rois(root / "r.rois.json", rois)
    csv_rows = _measure_csv(dicom, rois_path, root / "m.csv")
    out = root / "out"
    r = _export(dicom, rois_path, out)
    assert r.returncode == 0, r.stderr
    return {
        "root": root,
        "dicom": dicom,
        "rois": rois_path,
        "out": out,
        "csv": csv_rows,
        "paths": {a_uid: a_paths, b_uid: b_paths},
        "stderr": r.stderr,
        "roi_objs": {x.roi_id: x for x in rois},
    }


def test_one_sr_and_seg_per_series_and_manifest(synthetic):
    out, csv_rows = synthetic["out"], synthetic["csv"]
    names = sorted(p.name for p in out.iterdir())
    assert sum(n.endswith(".SR.dcm") for n in names) == 2
    assert sum(n.endswith(".SEG.dcm") for n in names) == 2
    man = _manifest(out)
    assert list(man) == list(csv_rows)  # every ROI, in input order
    assert man["A-outside"]["exported"] == "false"
    assert "roi-outside-image" in man["A-outside"]["reason"]
    assert man["A-height"]["exported"] == "false" and "line" in man["A-height"]["reason"]
    for rid in ("A-L1", "A-T12", "A-fat", "A-muscle", "B-S1", "B-air-Ü€"):
        assert man[rid]["exported"] == "true", man[rid]
        assert man[rid]["qc_status"] == csv_rows[rid]["qc_status"]
    assert "skipped 'A-outside': roi-outside-image" not in synthetic["stderr"]
    assert "skipped 'A-outside': not measured (roi-outside-image" in synthetic["stderr"]


def test_sr_values_equal_measurement_csv(synthetic):
    out, csv_rows, man = synthetic["out"], synthetic["csv"], _manifest(synthetic["out"])
    seen = set()
    for sr_name in {r["sr_file"] for r in man.values() if r["sr_file"]}:
        groups = _groups(out / sr_name)
        for rid, g in groups.items():
            row = csv_rows[rid]
            seen.add(rid)
            vals = _values(g)
            for col in ("mean_hu", "sd_hu", "median_hu"):
                assert number_text(vals[col]) == row[col], (rid, col)
            size = "volume_mm3" if row["shape"] == "sphere" else "area_mm2"
            assert number_text(vals[size]) == row[size], (rid, size)
            status, flags = _qc(g)
            assert status == row["qc_status"]
            assert ";".join(flags) == row["qc_flags"]
            assert g.tracking_uid == man[rid]["tracking_uid"]
    assert seen == {r for r, m in man.items() if m["exported"] == "true"}


def test_sr_finding_sites_and_codes(synthetic):
    man = _manifest(synthetic["out"])
    want = {
        "A-L1": codes.cid7603.L1Vertebra,
        "A-T12": codes.cid7603.T12Vertebra,
        "A-fat": codes.SCT.AdiposeTissue,
        "A-muscle": codes.SCT.SkeletalMuscle,
        "B-air-Ü€": codes.SCT.Air,
        "B-S1": None,  # not in CID 7603: checked against the documented table below
    }
    for rid, code in want.items():
        g = _groups(synthetic["out"] / man[rid]["sr_file"])[rid]
        (site,) = g.finding_sites
        got = (site.value.value, site.value.scheme_designator)
        if code is None:
            assert got == (VERTEBRA_CODES["S1"][0], "SCT")
        else:
            assert got == (code.value, code.scheme_designator)
    # the table agrees with pydicom's CID 7603 for every level it holds
    names = [n for n in dir(codes.cid7603) if n.endswith("Vertebra")]
    assert len(names) == 24  # C1-L5
    for name in names:
        c = getattr(codes.cid7603, name)
        assert VERTEBRA_CODES[name.removesuffix("Vertebra")][0] == c.value, name


def test_every_reference_resolves_to_a_file_of_the_series(synthetic):
    out, man, csv_rows = synthetic["out"], _manifest(synthetic["out"]), synthetic["csv"]
    for uid, paths in synthetic["paths"].items():
        files = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in paths}
        # slice index -> file: the factory's paths are in position order (= index order)
        by_index = {
            i: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for i, p in enumerate(paths)
        }
        for_uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).FrameOfReferenceUID)
        mine = {
            r["sr_file"] for r in man.values() if r["series_instance_uid"] == uid and r["sr_file"]
        }
        (sr_name,) = mine
        seg_name = sr_name.replace(".SR.", ".SEG.")
        for name in (sr_name, seg_name):
            ds = pydicom.dcmread(out / name)
            refs = _all_values(ds, "ReferencedSOPInstanceUID")
            assert refs, name
            assert set(refs) <= set(files), (name, set(refs) - set(files))
            assert set(_all_values(ds, "ReferencedSeriesInstanceUID")) <= {uid}
            assert (
                str(ds.FrameOfReferenceUID if "FrameOfReferenceUID" in ds else for_uid) == for_uid
            )
        # each measurement references exactly the slices of the CSV's slice_indices
        for rid, g in _groups(out / sr_name).items():
            want = {by_index[int(k)] for k in csv_rows[rid]["slice_indices"].split(";")}
            for m in g.get_measurements():
                got = {r.referenced_sop_instance_uid for r in m.referenced_images}
                assert got == want, (rid, m.name.meaning)
            if isinstance(g, highdicom.sr.PlanarROIMeasurementsAndQualitativeEvaluations):
                assert g.roi.ReferencedFrameOfReferenceUID == for_uid
        # every SCOORD3D (regions and the sphere's surface) in the images' frame
        sr = pydicom.dcmread(out / sr_name)
        assert set(_all_values(sr, "ReferencedFrameOfReferenceUID")) == {for_uid}
        assert _all_values(sr, "GraphicType").count("ELLIPSOID") == (uid == a_uid(synthetic))


def a_uid(case) -> str:
    return case["roi_objs"]["A-L1"].series_instance_uid


def test_sr_geometry_is_the_roi_on_its_slice(synthetic):
    out, man = synthetic["out"], _manifest(synthetic["out"])
    roi = synthetic["roi_objs"]["A-L1"]
    g = _groups(out / man["A-L1"]["sr_file"])["A-L1"]
    pts = np.asarray(g.roi.value, dtype=float)
    assert g.roi.GraphicType == "ELLIPSE"
    # measured on slice 1 (z = 52.5): the circle projected there, radius 6.2 mm
    centre = np.array(roi.shape.center_mm)
    centre[2] = 52.5
    assert np.allclose(pts.mean(axis=0), centre, atol=1e-4)
    assert np.allclose(np.linalg.norm(pts - centre, axis=1), 6.2, atol=1e-4)
    poly = _groups(out / man["A-fat"]["sr_file"])["A-fat"].roi
    assert poly.GraphicType == "POLYGON"
    p = np.asarray(poly.value, dtype=float)
    assert np.allclose(p[0], p[-1]) and len(p) == 5


def test_seg_masks_equal_rasterisation(synthetic):
    out, man, csv_rows = synthetic["out"], _manifest(synthetic["out"]), synthetic["csv"]
    idx = {s.series_instance_uid: s for s in index_folder(synthetic["dicom"]).series}
    for rid, row in man.items():
        if row["exported"] != "true":
            continue
        info = idx[row["series_instance_uid"]]
        roi = synthetic["roi_objs"][rid]
        vol = load_series(info)
        rm = rasterize_roi(vol, roi)
        dense = rm.to_dense(vol.shape)
        masks = _seg_masks(out / row["seg_file"])[int(row["segment_number"])]
        uids = [s.sop_instance_uid for s in info.slices]
        got = np.zeros(vol.shape, dtype=bool)
        for src, m in masks.items():
            got[uids.index(src)] = m
        assert np.array_equal(got, dense), rid
        assert int(got.sum()) == int(csv_rows[rid]["n_voxels"]), rid
        # and highdicom reads the same segment description
        seg = highdicom.seg.segread(out / row["seg_file"])
        desc = seg.get_segment_description(int(row["segment_number"]))
        assert desc.segment_label == rid and desc.tracking_uid == row["tracking_uid"]


def test_anonymised_series_exports_with_empty_type2(synthetic):
    out, man = synthetic["out"], _manifest(synthetic["out"])
    src = pydicom.dcmread(synthetic["paths"][man["B-S1"]["series_instance_uid"]][0])
    assert "PatientBirthDate" not in src and "StudyID" not in src  # the input lacks them
    for name in (man["B-S1"]["sr_file"], man["B-S1"]["seg_file"]):
        ds = pydicom.dcmread(out / name)
        for kw in ("PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber"):
            assert kw in ds and ds[kw].value in ("", None), (name, kw)
        assert ds.PatientID == src.PatientID and ds.StudyInstanceUID == src.StudyInstanceUID
    # the other series keeps its own (not anonymised) values
    a = pydicom.dcmread(out / man["A-L1"]["sr_file"])
    assert a.PatientBirthDate == "19500101"


def test_rerun_replaces_the_folder_and_keeps_tracking_uids(synthetic, tmp_path):
    out = synthetic["out"]
    before = _manifest(out)
    r = _export(synthetic["dicom"], synthetic["rois"], out, "-q")
    assert r.returncode == 0 and r.stderr == ""
    after = _manifest(out)
    assert [x["tracking_uid"] for x in after.values()] == [
        x["tracking_uid"] for x in before.values()
    ]


# -------------------------------------------------------------------------- clear errors
def _assert_refused(r, out: Path, *needles: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert lines and lines[0].startswith("hu-roi export-dicom: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr
    assert not out.exists()


def test_frame_of_reference_mismatch_is_refused(tmp_path):
    paths, uid = _series(
        tmp_path / "dicom",
        frame_of_reference_uid="1.2.3.4",
        extra_tags={"FrameOfReferenceUID": lambda i: "1.2.3.4" if i < 4 else "1.2.3.5"},
    )
    rois = _write_rois(
        tmp_path / "r.rois.json",
        [_roi("x", uid, {"type": "circle", "center_mm": [0, 0, 52.5], "radius_mm": 5}, level="L1")],
    )
    out = tmp_path / "out"
    _assert_refused(_export(tmp_path / "dicom", rois, out), out, "Frame of Reference mismatch")


def test_roi_in_another_frame_of_reference_is_refused(tmp_path):
    paths, uid = _series(tmp_path / "dicom")
    rois = _write_rois(
        tmp_path / "r.rois.json",
        [_roi("x", uid, {"type": "circle", "center_mm": [0, 0, 52.5], "radius_mm": 5},
              level="L1", frame_of_reference_uid="1.2.999")],
    )  # fmt: skip
    out = tmp_path / "out"
    _assert_refused(_export(tmp_path / "dicom", rois, out), out, "Frame of Reference mismatch")


def test_skip_unexportable_writes_the_other_series(tmp_path):
    _, good = _series(tmp_path / "dicom" / "good")
    _, bad = _series(
        tmp_path / "dicom" / "bad",
        seed=3,
        extra_tags={"FrameOfReferenceUID": lambda i: "1.2.3.4" if i < 3 else "1.2.3.5"},
    )
    c = {"type": "circle", "center_mm": [0, 0, 52.5], "radius_mm": 5}
    rois = _write_rois(
        tmp_path / "r.rois.json",
        [_roi("good", good, c, level="L1"), _roi("bad", bad, c, level="L2")],
    )
    out = tmp_path / "out"
    _assert_refused(_export(tmp_path / "dicom", rois, out), out, "--skip-unexportable")
    r = _export(tmp_path / "dicom", rois, out, "--skip-unexportable")
    assert r.returncode == 0, r.stderr
    man = _manifest(out)
    assert man["good"]["exported"] == "true"
    assert man["bad"]["exported"] == "false" and "Frame of Reference" in man["bad"]["reason"]
    assert len(list(out.glob("*.SR.dcm"))) == 1


def test_nothing_measured_is_an_error(tmp_path):
    _, uid = _series(tmp_path / "dicom")
    rois = _write_rois(
        tmp_path / "r.rois.json",
        [
            _roi(
                "far", uid, {"type": "circle", "center_mm": [0, 0, 300], "radius_mm": 5}, level="L1"
            )
        ],
    )
    out = tmp_path / "out"
    _assert_refused(
        _export(tmp_path / "dicom", rois, out), out, "nothing to export", "roi-outside-image"
    )


def test_output_inside_the_dicom_folder_is_refused(tmp_path):
    _, uid = _series(tmp_path / "dicom")
    rois = _write_rois(
        tmp_path / "r.rois.json",
        [_roi("x", uid, {"type": "circle", "center_mm": [0, 0, 52.5], "radius_mm": 5}, level="L1")],
    )
    r = _export(tmp_path / "dicom", rois, tmp_path / "dicom")
    assert r.returncode == 2 and "refusing to overwrite an input" in r.stderr, r.stderr
    assert len(list((tmp_path / "dicom").iterdir())) == 6


# ------------------------------------------------------------------------------ real data
def test_real_series_without_uids_is_refused_with_the_reason(real_ct, tmp_path):
    dicom = real_ct / "siemens_biograph_mct_thoracolumbar" / "dicom"
    key = index_folder(dicom).series[0].series_key
    assert key.startswith("nouid-")
    rois = _write_rois(
        tmp_path / "r.rois.json",
        [Roi.from_dict({"roi_id": "T12", "patient_id": "X", "timepoint": "T0", "level": "T12",
                        "series_key": key, "kind": "target",
                        "shape": {"type": "circle", "center_mm": [6.5, -150.0, -790.5],
                                  "radius_mm": 8}})],
    )  # fmt: skip
    out = tmp_path / "out"
    _assert_refused(_export(dicom, rois, out), out, "SOPInstanceUID", "cannot be exported")


def test_real_water_phantom_read_back(real_ct, tmp_path):
    dicom = real_ct / "ge_discovery_mi_water_phantom"
    info = index_folder(dicom).series[0]
    rois = _write_rois(
        tmp_path / "r.rois.json",
        [Roi.from_dict({"roi_id": "water", "patient_id": info.patient_id, "timepoint": "T0",
                        "series_instance_uid": info.series_instance_uid,
                        "kind": "reference-water",
                        "shape": {"type": "circle", "center_mm": [0, 0, 60.0],
                                  "radius_mm": 20}})],
    )  # fmt: skip
    csv_rows = _measure_csv(dicom, rois, tmp_path / "m.csv")
    out = tmp_path / "out"
    r = _export(dicom, rois, out)
    assert r.returncode == 0, r.stderr
    row, man = csv_rows["water"], _manifest(out)["water"]
    g = _groups(out / man["sr_file"])["water"]
    vals = _values(g)
    for col in ("mean_hu", "sd_hu", "median_hu", "area_mm2"):
        assert number_text(vals[col]) == row[col], col
    assert abs(vals["mean_hu"]) < 5  # water, as PROVENANCE.md measured
    files = _sop_uids(dicom)
    sr = pydicom.dcmread(out / man["sr_file"])
    assert set(_all_values(sr, "ReferencedSOPInstanceUID")) <= set(files)
    assert sr.PatientID == "PHANTOM_EXAMPLE"
    vol = load_series(info)
    dense = rasterize_roi(
        vol, Roi.from_dict(json.loads((tmp_path / "r.rois.json").read_text())["rois"][0])
    ).to_dense(vol.shape)
    masks = _seg_masks(out / man["seg_file"])[1]
    uids = [s.sop_instance_uid for s in info.slices]
    got = np.zeros(vol.shape, dtype=bool)
    for src, m in masks.items():
        got[uids.index(src)] = m
    assert np.array_equal(got, dense) and int(got.sum()) == int(row["n_voxels"])


def test_sr_geometry_of_rotated_ellipse_and_sphere(synthetic):
    out, man = synthetic["out"], _manifest(synthetic["out"])
    # A-T12: radii (4, 8.5) along a = cos25°·X + sin25°·Y and b ⟂ a; the major axis (8.5 mm,
    # along b = -sin25°·X + cos25°·Y) comes first, on the slice at z = 55 (index 2)
    g = _groups(out / man["A-T12"]["sr_file"])["A-T12"]
    assert g.roi.GraphicType == "ELLIPSE"
    p = np.asarray(g.roi.value, dtype=float)
    t = np.radians(25.0)
    b = np.array([-np.sin(t), np.cos(t), 0.0])
    a = np.array([np.cos(t), np.sin(t), 0.0])
    c = np.array([3.0, 4.0, 55.0])
    assert np.allclose(p, [c - 8.5 * b, c + 8.5 * b, c - 4.0 * a, c + 4.0 * a], atol=1e-4)
    # A-muscle: a sphere of radius 4.1 mm as an ELLIPSOID (three axes) around its centre
    sr = pydicom.dcmread(out / man["A-muscle"]["sr_file"])
    (gd,) = [
        item.GraphicData for item in _items(sr) if getattr(item, "GraphicType", "") == "ELLIPSOID"
    ]
    q = np.asarray(gd, dtype=float).reshape(-1, 3)
    centre = np.array([8.0, 6.0, 56.0])
    assert q.shape == (6, 3)
    assert np.allclose(q.mean(axis=0), centre, atol=1e-4)
    assert np.allclose(np.linalg.norm(q - centre, axis=1), 4.1, atol=1e-4)


def _items(ds: pydicom.Dataset):
    """Every dataset nested in ``ds`` (content items of an SR)."""
    for el in ds:
        if el.VR == "SQ":
            for item in el.value:
                yield item
                yield from _items(item)


def test_one_sr_per_reader_and_distinct_tracking_uids(tmp_path):
    _, uid = _series(tmp_path / "dicom")
    c = {"type": "circle", "center_mm": [0, 0, 52.5], "radius_mm": 5}
    d = {"type": "circle", "center_mm": [2, 3, 55.0], "radius_mm": 4}
    _write_rois(tmp_path / "rois" / "r1.rois.json", [_roi("L1", uid, c, level="L1")], "R1")
    _write_rois(tmp_path / "rois" / "r2.rois.json", [_roi("L1", uid, c, level="L1")], "R2")
    # the same reader and roi_id again in another file: its own tracking UID
    _write_rois(tmp_path / "rois" / "r3.rois.json", [_roi("L1", uid, d, level="L1")], "R2")
    out = tmp_path / "out"
    r = _export(tmp_path / "dicom", tmp_path / "rois", out, "-q")
    assert r.returncode == 0, r.stderr
    with open(out / "export.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [x["reader"] for x in rows] == ["R1", "R2", "R2"]
    assert len({x["tracking_uid"] for x in rows}) == 3
    assert {x["sr_file"] for x in rows} == {f"{uid}_R1.SR.dcm", f"{uid}_R2.SR.dcm"}
    for reader in ("R1", "R2"):
        sr = pydicom.dcmread(out / f"{uid}_{reader}.SR.dcm")
        assert _all_values(sr, "PersonName") == [reader]
        uids = _all_values(sr, "UID")
        assert {x["tracking_uid"] for x in rows if x["reader"] == reader} <= set(uids)


def test_sr_groups_reference_their_seg_segment(synthetic, tmp_path):
    """--sr-groups segment: every group is a TID 1411 group whose Referenced Segment names
    the SEG written beside it (SOP Class and Instance UID) and the segment of its own ROI
    (the segment whose label is the roi_id), as dcmqi writes them; values as before."""
    out = tmp_path / "seg_groups"
    r = _export(synthetic["dicom"], synthetic["rois"], out, "--sr-groups", "segment", "-q")
    assert r.returncode == 0, r.stderr
    man, csv_rows = _manifest(out), synthetic["csv"]
    seen = set()
    for sr_name in {m["sr_file"] for m in man.values() if m["sr_file"]}:
        sr = highdicom.sr.srread(out / sr_name)
        assert not list(sr.content.get_planar_roi_measurement_groups())
        groups = list(sr.content.get_volumetric_roi_measurement_groups())
        seg_name = {m["seg_file"] for m in man.values() if m["sr_file"] == sr_name}.pop()
        seg = highdicom.seg.segread(out / seg_name)
        for g in groups:
            rid = g.tracking_identifier
            assert g.reference_type.value == "121191", g.reference_type  # Referenced Segment
            item = g.referenced_segment
            assert (
                item.source_series_for_segmentation.value
                == seg.ReferencedSeriesSequence[0].SeriesInstanceUID
            )
            assert item.referenced_sop_instance_uid == seg.SOPInstanceUID
            assert item.referenced_sop_class_uid == seg.SOPClassUID
            number = item.referenced_segment_numbers[0]
            assert number == int(man[rid]["segment_number"])
            assert seg.get_segment_description(number).segment_label == rid
            assert number_text(_values(g)["mean_hu"]) == csv_rows[rid]["mean_hu"]
            seen.add(rid)
    assert seen == {r for r, m in man.items() if m["exported"] == "true"}
