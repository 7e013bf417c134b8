"""ROI propagation (issue 14): proposed ROIs, their ``registration`` record, the
``proposed-unconfirmed`` flag of ``hu-roi measure``, and ``hu-roi propagate``.

The reference for the registration tests is the known rigid transform the follow-up
series were made with (docs/propagation.md).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_main
from dicom_factory import write_ct_series

from hu_roi.errors import RoiFormatError
from hu_roi.roi import load_roiset, save_roiset


def _roi_doc(**kw) -> dict:
    d = {
        "roi_id": "P01-T2-L1",
        "patient_id": "P01",
        "timepoint": "T2",
        "series_instance_uid": "",
        "level": "L1",
        "irradiated": False,
        "lesion_type": "none",
        "kind": "target",
        "shape": {"type": "circle", "center_mm": [8.0, 8.0, 2.0], "radius_mm": 5.0},
    }
    d.update(kw)
    return d


def _write_set(path: Path, *rois: dict) -> Path:
    doc = {"format": "hu-roi.roiset", "version": 1, "reader": "R1", "rois": list(rois)}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------
# the ROI model: proposed and registration
def test_registration_round_trips(tmp_path: Path) -> None:
    reg = {
        "metric": "mattes-mi",
        "metric_value": -0.61,
        "iterations": 57,
        "parameters": [0.1, 0, 0, 20.5, -3, 1],
    }
    p = _write_set(tmp_path / "a.rois.json", _roi_doc(proposed=True, registration=reg))
    rs = load_roiset(p)
    assert rs.rois[0].proposed is True
    assert rs.rois[0].registration == reg
    assert rs.rois[0].extra == {}  # a known field, not an unknown one
    out = tmp_path / "b.rois.json"
    save_roiset(rs, out)
    d = json.loads(out.read_text())["rois"][0]
    assert d["proposed"] is True and d["registration"] == reg
    # absent stays absent
    rs2 = load_roiset(_write_set(tmp_path / "c.rois.json", _roi_doc()))
    assert rs2.rois[0].registration is None and "registration" not in rs2.rois[0].to_dict()


def test_registration_must_be_an_object(tmp_path: Path) -> None:
    p = _write_set(tmp_path / "a.rois.json", _roi_doc(registration=[1, 2]))
    try:
        load_roiset(p)
    except RoiFormatError as exc:
        assert "registration" in str(exc) and "JSON object" in str(exc)
    else:
        raise AssertionError("a registration that is not an object was accepted")
    bad = '{"metric_value": NaN}'
    text = json.dumps({"format": "hu-roi.roiset", "rois": [_roi_doc(registration={})]})
    q = tmp_path / "b.rois.json"
    q.write_text(text.replace('"registration": {}', f'"registration": {bad}'), encoding="utf-8")
    try:
        load_roiset(q)
    except RoiFormatError as exc:
        assert "finite" in str(exc)
    else:
        raise AssertionError("NaN inside registration was accepted")


def test_measure_flags_unconfirmed_proposals(tmp_path: Path) -> None:
    hu = np.full((5, 24, 24), 150.0)
    write_ct_series(
        tmp_path / "dicom",
        hu,
        series_uid="1.2.826.0.1.3680043.10.999.1",
        extra_tags={"PatientID": "P01"},
    )
    uid = "1.2.826.0.1.3680043.10.999.1"
    rois = _write_set(
        tmp_path / "p.rois.json",
        _roi_doc(roi_id="A", series_instance_uid=uid, proposed=True),
        _roi_doc(roi_id="B", series_instance_uid=uid, proposed=False),
        _roi_doc(roi_id="C", series_instance_uid=uid),
        _roi_doc(
            roi_id="D", series_instance_uid=uid, proposed=True, kind="reference-water", level=None
        ),
    )
    out = tmp_path / "m.csv"
    proc = run_main(
        "measure", "--dicom", str(tmp_path / "dicom"), "--rois", str(rois), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    with out.open(newline="", encoding="utf-8") as fh:
        rows = {r["roi_id"]: r for r in csv.DictReader(fh)}
    assert "proposed-unconfirmed" in rows["A"]["qc_flags"].split(";")
    assert rows["A"]["qc_status"] == "warn"
    assert "proposed-unconfirmed" in rows["D"]["qc_flags"].split(";")
    for rid in ("B", "C"):
        assert "proposed-unconfirmed" not in rows[rid]["qc_flags"]


# --------------------------------------------------------------------------------------
# a synthetic patient: body, fat, five vertebrae of distinct height and trabecular HU with
# cortical shells and posterior elements, an aorta, a rib, a liver; defined in LPS mm so a
# follow-up is sampled exactly at the moved positions (no interpolation of the baseline)
SHAPE = (40, 96, 96)  # slices, rows, columns
SPACING = (1.5, 1.5)  # mm (rows, columns)
DZ = 3.0  # mm between slices
ORIGIN = (-71.25, -71.25, -58.5)  # slice k lies at z = -58.5 + 3 k
ROT_CENTRE = np.array([0.0, 15.0, 0.0])


def _step(d: np.ndarray, w: float = 0.8) -> np.ndarray:
    """Smooth indicator of the inside (d < 0) of a signed distance (mm)."""
    return 0.5 * (1 - np.tanh(d / w))


def phantom_hu(p: np.ndarray) -> np.ndarray:
    """HU of the synthetic patient at LPS points ``p`` (..., 3), mm."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    hu = np.full(x.shape, -1000.0)
    body = _step((np.sqrt((x / 62) ** 2 + (y / 48) ** 2) - 1) * 50)
    hu += body * 1040
    fat = _step(-(np.sqrt((x / 56) ** 2 + (y / 42) ** 2) - 1) * 45)
    hu -= fat * body * 140
    r = np.sqrt(x**2 + (y - 15) ** 2)
    for zc0, half, trab in (
        (-62, 12, 150),
        (-31, 13, 230),
        (0, 12, 180),
        (30, 14, 120),
        (61, 13, 260),
    ):
        zc = z - zc0
        vb = _step(np.maximum(r - 16, np.abs(zc) - half))
        inner = _step(np.maximum(r - 13.5, np.abs(zc) - half + 2))
        hu += vb * (trab - 40) + (vb - inner) * 600
        pe = np.maximum.reduce([np.abs(x - 3) - 9, np.abs(y - 42) - 6, np.abs(zc - 2) - half + 4])
        hu += _step(pe) * 500
    hu += _step(np.sqrt((x - 14) ** 2 + (y + 8) ** 2) - 9) * 150  # aorta
    hu += _step(np.sqrt((x - 40 - 0.2 * z) ** 2 + (y - 20 - 0.1 * z) ** 2) - 4) * 700  # rib
    liver = _step(np.sqrt(((x + 25) / 30) ** 2 + ((y + 20) / 20) ** 2) * 15 - 15) * _step(z - 20)
    return hu + liver * 25


def _rotation(deg: tuple[float, float, float]) -> np.ndarray:
    """Rotation matrix Rz·Ry·Rx of angles (degrees) about x, y, z."""
    ax, ay, az = np.radians(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def scan(
    rot_deg=(0.0, 0.0, 0.0),
    trans=(0.0, 0.0, 0.0),
    *,
    scale=1.0,
    noise=12.0,
    seed=0,
    origin=ORIGIN,
    orientation=AXIAL,
) -> np.ndarray:
    """HU array of the patient moved by p' = R (p - c) + c + t, with fresh noise; ``scale``
    multiplies the HU of tissue (another kVp: HU of bone and fat scale differently)."""
    rot = _rotation(rot_deg)
    n, rows, cols = SHAPE
    k, r, c = np.meshgrid(np.arange(n), np.arange(rows), np.arange(cols), indexing="ij")
    x_dir, y_dir = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    normal = np.cross(x_dir, y_dir)
    q = (
        np.asarray(origin)
        + (c * SPACING[1])[..., None] * x_dir
        + (r * SPACING[0])[..., None] * y_dir
        + (k * DZ)[..., None] * normal
    )
    p = (q - ROT_CENTRE - np.asarray(trans)) @ rot + ROT_CENTRE  # R^T (q - c - t) + c
    hu = phantom_hu(p)
    hu = np.where(hu > -900, hu * scale, hu)
    return np.round(hu + np.random.default_rng(seed).normal(0, noise, hu.shape))


def true_map(points: np.ndarray, rot_deg, trans) -> np.ndarray:
    return (np.asarray(points) - ROT_CENTRE) @ _rotation(rot_deg).T + ROT_CENTRE + np.asarray(trans)


def _write(folder: Path, hu: np.ndarray, uid: str, **kw) -> None:
    write_ct_series(
        folder,
        hu,
        pixel_spacing=SPACING,
        slice_positions=np.arange(len(hu)) * DZ,
        origin=kw.pop("origin", ORIGIN),
        intercept=-2048,
        series_uid=uid,
        extra_tags={"PatientID": "P01", **kw.pop("tags", {})},
        **kw,
    )


UID = "1.2.826.0.1.3680043.10.1414."
# follow-ups: (name, rotation deg about x, y, z, translation mm, HU scale, kVp, orientation)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # X to the right, normal to the feet
FOLLOW_UPS = {
    "moved": ((2.0, -3.0, 6.0), (14.0, -10.0, 16.0), 1.0, 120, AXIAL),
    "kvp": ((-3.0, 2.0, -7.0), (-20.0, 8.0, -9.0), 0.93, 100, AXIAL),
    "flipped": ((1.0, 4.0, -6.0), (-12.0, -15.0, 10.0), 1.0, 120, FLIPPED),
}


def follow_up_grid(name: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """ImagePositionPatient of slice 0 and orientation of a follow-up: the field of view
    moves with the patient (by the translation rounded to whole voxels)."""
    trans, orientation = FOLLOW_UPS[name][1], FOLLOW_UPS[name][4]
    step = np.array([SPACING[1], SPACING[0], DZ])
    lo = np.asarray(ORIGIN) + np.round(np.asarray(trans) / step) * step
    if orientation == AXIAL:
        return lo, orientation
    n, rows, cols = SHAPE  # FLIPPED: first voxel at the largest x and z of the same box
    return lo + [(cols - 1) * SPACING[1], 0.0, (n - 1) * DZ], orientation


BASELINE_ROIS = [
    # on vertebra at z = 0 (slice 20 lies at z = 1.5), at z = -31 (slice 9: -31.5), at z = 30
    {
        "roi_id": "P01-T0-L2",
        "level": "L2",
        "shape": {"type": "circle", "center_mm": [0.0, 15.0, 1.5], "radius_mm": 8.0},
    },
    {
        "roi_id": "P01-T0-L3",
        "level": "L3",
        "shape": {
            "type": "ellipse",
            "center_mm": [1.0, 14.0, -31.5],
            "radii_mm": [9.0, 6.0],
            "angle_deg": 20.0,
        },
    },
    {
        "roi_id": "P01-T0-L1",
        "level": "L1",
        "shape": {
            "type": "polygon",
            "points_mm": [
                [-6.0, 9.0, 28.5],
                [6.0, 9.0, 28.5],
                [7.0, 20.0, 28.5],
                [-7.0, 20.0, 28.5],
            ],
        },
    },
    {
        "roi_id": "P01-T0-muscle",
        "level": None,
        "kind": "reference-muscle",
        "shape": {"type": "sphere", "center_mm": [-30.0, 20.0, 1.5], "radius_mm": 5.0},
    },
]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("propagate")
    _write(root / "dicom" / "t0", scan(seed=1), UID + "0")
    for i, (name, (rot, trans, scale, kvp, _o)) in enumerate(FOLLOW_UPS.items(), start=1):
        fov, ori = follow_up_grid(name)
        hu = scan(rot, trans, scale=scale, seed=10 + i, origin=fov, orientation=ori)
        _write(
            root / "dicom" / name,
            hu,
            UID + str(i),
            tags={"KVP": kvp},
            origin=tuple(fov),
            orientation=ori,
        )
    # the same patient imaged far away in scanner coordinates (another frame of reference):
    # found through the second start (the centres of the image boxes aligned)
    far = (ORIGIN[0], ORIGIN[1], ORIGIN[2] + 600.0)
    _write(root / "dicom" / "far", scan(seed=20), UID + "7", origin=far)
    # a thin slab of another body region (z 150-171 mm): nothing in common with the ROIs
    slab = scan(seed=21, origin=(ORIGIN[0], ORIGIN[1], 150.0))[:8]
    _write(root / "dicom" / "slab", slab, UID + "8", origin=(ORIGIN[0], ORIGIN[1], 150.0))
    # a series of other content: no anatomy in common
    other = np.random.default_rng(5).normal(0, 300, SHAPE).clip(-1000, 1500).round()
    _write(root / "dicom" / "other", other, UID + "9")
    rois = [
        {
            "patient_id": "P01",
            "timepoint": "T0",
            "series_instance_uid": UID + "0",
            "irradiated": False,
            "lesion_type": "none",
            "kind": "target",
            **r,
        }
        for r in BASELINE_ROIS
    ]
    _write_set(root / "t0.rois.json", *rois)
    return root


def _propagate(study: Path, uid: str, out: Path, *extra: str):
    return run_main(
        "propagate", "--dicom", str(study / "dicom"), "--rois", str(study / "t0.rois.json"),
        "--to-series", uid, "--timepoint", "T2", "--out", str(out), *extra,
    )  # fmt: skip


def _euler_map(reg: dict, p: np.ndarray) -> np.ndarray:
    """Apply the registration record with SimpleITK (the independent reference)."""
    import SimpleITK as sitk

    tx = sitk.Euler3DTransform()
    tx.SetCenter(reg["center_mm"])
    tx.SetParameters([*reg["rotation_rad"], *reg["translation_mm"]])
    return np.array(tx.TransformPoint([float(v) for v in p]))


@pytest.mark.parametrize("name", list(FOLLOW_UPS))
def test_known_rigid_transform_is_recovered(study: Path, tmp_path: Path, name: str) -> None:
    rot, trans, _scale, _kvp, _ori = FOLLOW_UPS[name]
    fov, ori = follow_up_grid(name)
    x_f, y_f = np.asarray(ori[:3]), np.asarray(ori[3:])
    assert np.linalg.norm(trans) >= 20 and max(abs(a) for a in rot) >= 5  # issue 14 item 4
    i = list(FOLLOW_UPS).index(name) + 1
    out = tmp_path / "p.rois.json"
    proc = _propagate(study, UID + str(i), out)
    assert proc.returncode == 0, proc.stderr
    rs = load_roiset(out)
    assert [r.roi_id for r in rs.rois] == [
        "P01-T2-L2",
        "P01-T2-L3",
        "P01-T2-L1",
        "P01-T2-reference-muscle",
    ]
    voxel = np.array([SPACING[1], SPACING[0], DZ])
    for base, roi in zip(BASELINE_ROIS, rs.rois, strict=True):
        assert roi.proposed is True and roi.timepoint == "T2"
        assert roi.series_instance_uid == UID + str(i)
        reg = roi.registration
        assert reg is not None and reg["baseline_roi_id"] == base["roi_id"]
        assert reg["ncc"] >= 0.8 and reg["iterations"] > 0
        s = base["shape"]
        c0 = np.mean(s["points_mm"], axis=0) if "points_mm" in s else np.array(s["center_mm"])
        truth = true_map(c0, rot, trans)
        # the registration itself: within one voxel (here within 1 mm) at the ROI centre
        assert np.all(np.abs(_euler_map(reg, c0) - truth) < 1.0), (
            roi.roi_id,
            _euler_map(reg, c0),
            truth,
        )
        # the written shape: in-plane within one pixel; along z snapped onto a slice plane
        got = (
            np.mean(roi.shape.points_mm, axis=0)
            if roi.shape.points_mm
            else np.array(roi.shape.center_mm)
        )
        assert np.all(np.abs(got - truth) <= voxel), (roi.roi_id, got, truth)
        if roi.shape.type != "sphere":
            k = float((got - fov) @ np.cross(x_f, y_f)) / DZ  # follow-up slice index
            assert abs(k - round(k)) < 1e-6  # on a follow-up slice plane
            assert abs(reg["snapped_mm"]) <= DZ / 2 + 1e-6
        if roi.shape.points_mm:
            assert np.ptp(np.asarray(roi.shape.points_mm)[:, 2]) < 1e-6  # flat on the slice
        if roi.shape.type == "ellipse":  # the rx axis turns with the rotation about z
            u = _rotation(rot) @ [np.cos(np.radians(20)), np.sin(np.radians(20)), 0.0]
            want = np.degrees(np.arctan2(u @ y_f, u @ x_f))
            diff = (roi.shape.angle_deg - want + 90.0) % 180.0 - 90.0  # an axis: mod 180°
            assert abs(diff) < 1.5, (roi.shape.angle_deg, want)
    # the proposals are measured, flagged until confirmed
    m = tmp_path / "m.csv"
    proc = run_main("measure", "--dicom", str(study / "dicom"), "--rois", str(out), "--out", str(m))
    assert proc.returncode == 0, proc.stderr
    with m.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    for row in rows:
        assert "proposed-unconfirmed" in row["qc_flags"].split(";")
        assert row["qc_status"] == "warn", row


def test_far_frame_of_reference_is_found(study: Path, tmp_path: Path) -> None:
    """The follow-up lies 600 mm away in scanner coordinates (no overlap there): the second
    start (image box centres aligned) finds it."""
    out = tmp_path / "p.rois.json"
    proc = _propagate(study, UID + "7", out, "--from-timepoint", "T0")
    assert proc.returncode == 0, proc.stderr
    for base, roi in zip(BASELINE_ROIS, load_roiset(out).rois, strict=True):
        s = base["shape"]
        c0 = np.mean(s["points_mm"], axis=0) if "points_mm" in s else np.array(s["center_mm"])
        got = _euler_map(roi.registration, c0)
        assert np.all(np.abs(got - (c0 + [0, 0, 600])) < 1.0), (roi.roi_id, got)


def test_non_overlapping_series_are_refused(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.rois.json"
    proc = _propagate(study, UID + "8", out)
    assert proc.returncode == 2
    assert proc.stderr.startswith("hu-roi propagate: error:") and "do not overlap" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_poor_registration_is_refused(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.rois.json"
    proc = _propagate(study, UID + "9", out)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("hu-roi propagate: error: poor registration"), proc.stderr
    assert "--min-ncc" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_sitk_image_geometry_matches_sitk_reader(study: Path) -> None:
    """to_sitk's origin, spacing and direction are those of SimpleITK's ImageSeriesReader."""
    from sitk_ref import read_with_sitk

    from hu_roi.io import index_folder, load_series
    from hu_roi.io.registration import to_sitk

    for sub in ("t0", "kvp"):
        info = index_folder(study / "dicom" / sub).series[0]
        img, ref = to_sitk(load_series(info)), read_with_sitk(study / "dicom" / sub)
        np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-6)


def test_bad_arguments_write_nothing(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.rois.json"
    proc = _propagate(study, "no-such-series", out)
    assert proc.returncode == 2 and "no series 'no-such-series'" in proc.stderr
    proc = _propagate(study, UID + "0", out)  # the baseline itself
    assert proc.returncode == 2 and "already lies on the follow-up series" in proc.stderr
    proc = run_main(
        "propagate", "--dicom", str(study / "dicom"), "--rois", str(study / "t0.rois.json"),
        "--to-series", UID + "1", "--timepoint", "T2", "--out", str(study / "t0.rois.json"),
    )  # fmt: skip
    assert proc.returncode == 2 and "input" in proc.stderr
    # an ROI outside its own baseline image cannot be propagated
    bad = dict(BASELINE_ROIS[0], roi_id="P01-T0-L4", level="L4")
    bad["shape"] = {"type": "circle", "center_mm": [0.0, 15.0, 400.0], "radius_mm": 8.0}
    doc = json.loads((study / "t0.rois.json").read_text())
    doc["rois"].append({**doc["rois"][0], **bad})
    rois = tmp_path / "bad.rois.json"
    rois.write_text(json.dumps(doc), encoding="utf-8")
    proc = run_main(
        "propagate", "--dicom", str(study / "dicom"), "--rois", str(rois),
        "--to-series", UID + "1", "--timepoint", "T2", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 2 and "lies outside its baseline series" in proc.stderr
    assert not out.exists()


def test_real_ct_follow_up_with_known_transform(real_ct: Path, tmp_path: Path) -> None:
    """Real anatomy: the Siemens thoracolumbar series (../shared/real_ct) and a follow-up
    made from it by a known rigid transform (resampled with SimpleITK, noise added, written
    with pydicom); the T12 ROI is proposed within one voxel of where the transform puts it."""
    import shutil

    import SimpleITK as sitk
    from sitk_ref import read_with_sitk

    src = real_ct / "siemens_biograph_mct_thoracolumbar" / "dicom"
    dicom = tmp_path / "dicom"
    shutil.copytree(src, dicom / "t0")  # --dicom holds both series; the source stays as it is
    base = read_with_sitk(dicom / "t0")
    rot, trans = (1.0, -1.0, 5.0), (15.0, -14.0, 3.0)
    centre = np.array([-11.23046875, -117.19921875, -784.5])  # voxel (10, 328, 244), T12
    fwd = sitk.Euler3DTransform()
    fwd.SetCenter(tuple(centre))
    fwd.SetMatrix(tuple(_rotation(rot).ravel()))
    fwd.SetTranslation(trans)
    sp = np.array(base.GetSpacing())
    grid = sitk.Image(base.GetSize(), sitk.sitkFloat32)
    grid.SetSpacing(base.GetSpacing())
    grid.SetDirection(base.GetDirection())
    origin = np.array(base.GetOrigin()) + np.round(np.array(trans) / sp) * sp  # FOV follows
    grid.SetOrigin(tuple(origin))
    moved = sitk.Resample(base, grid, fwd.GetInverse(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    hu = sitk.GetArrayFromImage(moved) + np.random.default_rng(3).normal(
        0, 10, moved.GetSize()[::-1]
    )
    write_ct_series(
        dicom / "t2",
        np.round(hu).clip(-1024, 3000),
        pixel_spacing=(sp[1], sp[0]),
        slice_positions=np.arange(hu.shape[0]) * sp[2],
        origin=tuple(origin),
        series_uid=UID + "20",
    )
    from hu_roi.io import index_folder

    key = next(s.series_key for s in index_folder(dicom / "t0").series)
    roi = _roi_doc(roi_id="S01-T0-T12", patient_id="S01", timepoint="T0", level="T12")
    roi.update(
        series_key=key, shape={"type": "circle", "center_mm": list(centre), "radius_mm": 8.0}
    )
    rois = _write_set(tmp_path / "t0.rois.json", roi)
    out = tmp_path / "t2.rois.json"
    proc = run_main(
        "propagate", "--dicom", str(dicom), "--rois", str(rois), "--to-series", UID + "20",
        "--timepoint", "T2", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (r,) = load_roiset(out).rois
    assert r.roi_id == "S01-T2-T12" and r.proposed is True
    truth = centre + np.array(trans)  # the rotation centre is the ROI centre
    np.testing.assert_array_less(np.abs(_euler_map(r.registration, centre) - truth), sp)
    got = np.array(r.shape.center_mm)
    np.testing.assert_array_less(np.abs(got[:2] - truth[:2]), sp[:2])
    assert abs(got[2] - truth[2]) <= sp[2] / 2 + 1e-6  # snapped onto the nearest slice


def test_python_api_equals_the_command(study: Path, tmp_path: Path) -> None:
    """``propagate.propose`` (used by the viewer) returns what the command writes, and
    refuses bad arguments with PropagationError before reading any pixel."""
    from hu_roi.io import index_folder
    from hu_roi.propagate import PropagationError, propose

    out = tmp_path / "p.rois.json"
    proc = _propagate(study, UID + "1", out)
    assert proc.returncode == 0, proc.stderr
    written = load_roiset(out).rois
    index = index_folder(study / "dicom")
    (target,) = [s for s in index.series if s.series_instance_uid == UID + "1"]
    base = load_roiset(study / "t0.rois.json").rois
    got = propose(base, index.series, target, timepoint="T2")
    assert [r.roi_id for r in got] == [r.roi_id for r in written]
    for a, b in zip(got, written, strict=True):
        assert a.proposed is True and a.timepoint == "T2"
        assert a.series_instance_uid == b.series_instance_uid
        pa = np.asarray(a.shape.center_mm or np.mean(a.shape.points_mm, axis=0))
        pb = np.asarray(b.shape.center_mm or np.mean(b.shape.points_mm, axis=0))
        assert np.all(np.abs(pa - pb) < 0.01), (a.roi_id, pa, pb)
    for kwargs, words in (
        ({"timepoint": "T0"}, "of timepoint T0 already"),
        ({"timepoint": "T2", "margin_mm": -1.0}, "margin"),
        ({"timepoint": "T2", "min_ncc": 2.0}, "[-1, 1]"),
    ):
        with pytest.raises(PropagationError, match=re.escape(words)):
            propose(base, index.series, target, **kwargs)
    with pytest.raises(PropagationError, match="no baseline ROI"):
        propose([], index.series, target, timepoint="T2")
    with pytest.raises(PropagationError, match="poor registration"):
        propose(base, index.series, target, timepoint="T2", min_ncc=0.9999)
