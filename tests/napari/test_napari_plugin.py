"""The napari plugin against real DICOM series written with pydicom, in a real viewer.

References: voxel positions from the formula of docs/roi_format.md (``lps_of``), HU from the arrays
written; ROI statistics from the core batch (``hu_roi.batch.measure_batch``, what
``hu-roi measure`` runs) and from the sample cohort's independent ground truth.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from napari_helpers import (
    A_ORIGIN,
    A_SPACING,
    A_STEP,
    B_ORIENT,
    B_ORIGIN,
    B_SPACING,
    B_STEP,
    SECRET_STRINGS,
    hu_a,
    hu_b,
    lps_of,
    make_widget,
)

pytest.importorskip("napari", reason="the napari extra is not installed")
pytestmark = pytest.mark.napari

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugins" / "hu_roi_napari"
SAMPLE = Path(__file__).resolve().parents[2] / "sample_dicom"


def _wait_table(qtbot, w, pred, timeout=3000):
    qtbot.waitUntil(lambda: pred(w.table_rows()), timeout=timeout)


def _disc_ellipse(k: int, r0: float, c0: float, rr: float, rc: float) -> np.ndarray:
    """napari ellipse corners (data index k, r, c) of an axis-aligned ellipse."""
    return np.array(
        [
            [k, r0 - rr, c0 - rc],
            [k, r0 - rr, c0 + rc],
            [k, r0 + rr, c0 + rc],
            [k, r0 + rr, c0 - rc],
        ],
        dtype=float,
    )


def test_manifest_valid():
    """npe2 parses and validates the manifest, and every command imports."""
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(PLUGIN_DIR / "napari.yaml")
    assert pm.name == "hu-roi"
    pm.validate_imports()
    assert {c.id for c in pm.contributions.commands} >= {
        "hu-roi.get_reader",
        "hu-roi.widget",
        "hu-roi.sample",
    }
    assert pm.contributions.readers[0].accepts_directories
    # the installed entry point points at the same manifest
    from npe2 import PluginManager

    mgr = PluginManager()
    mgr.discover(include_npe1=False)
    assert mgr.get_manifest("hu-roi").contributions.readers[0].command == "hu-roi.get_reader"

    # which files the reader is offered for (npe2 lower-cases patterns, keeps name case)
    def offered(name: str) -> bool:
        return any(r.plugin_name == "hu-roi" for r in mgr.iter_compatible_readers([name]))

    for name in ("35D95928D375B08C", "025a563f88d677e0", "IM-0001-0004", "IM1", "x.DCM", "y.ima"):
        assert offered(name), name
    for name in ("x.png", "y.tif", "z.TIFF", "notes.txt", "a.nii.gz", "t.csv"):
        assert not offered(name), name


def test_open_folder_two_series_in_lps(make_napari_viewer, study, notes):
    """Two CT series → two lazy image layers; HU at known LPS points; localizer refused."""
    viewer = make_napari_viewer()
    layers = viewer.open(str(study), plugin="hu-roi")
    images = [lay for lay in layers if lay._type_string == "image"]
    assert len(images) == 2
    assert any("localizer" in m for m in notes), notes
    by_desc = {lay.metadata["hu_roi"]["series_description"]: lay for lay in images}
    cases = [
        (
            by_desc["Spine A"],
            hu_a(),
            (A_ORIGIN, (1, 0, 0, 0, 1, 0), A_SPACING, A_STEP),
            [(3, 7, 11), (0, 39, 47), (5, 0, 0)],
        ),
        (
            by_desc["Spine B"],
            hu_b(),
            (B_ORIGIN, B_ORIENT, B_SPACING, B_STEP),
            [(2, 9, 30), (4, 29, 0)],
        ),
    ]
    for lay, hu, geo, voxels in cases:
        assert tuple(lay.contrast_limits) == (-200.0, 1200.0)
        assert "Spine" in lay.name and "2021" in lay.name
        for k, r, c in voxels:
            p = lps_of(*geo, k, r, c)
            idx = np.rint(lay.world_to_data(p[::-1])).astype(int)
            assert float(np.asarray(lay.data[tuple(idx)])) == hu[k, r, c]
    # affine placement for the coronal series, scale/translate for the axial one
    assert not np.allclose(by_desc["Spine B"].affine.affine_matrix, np.eye(4))
    assert np.allclose(by_desc["Spine A"].scale, (A_STEP, *A_SPACING))
    viewer.screenshot(canvas_only=True, flash=False)  # both layers render together


def test_open_is_lazy(make_napari_viewer, study):
    """Opening reads only the displayed slice(s), not the whole series."""
    from hu_roi_napari._series import LazySeriesArray, handle_of_layer

    viewer = make_napari_viewer()
    layers = viewer.open(str(study / "T0"), plugin="hu-roi")
    h = handle_of_layer(layers[0])
    assert isinstance(layers[0].data, LazySeriesArray)
    assert len(h._cache) <= 2 < h.info.n_slices


def test_reopening_a_folder_reads_no_header(make_napari_viewer, study, monkeypatch):
    """The reader and the session index through the per-user header cache."""
    from hu_roi_napari._session import Session

    import hu_roi.io.dicom as dicom_mod

    viewer = make_napari_viewer()
    first = viewer.open(str(study / "T0"), plugin="hu-roi")

    def refuse(path):  # noqa: ANN001, ANN202
        raise AssertionError(f"header read again: {path}")

    monkeypatch.setattr(dicom_mod, "read_header", refuse)
    again = viewer.open(str(study / "T0"), plugin="hu-roi")
    assert len(again) == len(first) == 1 and again[0].name.startswith(first[0].name)
    session = Session(viewer)
    session.open_folder(study / "T0")  # the cache was filled by the reader
    assert len(session.index.series) == len(first) + 1  # + the refused localizer


def test_open_one_file_opens_its_series(make_napari_viewer, study):
    """Dropping one file of a series opens that whole series (not a one-slice stack)."""
    viewer = make_napari_viewer()
    one = sorted((study / "T2").iterdir())[0]
    (layer,) = viewer.open(str(one), plugin="hu-roi")
    assert sorted(layer.data.shape) == sorted(hu_b().shape)
    # several files of one series (a multi-file drop): still one layer
    from hu_roi_napari._reader import read_dicom

    files = sorted(str(p) for p in (study / "T2").iterdir())[:3]
    assert len(read_dicom(files)) == 1


def test_reader_never_raises_on_non_dicom(make_napari_viewer, tmp_path, notes):
    from hu_roi_napari._reader import napari_get_reader, read_dicom

    (tmp_path / "junk").write_bytes(b"not dicom at all" * 10)
    assert napari_get_reader(str(tmp_path)) is None  # not claimed
    assert read_dicom(str(tmp_path)) == [(None,)]  # and reading it anyway never raises
    assert notes and "no DICOM image series" in notes[0]


def test_reader_claims_only_dicom(make_napari_viewer, study, tmp_path):
    """Files with the DICOM preamble and folders holding one; never a README or a CSV."""
    from hu_roi_napari._reader import napari_get_reader

    readme = tmp_path / "README"
    readme.write_text("# a study folder\n" * 20)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "LICENSE").write_text("text " * 100)
    short = tmp_path / "1234"
    short.write_bytes(b"DICM")  # too short for a preamble
    for p in (readme, tmp_path / "notes", short, [str(readme), str(short)]):
        assert napari_get_reader(p if isinstance(p, list) else str(p)) is None, p
    one = next(p for p in sorted((study / "T0").iterdir()) if p.is_file())
    assert napari_get_reader(str(one)) is not None
    assert napari_get_reader(str(study)) is not None  # DICOM two folders down
    assert napari_get_reader(str(study.parent)) is not None
    # napari itself no longer offers hu-roi for the README
    from npe2 import PluginManager

    pm = PluginManager.instance()
    offered = [r.plugin_name for r in pm.iter_compatible_readers([str(readme)])]
    if "hu-roi" in offered:  # offered by its file pattern, but it refuses the path
        rdr = next(
            r for r in pm.iter_compatible_readers([str(readme)]) if r.plugin_name == "hu-roi"
        )
        assert rdr.exec(kwargs={"path": [str(readme)], "stack": False}) is None


def test_live_table_matches_batch(widget, study, qtbot):
    """An ROI drawn programmatically: the table shows what hu-roi measure (batch) gives."""
    from hu_roi.batch import measure_batch

    viewer, w = widget
    roi_file = study.parent / "study.rois.json"
    w.open_folder(study, roi_file=roi_file)
    key = next(s.series_key for s in w.session.reading_list if s.series_description == "Spine A")
    w.open_series(key)
    s = w.session
    s.add_roi("ellipse", _disc_ellipse(3, 20, 24, 8.5, 12.0), level="L2", kind="target")
    s.add_roi(
        "polygon",
        np.array([[2, 2, 2], [2, 2, 14], [2, 12, 14], [2, 12, 2]], float),
        level=None,
        kind="reference-muscle",
    )
    # a target without a level: the viewer flags it as measure does (no-level)
    s.add_roi("ellipse", _disc_ellipse(1, 20, 24, 6.0, 6.0), level=None, kind="target")
    _wait_table(qtbot, w, lambda rows: len(rows) == 3)
    live = {m.roi_id: m for m in s.calibrated_measurements()}
    (unplaced,) = [m for m in live.values() if m.kind == "target" and m.level is None]
    assert "no-level" in unplaced.qc_flags and unplaced.qc_status == "warn"
    w.save()
    batch = {m.roi_id: m for m in measure_batch(study, roi_file).measurements}
    assert set(live) == set(batch)
    for rid, b in batch.items():
        m = live[rid]
        assert (m.n_voxels, m.slice_index) == (b.n_voxels, b.slice_index)
        assert m.n_voxels > 20
        for f in ("mean_hu", "sd_hu", "median_hu", "area_mm2"):
            assert getattr(m, f) == getattr(b, f), (rid, f)
        assert m.qc_flags == b.qc_flags
    # the two CSV buttons: this series (export) and every stored ROI (batch): same cells
    one = {r["roi_id"]: r for r in csv.DictReader(open(w.export_csv(study.parent / "one.csv")))}
    every = {r["roi_id"]: r for r in csv.DictReader(open(w.measure_all(study.parent / "all.csv")))}
    from hu_roi.export import columns

    assert list(next(iter(one.values()))) == list(columns())
    for rid in batch:
        for col in ("n_voxels", "mean_hu", "sd_hu", "median_hu", "qc_status", "qc_flags"):
            assert one[rid][col] == every[rid][col], (rid, col)
    rows = {r[0]: r for r in w.table_rows()}
    b = batch["PSECRET7-T0-L2"]
    assert rows["PSECRET7-T0-L2"][1:5] == [
        str(b.n_voxels),
        f"{b.mean_hu:.1f}",
        f"{b.sd_hu:.1f}",
        f"{b.median_hu:.1f}",
    ]
    # independent check of the ellipse's voxels (docs/design.md rule on the written array)
    r, c = np.indices(hu_a().shape[1:])
    inside = ((r - 20) / 8.5) ** 2 + ((c - 24) / 12.0) ** 2 <= 1
    assert b.n_voxels == int(inside.sum())
    assert b.mean_hu == pytest.approx(hu_a()[3][inside].mean(), abs=1e-9)
    # moving the shape updates the table (debounced data event)
    lay = s.shapes_layer
    data = list(lay.data)
    data[0] = data[0] + np.array([0.0, 0.0, 1.0])
    lay.data = data
    old = rows["PSECRET7-T0-L2"][2]  # mean HU
    _wait_table(qtbot, w, lambda rows: rows[0][2] != old)
    qtbot.waitUntil(lambda: w.session.dirty, timeout=3000)  # the ROI set follows (debounced)


def test_save_close_reopen_restores_rois(make_napari_viewer, study, qtbot, monkeypatch):
    from hu_roi.roi import load_roiset

    roi_file = study.parent / "reopen.rois.json"
    v1 = make_napari_viewer()
    w1 = make_widget(v1)
    w1.open_folder(study, roi_file=roi_file)
    key = next(s.series_key for s in w1.session.reading_list if s.series_description == "Spine A")
    w1.open_series(key)
    w1.session.add_roi("ellipse", _disc_ellipse(4, 20, 24, 6.0, 9.0), level="L3")
    verts = np.array(w1.session.shapes_layer.data[0])
    w1.save()
    assert not w1.session.dirty
    saved = load_roiset(roi_file)
    assert [r.level for r in saved.rois] == ["L3"] and saved.rois[0].timepoint == "T0"
    v1.close()

    v2 = make_napari_viewer()
    w2 = make_widget(v2)
    w2.open_folder(study, roi_file=roi_file)
    w2.open_series(key)
    lay = w2.session.shapes_layer
    assert len(lay.data) == 1 and lay.shape_type == ["ellipse"]
    np.testing.assert_allclose(np.asarray(lay.data[0]), verts, atol=1e-6)  # same slice k=4
    assert w2.table_rows()[0][7] == "L3"  # level column
    assert list(lay.features["level"]) == ["L3"]


CRASH_SCRIPT = """
import os, sys
import numpy as np
from napari.components import ViewerModel   # the viewer's model: no Qt, no window
from hu_roi_napari._session import Session

s = Session(ViewerModel())
s.open_folder(sys.argv[1], roi_file=sys.argv[2])
s.open_series(s.reading_list[0])
s.add_roi("ellipse", np.array([[1, 10, 10], [1, 10, 20], [1, 20, 20], [1, 20, 10]], float),
          level="T12")
os._exit(137)   # crash: no save, no cleanup, no atexit
"""


def test_autosave_survives_crash(make_napari_viewer, study, tmp_path):
    """A process that drew an ROI and crashed: the next session restores it from the autosave."""
    import subprocess
    import sys

    from hu_roi_napari._session import autosave_path

    from hu_roi.roi import load_roiset

    roi_file = study.parent / "crash.rois.json"
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script), str(study), str(roi_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 137, proc.stderr
    assert autosave_path(roi_file).exists()
    assert not roi_file.exists()  # nothing was saved

    v2 = make_napari_viewer()
    w2 = make_widget(v2)
    asked = []
    w2.ask = lambda title, q, b: asked.append(title) or "Restore"
    w2.open_folder(study, roi_file=roi_file)
    assert asked == ["Unsaved ROI edits found"]
    assert [r.level for r in w2.session.roiset.rois] == ["T12"]
    assert w2.session.dirty
    w2.save()
    assert [r.level for r in load_roiset(roi_file).rois] == ["T12"]
    assert not autosave_path(roi_file).exists()


def test_close_warns_about_unsaved_edits(widget, study):
    viewer, w = widget
    w.open_folder(study, roi_file=study.parent / "warn.rois.json")
    w.open_series(w.session.reading_list[0])
    w.session.add_roi("ellipse", _disc_ellipse(1, 15, 15, 5.0, 5.0), level="L1")
    w.answers["Unsaved ROI edits"] = "Cancel"
    assert not w.confirm_close()
    w.answers["Unsaved ROI edits"] = "Save"
    assert w.confirm_close() and (study.parent / "warn.rois.json").exists()


def _all_layer_text(viewer) -> str:
    parts = []
    for lay in viewer.layers:
        parts.append(lay.name)
        parts.append(json.dumps(lay.metadata, default=str))
        feats = getattr(lay, "features", None)
        if feats is not None:
            parts.append(feats.to_csv())
    return "\n".join(parts)


def test_blinded_mode_hides_identifiers(widget, study, qtbot):
    from hu_roi.roi import load_roiset

    viewer, w = widget
    roi_file = study.parent / "blind.rois.json"
    w.open_folder(study, roi_file=roi_file)
    viewer.open(str(study / "T2"), plugin="hu-roi")  # a layer opened before blinding
    w.set_blinded(True, seed=11)
    order1 = [s.series_key for s in w.session.reading_list]
    # show the follow-up scan (Spine B, T2, 100 kV: it differs from the T0 scan)
    w.open_series(next(k for k in order1 if w.session.find_series(k).kvp == 100))
    w.session.add_roi("ellipse", _disc_ellipse(2, 12, 12, 5.0, 6.0), level="L4")
    _wait_table(qtbot, w, lambda rows: len(rows) == 1)
    w.tabs.setCurrentIndex(0)
    texts = "\n".join(w.all_texts() + [w.status.text(), viewer.title])
    layer_text = _all_layer_text(viewer)
    for secret in (*SECRET_STRINGS, "T0", "differs-from"):  # nor the timepoint
        assert secret not in texts, secret
        assert secret not in layer_text, secret
    shown = w.session.current.info
    label = w.session.labels[shown.series_key]
    assert label.startswith("Case ") and w.session.image_layer.name == label and label in texts
    assert sorted(w.session.labels.values()) == ["Case 01", "Case 02"]
    assert all(lay.name.startswith(("Case", "ROIs")) for lay in viewer.layers)
    assert "irradiated" not in w.session.shapes_layer.features.columns
    # reproducible shuffled order: same seed, same order; labels are neutral
    w.set_blinded(False)
    assert "kvp-differs-from-T0" in w.table_rows()[0][6]  # shown when not blinded
    w.set_blinded(True, seed=11)
    assert [s.series_key for s in w.session.reading_list] == order1
    # the ROI is still stored for the right patient and timepoint
    w.save()
    (roi,) = load_roiset(roi_file).rois
    info = shown
    assert roi.patient_id == "PSECRET7"
    assert roi.timepoint == ("T0" if info.series_description == "Spine A" else "T2")
    assert roi.series_instance_uid == info.series_instance_uid


def test_sample_data_command(make_napari_viewer, qtbot):
    """File › Open Sample › hu-roi: P01 baseline with its 9 stored ROIs, numbers = ground truth."""
    if not (SAMPLE / "dicom").is_dir():
        pytest.skip("sample_dicom/ not generated")
    viewer = make_napari_viewer()
    layers = viewer.open_sample("hu-roi", "sample-ct")
    kinds = sorted(lay._type_string for lay in layers)
    assert kinds == ["image", "shapes"]
    shapes = next(lay for lay in layers if lay._type_string == "shapes")
    truth = list(csv.DictReader(open(SAMPLE / "ground_truth.csv", encoding="utf-8")))
    t0 = [
        t
        for t in truth
        if t["patient_id"] == "P01" and t["timepoint"] == "T0" and t["kernel"] == "B60s"
    ]
    assert len(shapes.data) == len(t0) == 9
    # the widget adopts the layers and measures with the core
    w = make_widget(viewer)
    qtbot.waitUntil(lambda: len(w.session.measurements) == 9, timeout=15000)
    got = {m.roi_id: m for m in w.session.measurements}
    assert w.session.shapes_layer is shapes
    for t in t0:
        m = got[t["roi_id"]]
        assert m.n_voxels == int(t["roi_n_voxels"])
        assert m.mean_hu == pytest.approx(float(t["roi_mean_hu"]), abs=1e-3)
    # calibration panel: the scan's reference ROIs and phantom fit, from the core
    rep = w.session.calibration_report()
    assert sorted(k for k, _, _ in rep.references) == [
        "reference-air",
        "reference-fat",
        "reference-muscle",
    ]
    assert "R²" in rep.phantom and rep.baseline == "this scan"
    w.refresh_calibration()
    assert "reference-air" in w.cal_summary.text()
    # the ROI file used is a working copy, never the repository's sample
    assert SAMPLE not in Path(w.session.roi_path).parents


def test_screenshot_with_roi_is_not_blank(make_napari_viewer, tmp_path):
    """A real rendering (Xvfb): the CT and the yellow ROI outline are in the screenshot."""
    from dicom_factory import write_ct_series

    viewer = make_napari_viewer(show=True)
    folder = tmp_path / "shot"
    hu = hu_a()
    write_ct_series(
        folder,
        hu,
        pixel_spacing=A_SPACING,
        origin=A_ORIGIN,
        slice_positions=np.arange(hu.shape[0]) * A_STEP,
    )

    w = make_widget(viewer)
    w.open_folder(folder, roi_file=tmp_path / "shot.rois.json")
    w.next_series(1)
    w.session.add_roi("ellipse", _disc_ellipse(3, 20, 24, 8.0, 11.0), level="L1")
    viewer.dims.set_point(0, w.session.image_layer.data_to_world([3, 0, 0])[0])
    img = viewer.screenshot(canvas_only=True, flash=False)
    assert img.ndim == 3 and img.shape[0] > 100
    rgb = img[..., :3].astype(int)
    assert rgb.std() > 10  # not blank
    yellow = (rgb[..., 0] - rgb[..., 2] > 100) & (rgb[..., 1] - rgb[..., 2] > 100)
    assert yellow.sum() > 200  # the ROI outline is drawn (the CT itself is grey)
    # the outline runs through the ellipse's boundary at the centre row of the screenshot
    row = yellow[img.shape[0] // 2]
    assert row[: img.shape[1] // 2].any() and row[img.shape[1] // 2 :].any()


def test_series_with_gap_opens_like_batch_accepts_it(make_napari_viewer, tmp_path, notes):
    """missing-slices: opened with a warning (batch accepts it); the ROI uses true positions."""
    from dicom_factory import write_ct_series

    from hu_roi.batch import measure_batch

    folder = tmp_path / "gap"
    hu = hu_a()
    pos = np.array([0.0, 2.5, 5.0, 12.5, 15.0, 17.5])  # a 7.5 mm gap
    write_ct_series(folder, hu, pixel_spacing=A_SPACING, origin=A_ORIGIN, slice_positions=pos)
    viewer = make_napari_viewer()
    w = make_widget(viewer)
    w.open_folder(folder, roi_file=tmp_path / "gap.rois.json")
    (info,) = w.session.reading_list
    assert "missing-slices" in info.problems
    w.open_series(info.series_key)
    w.session.add_roi("ellipse", _disc_ellipse(3, 20, 24, 8.0, 10.0), level="L1")
    (m,) = w.session.measurements
    assert m.slice_index == 3 and "series-missing-slices" in m.qc_flags
    w.save()
    (b,) = measure_batch(folder, tmp_path / "gap.rois.json").measurements
    assert (b.n_voxels, b.mean_hu, b.slice_index) == (m.n_voxels, m.mean_hu, m.slice_index)
    layers = viewer.open(str(folder), plugin="hu-roi")
    assert len(layers) == 1 and any("missing-slices" in n for n in notes)


def test_save_refuses_to_overwrite_a_file_changed_on_disk(widget, study):
    """Another reader saved meanwhile: the core's conflict check keeps their work."""
    viewer, w = widget
    roi_file = study.parent / "shared.rois.json"
    w.open_folder(study, roi_file=roi_file)
    w.open_series(w.session.reading_list[0])
    w.session.add_roi("ellipse", _disc_ellipse(1, 15, 15, 5.0, 5.0), level="L1")
    w.save()
    w.session.add_roi("ellipse", _disc_ellipse(2, 15, 15, 5.0, 5.0), level="L2")
    theirs = roi_file.read_text(encoding="utf-8").replace('"reader": "R1"', '"reader": "R2"')
    roi_file.write_text(theirs, encoding="utf-8")
    w.save()
    assert "changed on disk" in w.last_message
    assert roi_file.read_text(encoding="utf-8") == theirs
    assert w.session.dirty  # edits kept (and autosaved), nothing lost


def test_relabelling_an_roi_never_leaves_an_id_naming_another_level(widget, study, qtbot):
    """Issue 13.5: relabelling T12 to L1 kept the id "P-TX-T12" (table and CSV disagreed)."""
    from hu_roi.roi import load_roiset

    viewer, w = widget
    roi_file = study.parent / "ids.rois.json"
    w.open_folder(study, roi_file=roi_file)
    key = next(s.series_key for s in w.session.reading_list if s.series_description == "Spine A")
    w.open_series(key)
    s = w.session
    s.add_roi("ellipse", _disc_ellipse(3, 20, 24, 6.0, 8.0), level="L1")
    s.set_attributes([0], level="L2")  # drawn with the wrong level, fixed at once
    assert [r.roi_id for r in s.roiset.rois] == ["PSECRET7-T0-L2"]
    s.add_roi("ellipse", _disc_ellipse(3, 10, 10, 3.0, 3.0), level="L1")
    s.add_roi("ellipse", _disc_ellipse(3, 30, 36, 3.0, 3.0), level="L4")
    s.add_roi("ellipse", _disc_ellipse(3, 10, 36, 3.0, 3.0), level="L5")
    w.save()
    # ids written elsewhere: a placeholder id and an id naming T12, a free-form id
    data = json.loads(roi_file.read_text(encoding="utf-8"))
    edits = [("P-TX-T12", "T12"), None, ("PSECRET7-T0-T12-2", "T12"), ("vertebra-A", "L5")]
    for roi, edit in zip(data["rois"], edits, strict=True):
        if edit:
            roi["roi_id"], roi["level"] = edit
    roi_file.write_text(json.dumps(data), encoding="utf-8")
    w.load_rois(roi_file)
    by_id = {r.roi_id: i for i, r in enumerate(s.current_rois())}
    assert set(by_id) == {"P-TX-T12", "PSECRET7-T0-L1", "PSECRET7-T0-T12-2", "vertebra-A"}
    s.set_attributes([by_id["P-TX-T12"]], level="L1")
    s.set_attributes([by_id["vertebra-A"]], level="S1")  # names no level: kept
    s.set_attributes([by_id["PSECRET7-T0-L1"]], lesion_type="osteolytic")  # level kept
    # the napari way: the level column of the layer's features edited directly
    lay = s.shapes_layer
    feats = lay.features.copy()
    feats.loc[feats.index[by_id["PSECRET7-T0-T12-2"]], "level"] = "L1"
    lay.features = feats
    want = {"P-TX-L1": "L1", "PSECRET7-T0-L1": "L1", "PSECRET7-T0-L1-2": "L1", "vertebra-A": "S1"}
    qtbot.waitUntil(lambda: {r.roi_id for r in s.roiset.rois} == set(want), timeout=3000)
    w.save()
    stored = load_roiset(roi_file).rois
    assert {r.roi_id: r.level for r in stored} == want
    assert {r.roi_id: r.lesion_type for r in stored}["PSECRET7-T0-L1"] == "osteolytic"
    with open(w.export_csv(study.parent / "ids.csv"), encoding="utf-8") as f:
        assert {r["roi_id"]: r["level"] for r in csv.DictReader(f)} == want
    assert {r[0] for r in w.table_rows()} == set(want)


def test_a_shape_drawn_after_relabelling_is_a_new_roi(widget, study, qtbot):
    """napari copies the last row's features (the ROI's key too) into the next shape's."""
    viewer, w = widget
    w.open_folder(study, roi_file=study.parent / "keys.rois.json")
    key = next(s.series_key for s in w.session.reading_list if s.series_description == "Spine A")
    w.open_series(key)
    s = w.session
    s.add_roi("ellipse", _disc_ellipse(3, 20, 24, 6.0, 8.0), level="L1")
    s.set_attributes([0], level="L2")  # Apply to selected
    s.add_roi("ellipse", _disc_ellipse(3, 10, 10, 3.0, 3.0), level="L1")
    lay = s.shapes_layer
    feats = lay.features.copy()
    feats.loc[feats.index[1], "lesion_type"] = "mixed"
    lay.features = feats  # an edit of the layer's features (napari's own way)
    lay.add(s.transform.to_layer(_disc_ellipse(3, 30, 36, 3.0, 3.0)), shape_type="ellipse")
    qtbot.waitUntil(lambda: len(s.roiset.rois) == 3, timeout=3000)
    assert sorted((r.roi_id, r.level) for r in s.roiset.rois) == [
        ("PSECRET7-T0-L1", "L1"),
        ("PSECRET7-T0-L1-2", "L1"),
        ("PSECRET7-T0-L2", "L2"),
    ]
    assert len(set(lay.features["key"])) == 3


@pytest.mark.parametrize(
    ("roi_id", "timepoint", "level", "kind", "expected"),
    [
        ("P-TX-T12", None, "L1", "target", "P-TX-L1"),
        ("P01-T0-L3", "T0", "L3", "target", None),  # fits
        ("P01-T0-L3-2", "T0", "L4", "target", "P01-T0-L4"),  # uniqueness suffix dropped
        ("P01_T1_L3", "T1", "L2", "target", "P01_T1_L2"),
        ("P01-T2-L1", "T2", "L2", "target", "P01-T2-L2"),  # the timepoint part stays
        ("P01-T2", "T2", "L2", "target", None),  # T2 is the timepoint here, not a level
        ("P01-T2-T2", "T2", "L2", "target", "P01-T2-L2"),  # ...and a level here
        ("P01-T0-L3", "T0", None, "reference-fat", "P01-T0-reference-fat"),
        ("P01-T0-L3", "T0", None, "target", "P01-T0-target"),
        ("vertebra-A", "T0", "L1", "target", None),  # names no level
        ("L1", None, "L2", "target", "L2"),
    ],
)
def test_id_for_level(roi_id, timepoint, level, kind, expected):
    from hu_roi_napari._rois_layer import id_for_level

    assert id_for_level(roi_id, timepoint, level, kind) == expected


@pytest.mark.realct
def test_real_ct_voxels_at_lps_points_match_simpleitk(make_napari_viewer, real_ct):
    """A real Siemens CT: HU at LPS points in the napari layer = SimpleITK's (independent)."""
    import SimpleITK as sitk
    from sitk_ref import read_with_sitk

    folder = real_ct / "siemens_biograph_mct_thoracolumbar" / "dicom"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    img = read_with_sitk(folder)
    arr = sitk.GetArrayFromImage(img)  # (z, y, x)
    viewer = make_napari_viewer()
    (layer,) = [
        lay for lay in viewer.open(str(folder), plugin="hu-roi") if lay._type_string == "image"
    ]
    rng = np.random.default_rng(3)
    size = img.GetSize()
    for _ in range(8):
        ijk = [int(rng.integers(0, n)) for n in size]  # SimpleITK (x, y, z) index
        p = np.asarray(img.TransformIndexToPhysicalPoint(ijk))  # LPS mm
        idx = np.rint(layer.world_to_data(p[::-1])).astype(int)
        assert float(np.asarray(layer.data[tuple(idx)])) == float(arr[ijk[2], ijk[1], ijk[0]])


def test_mouse_draw_and_drag_updates_table_live(make_napari_viewer, study, qtbot):
    """Draw an ellipse with the mouse, then drag it: numbers follow before the release."""
    from qtpy.QtCore import QPointF, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    w = make_widget(viewer)
    w.open_folder(study, roi_file=study.parent / "mouse.rois.json")
    w.open_series(
        next(s.series_key for s in w.session.reading_list if s.series_description == "Spine A")
    )
    w.session.show_slice(3)
    native = viewer.window._qt_viewer.canvas.native
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    img = w.session.image_layer

    def px(k: float, r: float, c: float) -> QPointF:  # data index -> canvas pixel
        wz, wy, wx = img.data_to_world([k, r, c])
        cy, cx = camera.center[-2:]
        return QPointF(
            native.width() / 2 + (wx - cx) * camera.zoom,
            native.height() / 2 + (wy - cy) * camera.zoom,
        )

    def send(kind, p, buttons):
        ev = QMouseEvent(
            kind,
            p,
            native.mapToGlobal(p),
            Qt.MouseButton.LeftButton,
            buttons,
            Qt.KeyboardModifier.NoModifier,
        )
        QApplication.sendEvent(native, ev)

    def drag(p1, p2, release=True):
        send(QMouseEvent.Type.MouseButtonPress, p1, Qt.MouseButton.LeftButton)
        for f in np.linspace(0.0, 1.0, 6)[1:]:
            send(QMouseEvent.Type.MouseMove, p1 + (p2 - p1) * float(f), Qt.MouseButton.LeftButton)
            qtbot.wait(20)
        if release:
            send(QMouseEvent.Type.MouseButtonRelease, p2, Qt.MouseButton.NoButton)

    w.set_mode("add_ellipse")
    drag(px(3, 14, 16), px(3, 26, 32))
    qtbot.waitUntil(lambda: len(w.session.roiset.rois) == 1, timeout=3000)
    (roi,) = w.session.roiset.rois
    assert roi.shape.type == "ellipse" and roi.level == "L1"
    before = w.table_rows()[0][2]
    w.set_mode("select")
    drag(px(3, 20, 24), px(3, 20, 30), release=False)  # grab the ellipse, move 6 columns
    _wait_table(qtbot, w, lambda rows: rows[0][2] != before)  # updated while still held
    assert w.session.roiset.rois[0] == roi  # the ROI set changes only on release
    send(QMouseEvent.Type.MouseButtonRelease, px(3, 20, 30), Qt.MouseButton.NoButton)
    qtbot.waitUntil(lambda: w.session.roiset.rois[0] != roi, timeout=3000)
    assert w.session.roiset.rois[0].shape.center_mm[0] > roi.shape.center_mm[0]  # moved +X


def _add_reader_layers(viewer, path) -> list:
    """Add the reader's layers without running Qt's event loop in between.

    ``viewer.open`` runs the event loop only when its progress bar happens to redraw,
    which depends on the machine's load; this is the deterministic slow-machine case.
    """
    from hu_roi_napari._reader import read_dicom
    from napari.layers import Layer

    return [viewer.add_layer(Layer.create(d, kw, t)) for d, kw, t in read_dicom(str(path))]


def _assert_session_names(w) -> None:
    """The shown series' layers carry exactly the session's names; all names are unique."""
    s = w.session
    names = [lay.name for lay in w.viewer.layers]
    assert s.image_layer.name == s.label(s.current.info), names
    assert s.shapes_layer.name == s._rois_name(), names
    assert len(set(names)) == len(names), names


def test_layer_opened_before_blinding_never_takes_the_case_label(widget, study, qtbot):
    """A layer still waiting to be adopted when blinded mode starts: no 'Case 01 [1]'."""
    viewer, w = widget
    w.open_folder(study, roi_file=study.parent / "race.rois.json")
    (img,) = _add_reader_layers(viewer, study / "T2")  # adoption still pending
    w.set_blinded(True, seed=11)
    assert w.session.image_layer is img  # adopted first, then blinded
    _assert_session_names(w)
    w.open_series(w.session.current.info.series_key)
    w.session.add_roi("ellipse", _disc_ellipse(2, 12, 12, 5.0, 6.0), level="L4")
    _wait_table(qtbot, w, lambda rows: len(rows) == 1)
    qtbot.wait(50)  # any timer still pending has fired
    assert w.session.image_layer is img
    _assert_session_names(w)
    assert all(lay.name.startswith(("Case", "ROIs")) for lay in viewer.layers)
    for other in w.session.reading_list:  # paging through the list keeps the names exact
        w.open_series(other.series_key)
        _assert_session_names(w)


def test_session_layers_keep_their_names_when_another_layer_holds_them(widget, study, qtbot):
    """Layers left from earlier series (same label) never push a suffix onto the shown one."""
    viewer, w = widget
    w.open_folder(study, roi_file=study.parent / "names.rois.json")
    keys = {s.series_description: s.series_key for s in w.session.reading_list}
    w.open_series(keys["Spine A"])
    first = w.session.image_layer
    # the same series dropped again: it is adopted as the current series
    _add_reader_layers(viewer, study / "T0")
    qtbot.waitUntil(lambda: w.session.image_layer is not first, timeout=3000)
    _assert_session_names(w)
    for blinded in (False, True, False):
        w.set_blinded(blinded, seed=3)
        for key in (keys["Spine B"], keys["Spine A"], keys["Spine B"]):
            w.open_series(key)
            _assert_session_names(w)
        qtbot.wait(20)
        _assert_session_names(w)
