"""``hu-roi rois-from-labels`` (issue 15, item 4): proposed target ROIs from a vertebra
label map (NIfTI, RAS) on a CT series (DICOM, LPS).

The synthetic CT has two vertebra-like blocks (an elliptical body with a 1-pixel cortex
at 1200 HU around trabecular bone at 200 HU, and a posterior "arch" block), labelled as
TotalSegmentator v2 labels them (31 = vertebrae_L1, 30 = vertebrae_L2).  The reference
for "inside the eroded body" is an independent brute-force distance from every ROI voxel
centre to every voxel centre outside the body.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import run_main
from dicom_factory import write_ct_series

from hu_roi.io import index_folder, load_series
from hu_roi.io.labels import TOTALSEG_V2_LEVELS, LabelMapError, labels_on_volume, read_label_map
from hu_roi.rasterize import rasterize_roi
from hu_roi.roi import load_roiset

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real_ct"

SP = (0.75, 0.75)  # pixel spacing (ΔR, ΔC), mm
DZ = 2.0  # slice spacing, mm
ORIGIN = (-27.0, -20.0, 100.0)  # LPS of the first voxel
N, ROWS, COLS = 20, 100, 72
# (label, slices, body centre row/col, semi-axes along x/y in mm)
LEVELS = {31: (range(1, 9), 28, 36, 14.0, 11.0), 30: (range(11, 19), 30, 35, 15.0, 11.0)}


def _phantom() -> tuple[np.ndarray, np.ndarray]:
    """(hu, labels) arrays (slice, row, column)."""
    hu = np.zeros((N, ROWS, COLS))
    lab = np.zeros((N, ROWS, COLS), dtype=np.uint8)
    r, c = np.indices((ROWS, COLS))
    for value, (ks, r0, c0, ax, ay) in LEVELS.items():
        q = ((c - c0) * SP[1] / ax) ** 2 + ((r - r0) * SP[0] / ay) ** 2
        body = q <= 1.0
        inner = ((c - c0) * SP[1] / (ax - 1.0)) ** 2 + ((r - r0) * SP[0] / (ay - 1.0)) ** 2 <= 1
        # arch and spinous process: 4.5 mm behind the body, 33 mm long (body ~40% of the AP extent)
        arch = (
            (r >= r0 + int(ay / SP[0]) + 6) & (r <= r0 + int(ay / SP[0]) + 50) & (abs(c - c0) <= 4)
        )
        for k in ks:
            hu[k][body] = 1200.0
            hu[k][inner] = 200.0
            hu[k][arch] = 900.0
            lab[k][body | arch] = value
    lab[0, 90:94, 5:9] = 5  # a liver voxel patch: not a vertebra
    return hu, lab


def _lps_affine() -> np.ndarray:
    """(slice, row, column) index -> LPS (standard axial orientation)."""
    a = np.zeros((4, 4))
    a[:3, 0] = (0, 0, DZ)
    a[:3, 1] = (0, SP[0], 0)
    a[:3, 2] = (SP[1], 0, 0)
    a[:3, 3] = ORIGIN
    a[3, 3] = 1
    return a


def _write_nifti(
    path: Path, lab: np.ndarray, *, flip: int | None = None, shift_mm=(0, 0, 0)
) -> Path:
    """The label map as TotalSegmentator writes it: data[i, j, k] with i, j in RAS
    affine in RAS+.  ``flip`` reverses one more data axis (and its affine column)."""
    # NIfTI data[i, j, k] = labels[k, j', i'] with i = 71 - column, j = 71 - row: the
    # voxel axes point along +x and +y of RAS (= -x and -y of LPS)
    data = lab.transpose(2, 1, 0)[::-1, ::-1, :]
    lps = _lps_affine()
    # index (i, j, k) -> (slice k, row ROWS-1-j, column COLS-1-i)
    m = np.zeros((4, 4))
    m[0, 2] = 1
    m[1, 1] = -1
    m[1, 3] = ROWS - 1
    m[2, 0] = -1
    m[2, 3] = COLS - 1
    m[3, 3] = 1
    aff_lps = lps @ m
    if flip is not None:
        n = data.shape[flip]
        data = np.flip(data, axis=flip)
        f = np.eye(4)
        f[flip, flip] = -1
        f[flip, 3] = n - 1
        aff_lps = aff_lps @ f
    aff_lps[:3, 3] += np.asarray(shift_mm, dtype=float)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff_lps
    img = nib.Nifti1Image(np.ascontiguousarray(data), ras)
    img.set_qform(ras, code=1)
    img.set_sform(ras, code=1)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("rfl")
    hu, lab = _phantom()
    write_ct_series(
        root / "ct", hu, pixel_spacing=SP, slice_positions=np.arange(N) * DZ, origin=ORIGIN,
        extra_tags={"PatientID": "P07"},
    )  # fmt: skip
    return {"root": root, "dicom": root / "ct", "hu": hu, "lab": lab}


def _eroded_ok(body: np.ndarray, mask: np.ndarray, erosion_mm: float) -> bool:
    """Every voxel of ``mask`` lies at least ``erosion_mm`` inside ``body``'s edge (edge =
    half a pixel beyond the outer voxel centres), by brute force over all outside voxels."""
    rr, cc = np.nonzero(mask)
    orr, occ = np.nonzero(~body)
    d = np.sqrt(
        ((rr[:, None] - orr[None, :]) * SP[0]) ** 2 + ((cc[:, None] - occ[None, :]) * SP[1]) ** 2
    )
    return bool(np.all(d.min(axis=1) - 0.5 * SP[0] >= erosion_mm - 1e-9))


def _run(case: dict, labels: Path, out: Path, *extra: str):
    return run_main(
        "rois-from-labels", "--labels", str(labels), "--dicom", str(case["dicom"]),
        "--timepoint", "T0", "--out", str(out), "--no-cache", *extra,
    )  # fmt: skip


def _check_rois(case: dict, out: Path) -> None:
    rs = load_roiset(out)
    assert sorted(r.level for r in rs.rois) == ["L1", "L2"]
    info = index_folder(case["dicom"]).series[0]
    vol = load_series(info)
    for roi in rs.rois:
        assert roi.proposed is True and roi.kind == "target"
        assert roi.patient_id == "P07" and roi.timepoint == "T0"
        assert roi.series_instance_uid == info.series_instance_uid
        assert roi.roi_id == f"P07-T0-{roi.level}"
        value = {"L1": 31, "L2": 30}[roi.level]
        ks, r0, c0, ax, ay = LEVELS[value]
        rm = rasterize_roi(vol, roi)
        (part,) = rm.parts
        assert part.k in ks  # the right vertebra
        assert abs(part.k - (ks.start + ks.stop - 1) / 2) <= 0.5  # through the centroid
        mask = np.zeros((ROWS, COLS), dtype=bool)
        h, w = part.mask.shape
        mask[part.row0 : part.row0 + h, part.col0 : part.col0 + w] = part.mask
        body = case["lab"][part.k] == value
        assert mask.sum() * SP[0] * SP[1] >= 200.0
        assert _eroded_ok(body, mask, 3.0)
        assert np.all(case["hu"][part.k][mask] == 200.0)  # trabecular, no cortex, no arch
        # the centre lies in the body, near its middle
        cx, cy = (np.asarray(roi.shape.center_mm) - np.asarray(ORIGIN))[:2]
        assert abs(cy / SP[0] - r0) < 3 and abs(cx / SP[1] - c0) < 3


def test_totalseg_table() -> None:
    # TotalSegmentator v2, class_map["total"]: 26 vertebrae_S1 ... 50 vertebrae_C1
    assert TOTALSEG_V2_LEVELS[26] == "S1" and TOTALSEG_V2_LEVELS[27] == "L5"
    assert TOTALSEG_V2_LEVELS[31] == "L1" and TOTALSEG_V2_LEVELS[32] == "T12"
    assert TOTALSEG_V2_LEVELS[43] == "T1" and TOTALSEG_V2_LEVELS[44] == "C7"
    assert TOTALSEG_V2_LEVELS[50] == "C1" and 25 not in TOTALSEG_V2_LEVELS
    assert len(TOTALSEG_V2_LEVELS) == 25


@pytest.mark.parametrize("flip", [None, 0, 1, 2], ids=["ras", "flip-i", "flip-j", "flip-k"])
def test_proposes_one_roi_per_level(case: dict, tmp_path: Path, flip) -> None:
    labels = _write_nifti(tmp_path / "seg.nii.gz", case["lab"], flip=flip)
    out = tmp_path / "p.rois.json"
    res = _run(case, labels, out)
    assert res.returncode == 0, res.stderr
    _check_rois(case, out)
    assert "2 ROIs proposed" in res.stderr


def test_labels_on_volume_equal_the_ct_labels(case: dict, tmp_path: Path) -> None:
    # RAS -> LPS: with the x/y flip left out the map would not even cover the CT
    labels = _write_nifti(tmp_path / "seg.nii.gz", case["lab"], flip=1)
    vol = load_series(index_folder(case["dicom"]).series[0])
    got = labels_on_volume(read_label_map(labels), vol)
    assert np.array_equal(got, case["lab"])


def test_cortical_island_is_avoided(case: dict, tmp_path: Path) -> None:
    hu, lab = case["hu"].copy(), case["lab"]
    hu[12:16, 28:33, 33:38] = 1100.0  # a dense island in L2's core
    write_ct_series(tmp_path / "ct", hu, pixel_spacing=SP, slice_positions=np.arange(N) * DZ,
                    origin=ORIGIN, extra_tags={"PatientID": "P07"})  # fmt: skip
    labels = _write_nifti(tmp_path / "seg.nii.gz", lab)
    out = tmp_path / "p.rois.json"
    res = run_main("rois-from-labels", "--labels", str(labels), "--dicom", str(tmp_path / "ct"),
                   "--timepoint", "T1", "--out", str(out), "--no-cache")  # fmt: skip
    assert res.returncode == 0, res.stderr
    vol = load_series(index_folder(tmp_path / "ct").series[0])
    for roi in load_roiset(out).rois:
        (part,) = rasterize_roi(vol, roi).parts
        vals = vol.hu[part.k, part.row0 : part.row0 + part.mask.shape[0],
                      part.col0 : part.col0 + part.mask.shape[1]][part.mask]  # fmt: skip
        assert vals.max() < 700


def _refused(res, out: Path, *words: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hu-roi rois-from-labels: error:"), res.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in res.stderr and not out.exists()


def test_misaligned_label_map_is_refused(case: dict, tmp_path: Path) -> None:
    out = tmp_path / "p.rois.json"
    labels = _write_nifti(tmp_path / "s.nii.gz", case["lab"], shift_mm=(0.0, 0.0, 1.0))
    _refused(_run(case, labels, out), out, "not aligned", "mm")
    labels = _write_nifti(tmp_path / "s.nii.gz", case["lab"], shift_mm=(6.0, 0.0, 0.0))
    _refused(_run(case, labels, out), out, "does not cover")


def test_other_grid_is_refused(case: dict, tmp_path: Path) -> None:
    # a label map at half the resolution (TotalSegmentator --fast, not resampled back)
    coarse = case["lab"][:, ::2, ::2]
    lps = _lps_affine()
    lps[:3, 1] *= 2
    lps[:3, 2] *= 2
    ras = (
        np.diag([-1.0, -1.0, 1.0, 1.0])
        @ lps
        @ np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    )
    p = tmp_path / "c.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(coarse.transpose(2, 1, 0)), ras), str(p))
    out = tmp_path / "p.rois.json"
    _refused(_run(case, p, out), out, "not on the CT's grid")


def test_no_vertebra_labels_is_refused(case: dict, tmp_path: Path) -> None:
    lab = np.where(case["lab"] == 5, 5, 0).astype(np.uint8)
    labels = _write_nifti(tmp_path / "s.nii.gz", lab)
    out = tmp_path / "p.rois.json"
    _refused(_run(case, labels, out), out, "no vertebra label")


def test_bad_inputs_are_refused(case: dict, tmp_path: Path) -> None:
    out = tmp_path / "p.rois.json"
    txt = tmp_path / "seg.txt"
    txt.write_text("x")
    _refused(_run(case, txt, out), out, "not a NIfTI")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not gzip at all")
    _refused(_run(case, bad, out), out, "cannot read as NIfTI")
    labels = _write_nifti(tmp_path / "s.nii.gz", case["lab"])
    _refused(_run(case, labels, out, "--erosion-mm", "2"), out, "--erosion-mm")
    _refused(_run(case, labels, out, "--series", "1.2.3"), out, "no series")


def test_empty_patient_id_needs_the_option(tmp_path: Path) -> None:
    hu, lab = _phantom()
    write_ct_series(tmp_path / "ct", hu, pixel_spacing=SP, slice_positions=np.arange(N) * DZ,
                    origin=ORIGIN, extra_tags={"PatientID": ""})  # fmt: skip
    case = {"dicom": tmp_path / "ct"}
    labels = _write_nifti(tmp_path / "s.nii.gz", lab)
    out = tmp_path / "p.rois.json"
    _refused(_run(case, labels, out), out, "--patient-id")
    res = _run(case, labels, out, "--patient-id", "P09")
    assert res.returncode == 0, res.stderr
    assert {r.patient_id for r in load_roiset(out).rois} == {"P09"}


def test_label_map_reader_errors(tmp_path: Path) -> None:
    p = tmp_path / "f.nii"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 0.5, dtype=np.float32), np.eye(4)), str(p))
    with pytest.raises(LabelMapError, match="non-integer"):
        read_label_map(p)
    img = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.uint8), np.eye(4))
    img.set_sform(np.eye(4), code=0)
    img.set_qform(np.eye(4), code=0)
    nib.save(img, str(p))
    with pytest.raises(LabelMapError, match="neither sform nor qform"):
        read_label_map(p)


# --------------------------------------------------------------------------------------
# real data (skipped when ../shared/real_ct is absent)
SIEMENS = REAL / "siemens_biograph_mct_thoracolumbar"
TOTALSEG = REAL / "totalseg_abdomen_ct_nifti"


@pytest.mark.skipif(not (SIEMENS / "labels").is_dir(), reason="real Siemens CT not present")
def test_real_siemens_ct_with_totalsegmentator_labels(tmp_path: Path, caplog) -> None:
    # LAS label map of a real DICOM series (no SeriesInstanceUID, no PatientID)
    out = tmp_path / "p.rois.json"
    res = run_main(
        "rois-from-labels", "--labels", str(SIEMENS / "labels" / "example_seg_dicom.nii.gz"),
        "--dicom", str(SIEMENS / "dicom"), "--timepoint", "T0", "--patient-id", "S01",
        "--out", str(out), "--no-cache",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rs = load_roiset(out)
    # T12 is imaged through its middle; T11 only in a fragment (warned, no ROI)
    assert [r.level for r in rs.rois] == ["T12"]
    assert "T11" in caplog.text and "no ROI proposed" in caplog.text  # a warning
    info = index_folder(SIEMENS / "dicom").series[0]
    vol = load_series(info)
    lab = labels_on_volume(read_label_map(SIEMENS / "labels" / "example_seg_dicom.nii.gz"), vol)
    (part,) = rasterize_roi(vol, rs.rois[0]).parts
    sl = (part.k, slice(part.row0, part.row0 + part.mask.shape[0]),
          slice(part.col0, part.col0 + part.mask.shape[1]))  # fmt: skip
    assert np.all(lab[sl][part.mask] == 32)
    assert part.mask.sum() * vol.pixel_spacing_mm[0] * vol.pixel_spacing_mm[1] >= 200
    vals = vol.hu[sl][part.mask]
    assert 50 < float(np.mean(vals)) < 400  # trabecular bone, not cortex or soft tissue


@pytest.mark.skipif(not TOTALSEG.is_dir(), reason="real TotalSegmentator CT not present")
def test_real_totalseg_nifti_ct_written_as_dicom(tmp_path: Path) -> None:
    # The NIfTI CT written as a DICOM series by the recipe of its PROVENANCE.md (rows
    # anterior→posterior, columns right→left: RAS x and y reversed), cropped to the
    # columns/rows around the spine to keep it fast; the label map is used as it is.
    img = nib.load(str(TOTALSEG / "example_ct_sm.nii.gz"))
    ct = np.asarray(img.dataobj).astype(np.int16)
    aff = img.affine
    assert np.allclose(aff[:3, :3], np.diag([3.0, 3.0, 3.0]))  # RAS, 3 mm
    i0, i1, j0, j1 = 30, 90, 10, 70  # crop (i: x, j: y) around the spine
    hu = ct[i0:i1, j0:j1, :].transpose(2, 1, 0)[:, ::-1, ::-1]  # (k, row, col)
    # LPS of voxel (i1-1, j1-1, k): first row/column of the DICOM image
    ras0 = aff @ np.array([i1 - 1, j1 - 1, 0, 1.0])
    write_ct_series(
        tmp_path / "ct", np.clip(hu, -1024, 3000), pixel_spacing=(3.0, 3.0),
        slice_positions=np.arange(hu.shape[0]) * 3.0,
        origin=(-ras0[0], -ras0[1], ras0[2]), extra_tags={"PatientID": "TS1"},
    )  # fmt: skip
    seg = nib.load(str(TOTALSEG / "example_seg.nii.gz"))
    crop = tmp_path / "seg.nii.gz"  # the same crop of the label map, affine shifted
    a2 = seg.affine.copy()
    a2[:3, 3] = (seg.affine @ np.array([i0, j0, 0, 1.0]))[:3]
    nib.save(nib.Nifti1Image(np.asarray(seg.dataobj)[i0:i1, j0:j1, :], a2), str(crop))
    out = tmp_path / "p.rois.json"
    res = run_main("rois-from-labels", "--labels", str(crop), "--dicom", str(tmp_path / "ct"),
                   "--timepoint", "T0", "--out", str(out), "--no-cache")  # fmt: skip
    assert res.returncode == 0, res.stderr
    rs = load_roiset(out)
    levels = {r.level for r in rs.rois}
    assert levels and levels <= {"L2", "L1", "T12", "T11"}
    vol = load_series(index_folder(tmp_path / "ct").series[0])
    lab = np.asarray(seg.dataobj)[i0:i1, j0:j1, :].transpose(2, 1, 0)[:, ::-1, ::-1]
    value = {v: k for k, v in TOTALSEG_V2_LEVELS.items()}
    for roi in rs.rois:
        (part,) = rasterize_roi(vol, roi).parts
        sl = (part.k, slice(part.row0, part.row0 + part.mask.shape[0]),
              slice(part.col0, part.col0 + part.mask.shape[1]))  # fmt: skip
        assert np.all(lab[sl][part.mask] == value[roi.level])
        assert 0 < float(np.mean(vol.hu[sl][part.mask])) < 500
    assert json.loads(out.read_text())["rois"][0]["proposed"] is True


def test_body_not_arch_when_the_arch_is_larger() -> None:
    # The label holds the whole vertebra; here its posterior part is larger than the body
    # on the centroid slice: the ROI still goes to the body (the anterior part).
    from hu_roi.roisfromlabels import propose_rois
    from hu_roi.volume import Volume

    n, rows, cols, sp = 5, 110, 80, 0.75
    r, c = np.indices((rows, cols))
    body = ((c - 40) * sp / 12.0) ** 2 + ((r - 20) * sp / 9.0) ** 2 <= 1  # rows 8..32
    back = (r >= 40) & (r <= 100) & (abs(c - 40) <= 20)  # 45 mm x 30 mm behind it
    hu = np.zeros((n, rows, cols))
    lab = np.zeros((n, rows, cols), dtype=np.int32)
    hu[:, body | back] = 200.0
    lab[:, body | back] = 29
    vol = Volume(hu, np.array([[1.0, 0, 0], [0, 1.0, 0]]), (sp, sp),
                 np.array([[0.0, 0.0, 2.0 * k] for k in range(n)]))  # fmt: skip
    (p,), skipped = propose_rois(lab, vol, TOTALSEG_V2_LEVELS)
    assert p.level == "L3" and not skipped
    assert 8 < p.center_rc[0] < 32  # in the body, not in the larger block behind it


# --------------------------------------------------------------------------------------
# DICOM SEG in (written with highdicom from the CT files)
def _write_seg(ct_dir: Path, lab: np.ndarray, path: Path, names: dict[int, str]) -> Path:
    import highdicom as hd
    import pydicom

    src = [pydicom.dcmread(str(f)) for f in sorted(ct_dir.iterdir())]
    src.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    arr = np.stack([lab == v for v in names], axis=-1)  # (frames, rows, cols, segments)
    cat = hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure")
    typ = hd.sr.CodedConcept("51282000", "SCT", "Vertebra")
    descs = [
        hd.seg.SegmentDescription(
            segment_number=j + 1,
            segment_label=name,
            segmented_property_category=cat,
            segmented_property_type=typ,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )  # fmt: skip
        for j, name in enumerate(names.values())
    ]
    seg = hd.seg.Segmentation(
        source_images=src, pixel_array=arr, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs, series_instance_uid=hd.UID(), series_number=99,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test",
        manufacturer_model_name="test", software_versions="0", device_serial_number="1",
    )  # fmt: skip
    seg.save_as(str(path))
    return path


def test_level_of_segment() -> None:
    from hu_roi.io.labels import level_of_segment

    assert level_of_segment("vertebrae_L1") == "L1"
    assert level_of_segment("L1 vertebra") == "L1"
    assert level_of_segment("Vertebra T12") == "T12"
    assert level_of_segment("liver") is None
    assert level_of_segment("vertebrae L1-L2") is None  # two levels: no guess
    assert level_of_segment("vertebrae_L9") is None


def test_dicom_seg_in(case: dict, tmp_path: Path) -> None:
    seg = _write_seg(case["dicom"], case["lab"], tmp_path / "seg.dcm",
                     {31: "vertebrae_L1", 30: "vertebrae_L2", 5: "liver"})  # fmt: skip
    out = tmp_path / "p.rois.json"
    res = _run(case, seg, out)
    assert res.returncode == 0, res.stderr
    _check_rois(case, out)
    from hu_roi.io.labels import seg_on_volume

    vol = load_series(index_folder(case["dicom"]).series[0])
    got, table = seg_on_volume(seg, vol)
    assert table == {1: "L1", 2: "L2"}
    want = np.select([case["lab"] == 31, case["lab"] == 30], [1, 2], 0)
    assert np.array_equal(got, want)  # every frame on its own CT slice


def test_dicom_seg_of_another_series_is_refused(case: dict, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_ct_series(other, case["hu"], pixel_spacing=SP, slice_positions=np.arange(N) * DZ,
                    origin=ORIGIN, extra_tags={"PatientID": "P07"})  # fmt: skip
    seg = _write_seg(other, case["lab"], tmp_path / "seg.dcm", {31: "vertebrae_L1"})
    out = tmp_path / "p.rois.json"
    _refused(_run(case, seg, out), out, "another series")
    seg = _write_seg(case["dicom"], case["lab"], tmp_path / "s2.dcm", {5: "liver"})
    _refused(_run(case, seg, out), out, "no vertebra segment")


def test_proposed_rois_measure_trabecular_hu(case: dict, tmp_path: Path) -> None:
    # end to end: the proposals measure the phantom's trabecular bone (200 HU exactly),
    # flagged as proposals until the reader confirms them
    import csv

    labels = _write_nifti(tmp_path / "seg.nii.gz", case["lab"])
    out = tmp_path / "p.rois.json"
    assert _run(case, labels, out).returncode == 0
    res = run_main("measure", "--dicom", str(case["dicom"]), "--rois", str(out),
                   "--out", str(tmp_path / "m.csv"), "--no-cache", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((tmp_path / "m.csv").open(encoding="utf-8")))
    assert sorted(r["level"] for r in rows) == ["L1", "L2"]
    for r in rows:
        assert float(r["mean_hu"]) == 200.0 and float(r["sd_hu"]) == 0.0
        assert float(r["area_mm2"]) >= 200.0
        assert "proposed-unconfirmed" in r["qc_flags"]


def test_python_api_equals_the_command(case: dict, tmp_path: Path) -> None:
    """``labels_for_volume`` + ``rois_from_labels`` (used by the viewer) give the ROIs the
    command writes; refusals are LabelProposalError / LabelMapError with the reason."""
    from hu_roi.roisfromlabels import LabelProposalError, labels_for_volume, rois_from_labels

    labels = _write_nifti(tmp_path / "seg.nii.gz", case["lab"], flip=0)
    out = tmp_path / "p.rois.json"
    assert _run(case, labels, out).returncode == 0
    vol = load_series(index_folder(case["dicom"]).series[0])
    lab, table = labels_for_volume(labels, vol)
    assert np.array_equal(lab, case["lab"]) and table == TOTALSEG_V2_LEVELS
    rois, notes = rois_from_labels(
        lab, vol, table, timepoint="T0", patient_id="P07", source=labels.name
    )
    assert not notes
    assert [r.to_dict() for r in rois] == [r.to_dict() for r in load_roiset(out).rois]
    with pytest.raises(LabelProposalError, match="no patient id"):
        rois_from_labels(lab, vol, table, timepoint="T0", patient_id=" ", source="x")
    with pytest.raises(LabelProposalError, match="at least 3 mm"):
        rois_from_labels(lab, vol, table, timepoint="T0", patient_id="P", source="x", erosion_mm=1)
    bad = _write_nifti(tmp_path / "shift.nii.gz", case["lab"], shift_mm=(0.0, 0.0, 1.0))
    with pytest.raises(LabelMapError, match="not aligned"):
        labels_for_volume(bad, vol)
    none = _write_nifti(tmp_path / "none.nii.gz", np.where(case["lab"] == 5, 5, 0).astype(np.uint8))
    with pytest.raises(LabelProposalError, match="no vertebra label"):
        labels_for_volume(none, vol)
