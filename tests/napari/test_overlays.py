"""Label maps and RT dose in the viewer (issue 15, "Done when": load a label map or an
RTDOSE as layers; propose ROIs from labels).

The CT and the label map are the phantom of tests/test_rois_from_labels.py (two vertebrae
labelled as TotalSegmentator v2 labels L1 and L2, NIfTI in RAS); the RTDOSE is written
with tests/test_rtdose.py's writer and holds a linear dose (trilinear interpolation
reproduces it exactly, so the reference is the formula at each voxel centre).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_factory import write_ct_series
from napari_helpers import B_ORIENT, B_ORIGIN, B_SHAPE, B_SPACING, B_STEP, key_of, lps_of
from test_rois_from_labels import COLS, DZ, ORIGIN, ROWS, SP, N, _phantom, _write_nifti
from test_rtdose import write_rtdose

pytest.importorskip("napari", reason="the napari extra is not installed")
pytestmark = pytest.mark.napari

FOR_UID = "1.2.826.0.1.3680043.8.498.15001"
#: The dose grid: 2 mm pixels, frames 3 mm apart, covering the CT except its first 14 rows
#: (y < -10 mm).
D_ORIGIN = (-40.0, -10.0, 96.0)
D_SHAPE = (16, 40, 40)  # frames, rows, columns


def dose_at(p: np.ndarray) -> np.ndarray:
    """The written dose (Gy) at LPS points: 1 + 0.5 Gy/mm along x + 0.1 Gy/mm along z."""
    p = np.asarray(p, dtype=float)
    return 1.0 + 0.5 * (p[..., 0] + 40.0) + 0.1 * (p[..., 2] - 96.0)


def _write_dose(path: Path, for_uid: str = FOR_UID, patient: str = "P07") -> Path:
    nf, nr, nc = D_SHAPE
    f, r, c = np.indices(D_SHAPE)
    pts = np.stack([D_ORIGIN[0] + 2.0 * c, D_ORIGIN[1] + 2.0 * r, D_ORIGIN[2] + 3.0 * f], -1)
    write_rtdose(path, dose_at(pts), origin=D_ORIGIN, spacing=(2.0, 2.0))
    ds = pydicom.dcmread(str(path))
    ds.FrameOfReferenceUID = for_uid
    ds.PatientID = patient
    ds.save_as(str(path))
    return path


@pytest.fixture
def spine(tmp_path: Path) -> dict:
    """``study/dicom/T0`` (the labelled phantom) and ``T2`` (the same anatomy, another
    series), the label map, a shifted label map and two RTDOSE files."""
    hu, lab = _phantom()
    root = tmp_path / "study" / "dicom"
    for tp in ("T0", "T2"):
        write_ct_series(
            root / tp, hu, pixel_spacing=SP, slice_positions=np.arange(N) * DZ, origin=ORIGIN,
            frame_of_reference_uid=FOR_UID,
            extra_tags={"PatientID": "P07", "SeriesDescription": f"Spine {tp}"},
        )  # fmt: skip
    return {
        "root": root,
        "hu": hu,
        "lab": lab,
        "labels": _write_nifti(tmp_path / "seg.nii.gz", lab, flip=1),
        "shifted": _write_nifti(tmp_path / "shift.nii.gz", lab, shift_mm=(0.0, 0.0, 1.0)),
        "liver": _write_nifti(tmp_path / "liver.nii.gz", np.where(lab == 5, 5, 0).astype(np.uint8)),
        "dose": _write_dose(tmp_path / "dose.dcm"),
        "other_for": _write_dose(tmp_path / "dose_other.dcm", for_uid="1.2.3.999"),
    }


def _open(w, spine: dict, desc: str = "Spine T0"):
    w.open_folder(spine["root"], roi_file=spine["root"].parent / "r.rois.json")
    key = key_of(w, desc)
    w.open_series(key)
    return w.session


def _overlays(viewer) -> list:
    return [lay for lay in viewer.layers if "hu_roi_overlay" in (lay.metadata or {})]


def _same_placement(a, b) -> None:
    np.testing.assert_allclose(a.affine.affine_matrix, b.affine.affine_matrix, atol=1e-9)
    np.testing.assert_allclose(a.scale, b.scale, atol=1e-9)
    np.testing.assert_allclose(a.translate, b.translate, atol=1e-9)


def test_label_map_layer_on_the_ct_grid(widget, spine, qtbot):
    from napari.layers import Labels

    viewer, w = widget
    s = _open(w, spine)
    assert w.load_label_map(spine["labels"], background=True) is False  # returned at once
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert "Label map seg.nii.gz shown: 2 labelled levels (L1, L2)" in w.last_message
    (lay,) = _overlays(viewer)
    assert isinstance(lay, Labels) and lay.name == "vertebra labels"
    # the NIfTI (RAS, one axis flipped) lands voxel for voxel on the CT: the same values
    # at the same indices, and the same placement as the image layer
    assert np.array_equal(np.asarray(lay.data), spine["lab"])
    _same_placement(lay, s.image_layer)
    # level names: the layer's features and the cursor readout
    feats = lay.features.set_index("index")["level"]
    assert feats[31] == "L1" and feats[30] == "L2" and feats[50] == "C1"
    assert s.overlay_text((4, 28, 36)).strip() == "L1"  # the centre of L1's body
    assert s.overlay_text((15, 30, 35)).strip() == "L2"
    assert s.overlay_text((4, 95, 5)).strip() == "no level"
    s.show_slice(4)  # napari reads the value from the slice shown
    assert lay.get_status(lay.data_to_world([4, 28, 36]), world=True)["coordinates"].endswith(
        "level: L1"
    )
    # ROIs are checked against the label map as hu-roi measure --labels checks them
    s.add_roi("ellipse", [[4, 22, 28], [4, 22, 44], [4, 34, 44], [4, 34, 28]], level="L1")
    s.add_roi("ellipse", [[4, 22, 28], [4, 22, 44], [4, 34, 44], [4, 34, 28]], level="L2")
    s.add_roi("ellipse", [[4, 22, 44], [4, 22, 62], [4, 34, 62], [4, 34, 44]], level="L1")
    qtbot.waitUntil(lambda: len(w.table_rows()) == 3)
    inside, wrong, leaky = (m.qc_flags for m in s.measurements)
    assert not {"level-mismatch", "roi-outside-body"} & set(inside)
    assert "level-mismatch" in wrong  # labelled L2, lies on L1's label
    assert "roi-outside-body" in leaky and "level-mismatch" not in leaky  # past L1's side
    from hu_roi.batch import measure_batch

    w.save()
    batch = measure_batch(spine["root"], s.roi_path, labels=[str(spine["labels"])])
    assert {m.roi_id: m.qc_flags for m in batch.measurements} == {
        m.roi_id: m.qc_flags for m in s.calibrated_measurements()
    }


def test_refused_label_maps_add_no_layer(widget, spine, qtbot):
    viewer, w = widget
    s = _open(w, spine)
    n = len(viewer.layers)
    assert w.load_label_map(spine["shifted"]) is False
    msg = w.last_message
    assert msg.startswith("Label map not loaded: the label map is not aligned with the CT")
    assert "\n" not in msg and "1.00 mm" in msg
    assert w.status.text() == msg  # shown to the reader
    assert w.load_label_map(spine["liver"], background=True) is False
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.last_message.startswith("Label map not loaded:")
    assert "no vertebra label" in w.last_message
    assert len(viewer.layers) == n and s.label_overlay is None and not _overlays(viewer)
    with pytest.raises(ValueError, match="no vertebra label"):
        s.load_label_map(spine["liver"])
    # Propose ROIs from labels without a label map: says what to do
    assert w.propose_from_labels() is None
    assert "load a label map for this series first" in w.last_message


def test_propose_from_labels_and_confirm(widget, spine, qtbot, tmp_path):
    from hu_roi.io import index_folder, load_series
    from hu_roi.roisfromlabels import rois_from_labels

    viewer, w = widget
    s = _open(w, spine)
    assert w.load_label_map(spine["labels"]) is True
    assert w.propose_from_labels(background=True) is None
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert "2 ROIs proposed from the label map" in w.last_message
    props = sorted((r for r in s.roiset.rois if r.proposed), key=lambda r: r.level)
    assert [r.level for r in props] == ["L1", "L2"]
    # exactly the ROIs of hu-roi rois-from-labels' code on the same inputs
    info = index_folder(spine["root"] / "T0").series[0]
    vol = load_series(info)
    want, _ = rois_from_labels(
        spine["lab"], vol, {31: "L1", 30: "L2"}, timepoint="T0", patient_id="P07",
        source="seg.nii.gz",
    )  # fmt: skip
    for a, b in zip(props, sorted(want, key=lambda r: r.level), strict=True):
        assert a.to_dict() == b.to_dict(), (a.to_dict(), b.to_dict())
    # drawn and measured as proposals (orange, thin, flagged), the label layer still there
    lay = s.shapes_layer
    assert len(lay.data) == 2 and list(lay.edge_width) == [0.5, 0.5]
    assert all(t.endswith("(proposed)") for t in lay.text.values)
    assert all("proposed-unconfirmed" in m.qc_flags for m in s.measurements)
    assert all(m.mean_hu == 200.0 for m in s.measurements)  # trabecular core
    assert s.label_layer in viewer.layers
    # nothing more to propose: both levels have a target ROI now
    assert w.propose_from_labels() is None
    assert "every labelled level has a target ROI" in w.last_message
    # Confirm works as for propagated proposals
    lay.selected_data = {0, 1}
    w.confirm_selected()
    assert "2 proposals confirmed" in w.last_message
    assert not any(r.proposed for r in s.roiset.rois)
    assert len(s.roiset.rois) == 2


def test_rt_dose_layer_readout_and_table(widget, spine, qtbot):
    viewer, w = widget
    s = _open(w, spine)
    n = len(viewer.layers)
    assert w.load_dose(spine["other_for"]) is False  # another Frame of Reference
    assert w.last_message.startswith("RT dose not loaded: Frame of Reference mismatch")
    assert "\n" not in w.last_message and len(viewer.layers) == n and s.dose_overlay is None
    assert w.load_dose(spine["dose"], background=True) is False
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.last_message.startswith("RT dose dose.dcm shown"), w.last_message
    (lay,) = _overlays(viewer)
    assert lay.name == "dose (Gy)" and lay.blending == "translucent"
    _same_placement(lay, s.image_layer)
    # the dose at every CT voxel centre (formula), 0 where the grid does not reach (y < -10)
    k, r, c = np.indices((N, ROWS, COLS))
    pts = np.stack([ORIGIN[0] + SP[1] * c, ORIGIN[1] + SP[0] * r, ORIGIN[2] + DZ * k], -1)
    want = np.where(pts[..., 1] >= -10.0, dose_at(pts), 0.0)
    assert np.count_nonzero(want == 0.0) == N * 14 * COLS
    np.testing.assert_allclose(np.asarray(lay.data), want, atol=1e-4)
    top = float(want.max())
    np.testing.assert_allclose(lay.contrast_limits, [0.0, top], atol=1e-4)
    assert lay.colormap.map(np.array([0.0]))[0][3] == 0.0  # no dose: transparent
    assert lay.colormap.map(np.array([0.5]))[0][3] == 1.0
    # the cursor readout: dose at the voxel, "–" outside the dose grid
    assert s.overlay_text((3, 40, 20)).strip() == f"{float(dose_at(pts[3, 40, 20])):.2f} Gy"
    assert s.overlay_text((3, 2, 20)).strip() == "dose –"
    # the table: mean dose of each ROI over its voxel centres (reference: the formula)
    s.add_roi("ellipse", [[5, 30, 20], [5, 30, 40], [5, 50, 40], [5, 50, 20]], level="L1")
    s.add_roi("ellipse", [[5, 8, 20], [5, 8, 30], [5, 18, 30], [5, 18, 20]], level="L2")
    qtbot.waitUntil(lambda: len(w.table_rows()) == 2)
    from hu_roi.io import index_folder, load_series
    from hu_roi.rasterize import rasterize_roi

    vol = load_series(index_folder(spine["root"] / "T0").series[0])
    rows = {row[7]: row for row in w.table_rows()}
    (roi,) = [r for r in s.current_rois() if r.level == "L1"]
    (part,) = rasterize_roi(vol, roi).parts
    rr, cc = np.nonzero(part.mask)
    ref = dose_at(vol.pixel_to_lps(part.k, rr + part.row0, cc + part.col0)).mean()
    assert rows["L1"][11] == f"{ref:.2f}"
    assert rows["L2"][11] == ""  # partly outside the dose grid: no dose (as measure)
    # the rows are hu-roi measure --rtdose's: the same dose columns and flags, bit for bit
    from hu_roi.batch import measure_batch

    w.save()
    batch = {
        m.roi_id: m
        for m in measure_batch(spine["root"], s.roi_path, rtdose=[spine["dose"]]).measurements
    }
    live = {m.roi_id: m for m in s.calibrated_measurements()}
    assert set(live) == set(batch)
    for rid, b in batch.items():
        m = live[rid]
        got = (m.dose_mean_gy, m.dose_min_gy, m.dose_max_gy, m.qc_flags)
        assert got == (b.dose_mean_gy, b.dose_min_gy, b.dose_max_gy, b.qc_flags), rid
    (l2,) = [m for m in live.values() if m.level == "L2"]
    assert "dose-outside-grid" in l2.qc_flags and l2.dose_mean_gy is None


def test_dose_layer_renders(make_napari_viewer, spine):
    """A real rendering (Xvfb): the grey CT gets colour where the dose grid reaches."""
    from napari_helpers import make_widget

    viewer = make_napari_viewer(show=True)
    w = make_widget(viewer)
    s = _open(w, spine)
    s.show_slice(5)
    before = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    assert w.load_dose(spine["dose"]) is True
    after = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    was = (np.ptp(before, axis=-1) > 60).mean()  # the canvas' text overlays only
    now = (np.ptp(after, axis=-1) > 60).mean()
    assert was < 0.02 and now > 0.2, (was, now)


def test_overlays_go_with_their_series(widget, spine, qtbot):
    viewer, w = widget
    s = _open(w, spine)
    assert w.load_label_map(spine["labels"]) and w.load_dose(spine["dose"])
    assert len(_overlays(viewer)) == 2
    # re-showing the same series (as adding proposals does) keeps them
    s.open_series(s.current.info, keep_edits=False)
    assert len(_overlays(viewer)) == 2 and s.label_overlay is not None
    # another series: both go, and the readout forgets them
    _open(w, spine, "Spine T2")
    assert _overlays(viewer) == [] and s.label_overlay is None and s.dose_overlay is None
    assert s.overlay_text((4, 28, 36)) == ""
    assert w.propose_from_labels() is None and "load a label map" in w.last_message
    # a dose read for T0 but finished after T2 was opened is not shown on T2
    _open(w, spine)
    job = s.dose_job(spine["dose"])
    _open(w, spine, "Spine T2")
    assert w._overlay_ready("RT dose", job()) is False
    assert "another series is shown now" in w.last_message and _overlays(viewer) == []
    # closing the series (another study) removes them too
    _open(w, spine)
    assert w.load_label_map(spine["labels"])
    s.close_series()
    assert _overlays(viewer) == []


def test_label_map_on_a_coronal_series(widget, study, tmp_path):
    """Series B of the shared fixture is coronal (affine placement, axes reordered): the
    label layer still lies on the CT voxel for voxel (reference: docs/roi_format.md's
    voxel formula, napari_helpers.lps_of)."""
    import nibabel as nib

    viewer, w = widget
    w.open_folder(study, roi_file=study.parent / "r.rois.json")
    key = next(x.series_key for x in w.session.reading_list if x.series_description == "Spine B")
    w.open_series(key)
    s = w.session
    lab = np.zeros(B_SHAPE, dtype=np.uint8)
    lab[1:4, 10:20, 5:15] = 29  # L3
    lab[2, 12, 7] = 28  # one voxel of L4
    o = np.asarray(B_ORIENT).reshape(2, 3)
    lps = np.eye(4)  # (k, r, c) -> LPS
    lps[:3, 0] = np.cross(o[0], o[1]) * B_STEP
    lps[:3, 1] = o[1] * B_SPACING[0]
    lps[:3, 2] = o[0] * B_SPACING[1]
    lps[:3, 3] = B_ORIGIN
    path = tmp_path / "b.nii"
    nib.save(nib.Nifti1Image(lab, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps), str(path))
    assert w.load_label_map(path) is True, w.last_message
    lay = s.label_layer
    _same_placement(lay, s.image_layer)
    # every voxel: the layer's world position of the label equals the voxel's LPS position
    perm = s.transform.perm
    for kk, rr, cc in [(2, 12, 7), (1, 10, 5), (3, 19, 14)]:
        idx = np.array([kk, rr, cc])[list(perm)]
        assert np.asarray(lay.data)[tuple(idx)] == lab[kk, rr, cc]
        world = np.asarray(lay.data_to_world(idx))
        want = lps_of(B_ORIGIN, B_ORIENT, B_SPACING, B_STEP, kk, rr, cc)[::-1]  # (z, y, x)
        np.testing.assert_allclose(world, want, atol=1e-6)
    assert s.overlay_text((2, 12, 7)).strip() == "L4"


def test_dicom_seg_layer_and_blinded_refusal(widget, spine, qtbot, tmp_path):
    """A DICOM SEG made from the CT: segment numbers on the CT grid, levels from the
    segment labels; a SEG of another series is refused without naming the series when
    blinded."""
    from test_rois_from_labels import _write_seg

    viewer, w = widget
    s = _open(w, spine)
    seg = _write_seg(
        spine["root"] / "T0", spine["lab"], tmp_path / "seg.dcm",
        {31: "vertebrae_L1", 30: "vertebrae_L2", 5: "liver"},
    )  # fmt: skip
    assert w.load_label_map(seg) is True, w.last_message
    lay = s.label_layer
    want = np.select([spine["lab"] == 31, spine["lab"] == 30], [1, 2], 0)
    assert np.array_equal(np.asarray(lay.data), want)
    assert lay.features.set_index("index")["level"].to_dict() == {1: "L1", 2: "L2"}
    assert s.overlay_text((4, 28, 36)).strip() == "L1"
    assert w.propose_from_labels() == 2
    # the SEG made from series T2 does not belong to T0
    other = _write_seg(spine["root"] / "T2", spine["lab"], tmp_path / "o.dcm", {31: "vertebrae_L1"})
    w.set_blinded(True, seed=3)
    info, shown = s.current.info, s.label_overlay
    assert shown is not None  # the same series shown again (blinded): its map stays
    assert w.load_label_map(other) is False
    msg = w.last_message
    assert msg.startswith("Label map not loaded:") and "another series" in msg
    assert info.series_instance_uid not in msg and s.label(info) in msg
    # the refused map replaced nothing: the SEG of T0 is still the one shown
    assert s.label_overlay is shown and _overlays(viewer) == [s.label_layer]


REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real_ct"
SIEMENS = REAL / "siemens_biograph_mct_thoracolumbar"


@pytest.mark.skipif(not (SIEMENS / "labels").is_dir(), reason="real Siemens CT not present")
def test_real_ct_with_totalsegmentator_labels(widget, qtbot, tmp_path):
    """A real Siemens series (no PatientID) with TotalSegmentator's reference labels (LAS):
    the map lands on the CT, and the proposal is T12's trabecular core, as the command's."""
    viewer, w = widget
    w.open_folder(SIEMENS / "dicom", roi_file=tmp_path / "real.rois.json")
    w.open_series(w.session.reading_list[0].series_key)
    s = w.session
    s.set_study_code("S01")
    w.timepoint_combo.setCurrentText("T0")
    assert w.load_label_map(SIEMENS / "labels" / "example_seg_dicom.nii.gz"), w.last_message
    assert s.label_overlay.levels == ["T11", "T12"]
    assert w.propose_from_labels() == 1, w.last_message
    assert "T11" in w.last_message  # a fragment only: named, no ROI
    (roi,) = [r for r in s.roiset.rois if r.proposed]
    assert roi.level == "T12" and roi.patient_id == "S01"
    (m,) = s.measurements
    assert 50 < m.mean_hu < 400 and m.area_mm2 >= 200  # trabecular bone, not cortex


def test_export_dicom_from_the_viewer(widget, spine, qtbot, tmp_path):
    """Export DICOM SR/SEG…: hu-roi export-dicom of the stored ROIs, from the ROIs tab."""
    import highdicom

    viewer, w = widget
    s = _open(w, spine)
    s.add_roi("ellipse", [[4, 22, 28], [4, 22, 44], [4, 34, 44], [4, 34, 28]], level="L1")
    qtbot.waitUntil(lambda: len(w.table_rows()) == 1)
    out = tmp_path / "dicom_export"
    w.choose_path = lambda *a, **k: str(out)
    w.ask = lambda *a, **k: "SEG segment (3D Slicer)"
    assert w.export_dicom(background=True) is None  # returned at once
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert "Exported 1 ROI in 1 SR and 1 SEG into dicom_export (0 skipped)" in w.last_message
    assert not s.dirty  # the ROI file was saved first: the export reads it
    (m,) = s.measurements
    sr = highdicom.sr.srread(next(out.glob("*.SR.dcm")))
    (g,) = sr.content.get_volumetric_roi_measurement_groups()
    assert g.tracking_identifier == m.roi_id and g.reference_type.value == "121191"
    means = [
        x.value
        for x in g.get_measurements()
        if x.derivation is not None and x.derivation.meaning == "Mean"
    ]
    assert means == [pytest.approx(m.mean_hu, rel=1e-15)]
    seg = highdicom.seg.segread(next(out.glob("*.SEG.dcm")))
    assert seg.get_segment_description(1).segment_label == m.roi_id
    # a folder holding other files is refused with the reason; nothing is written there
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert w.export_dicom(str(other), "geometry") is None
    assert w.last_message.startswith("DICOM export failed:")
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
