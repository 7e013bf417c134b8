"""ROI attributes, prompts and dialogs of the napari plugin (issue 13, items 5 and 10).

Series are real DICOM written with pydicom (tests/dicom_factory.py); the study-code case
uses a series whose PatientID is empty, as on anonymised Siemens exports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series
from napari_helpers import A_ORIGIN, A_SPACING, A_STEP, SECRET, hu_a, key_of, make_widget

pytest.importorskip("napari", reason="the napari extra is not installed")
pytestmark = pytest.mark.napari

ELLIPSE = [[2, 15, 19], [2, 15, 29], [2, 25, 29], [2, 25, 19]]


def _open(w, study: Path, desc: str = "Spine A"):
    w.open_folder(study, roi_file=study.parent / "r.rois.json")
    key = key_of(w, desc)
    w.open_series(key)
    return w.session


def test_selecting_an_roi_loads_its_attributes_and_editing_updates_it(widget, study, qtbot):
    viewer, w = widget
    sess = _open(w, study)
    sess.add_roi("ellipse", ELLIPSE, level="T12", kind="target", lesion_type="osteolytic")
    sess.add_roi(
        "ellipse", np.array(ELLIPSE) + [0, 10, 10], level="L2", kind="target", lesion_type=None
    )
    qtbot.waitUntil(lambda: len(w.table_rows()) == 2)
    lay = sess.shapes_layer
    w.level_combo.setCurrentText("L4")  # the picker holds something else
    w.set_mode("select")
    lay.selected_data = {0}
    assert w.level_combo.currentText() == "T12"
    assert w.lesion_combo.currentText() == "osteolytic"
    lay.selected_data = {1}
    assert (w.level_combo.currentText(), w.lesion_combo.currentText()) == ("L2", "")
    # editing a picker changes the selected ROI only, and its id follows the level
    w.level_combo.setCurrentText("L3")
    qtbot.waitUntil(lambda: [r[7] for r in w.table_rows()] == ["T12", "L3"])
    rows = w.table_rows()
    assert rows[1][0].endswith("-L3") and rows[0][0].endswith("-T12")
    w.irradiated_combo.setCurrentText("yes")
    qtbot.waitUntil(lambda: lay.features["irradiated"].tolist() == ["", "yes"])
    # "Next level" is for the next ROI: it never relabels the selected one
    w.step_level(1)
    assert w.level_combo.currentText() == "L4"
    w._sync_now()
    assert [r[7] for r in w.table_rows()] == ["T12", "L3"]
    # while drawing (napari selects the shape just drawn) the pickers do not edit it
    w.set_mode("add_ellipse")
    w.kind_combo.setCurrentText("reference-fat")
    w._sync_now()
    assert [r[8] for r in w.table_rows()] == ["target", "target"]


def test_dialogs_open_in_the_study_folder_with_suggested_names(widget, study):
    viewer, w = widget
    sess = _open(w, study)
    w.save_as()
    w.export_csv()
    w.measure_all()
    folder = str(study.parent)
    got = dict(a.split("|", 1) for a in w.asked)
    assert got["Save ROI file"] == str(study.parent / "r.rois.json")
    export = Path(got["Export measurements"])
    assert str(export.parent) == folder and export.name.endswith("_measurements.csv")
    assert "Spine_A" in export.name
    assert got["Measure all stored ROIs"] == str(study.parent / "dicom_measurements.csv")
    # blinded: neutral names only
    w.asked.clear()
    w.set_blinded(True, seed=3)
    w.export_csv()
    w.measure_all()
    w.save_as()
    names = [Path(a.split("|", 1)[1]).name for a in w.asked]
    label = sess.label(sess.current.info)
    assert names == [
        f"{label.replace(' ', '_')}_measurements.csv",
        "all_measurements.csv",
        "blinded_reading.rois.json",
    ]


def test_blinded_default_roi_file_has_a_neutral_name(make_napari_viewer, tmp_path):
    root = tmp_path / "BS-4711"
    write_ct_series(
        root / "T0",
        hu_a(),
        pixel_spacing=A_SPACING,
        origin=A_ORIGIN,
        slice_positions=np.arange(6) * A_STEP,
        extra_tags=dict(SECRET),
    )
    w = make_widget(make_napari_viewer())
    w.set_blinded(True, seed=1)
    w.open_folder(root)
    assert w.session.roi_path.name == "blinded_reading.rois.json"
    w.next_series()
    w.session.add_roi("ellipse", ELLIPSE, level="L1")
    w.save()
    texts = "\n".join(w.all_texts())
    assert "BS-4711" not in texts and "4711" not in w.last_message
    assert (tmp_path / "blinded_reading.rois.json").exists()


def test_series_without_patient_id_asks_for_a_study_code(make_napari_viewer, tmp_path, qtbot):
    """Anonymised export (empty PatientID): the ROIs get the typed study code."""

    from hu_roi.batch import measure_batch
    from hu_roi.roi import load_roiset

    root = tmp_path / "anon"
    tags = {k: v for k, v in SECRET.items() if k != "PatientID"}
    write_ct_series(
        root / "T0",
        hu_a(),
        pixel_spacing=A_SPACING,
        origin=A_ORIGIN,
        slice_positions=np.arange(6) * A_STEP,
        extra_tags=dict(tags, PatientID=""),
    )
    w = make_widget(make_napari_viewer())
    roi_file = tmp_path / "anon.rois.json"
    w.open_folder(root, roi_file=roi_file)
    w.next_series()  # no code given: a warning, the placeholder 'P'
    assert "patient-id-missing" in w.last_message
    w.session.add_roi("ellipse", ELLIPSE, level="L1")
    qtbot.waitUntil(lambda: len(w.table_rows()) == 1)
    assert w.table_rows()[0][0] == "P-T0-L1"
    # the code given later renames the placeholder and fills the patient id
    w.session.set_study_code("S-017")
    qtbot.waitUntil(lambda: [r[0] for r in w.table_rows()] == ["S-017-T0-L1"])
    w.session.add_roi("ellipse", np.array(ELLIPSE) + [1, 0, 0], level="L2")
    qtbot.waitUntil(lambda: len(w.table_rows()) == 2)
    w.save()
    rois = load_roiset(roi_file).rois
    assert [(r.roi_id, r.patient_id) for r in rois] == [
        ("S-017-T0-L1", "S-017"),
        ("S-017-T0-L2", "S-017"),
    ]
    res = measure_batch(root, roi_file)
    assert [m.qc_status for m in res.measurements] != ["fail", "fail"]
    assert not any("patient-id-missing" in m.qc_flags for m in res.measurements)


def test_study_code_prompt_when_a_series_has_no_patient_id(make_napari_viewer, tmp_path):
    root = tmp_path / "anon"
    write_ct_series(
        root / "T0",
        hu_a(),
        pixel_spacing=A_SPACING,
        origin=A_ORIGIN,
        slice_positions=np.arange(6) * A_STEP,
        extra_tags={"PatientID": ""},
    )
    w = make_widget(make_napari_viewer())
    w.answers["Study code"] = "S-042"
    w.open_folder(root, roi_file=tmp_path / "a.rois.json")
    w.next_series()
    w.session.add_roi("ellipse", ELLIPSE, level="L1")
    w._sync_now()
    assert w.session.roiset.rois[0].patient_id == "S-042"
    assert w.session.roiset.rois[0].roi_id == "S-042-T0-L1"


def test_unknown_timepoint_prompt(make_napari_viewer, tmp_path):
    root = tmp_path / "scan"  # no T0..T3 folder
    write_ct_series(
        root,
        hu_a(),
        pixel_spacing=A_SPACING,
        origin=A_ORIGIN,
        slice_positions=np.arange(6) * A_STEP,
        extra_tags=dict(SECRET),
    )
    w = make_widget(make_napari_viewer())
    w.answers["Timepoint"] = "T1"
    w.open_folder(root, roi_file=tmp_path / "a.rois.json")
    w.next_series()
    assert w.session.timepoint == "T1"
    w.session.add_roi("ellipse", ELLIPSE, level="L1")
    w._sync_now()
    assert w.session.roiset.rois[0].roi_id == "PSECRET7-T1-L1"
