"""One study and one series on screen, current status texts, blinded leaks (issue 13).

Items 7-9 and 14: indexing another folder replaces the study shown; a dropped series
becomes the current one and the slice slider spans that series only; the dock's texts
follow the ROIs; in blinded reading no path, folder or file name shows anywhere.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from dicom_factory import write_ct_series
from napari_helpers import (
    A_ORIGIN,
    A_SHAPE,
    A_SPACING,
    A_STEP,
    SECRET,
    SECRET_STRINGS,
    hu_a,
    make_widget,
)

pytest.importorskip("napari", reason="the napari extra is not installed")
pytestmark = pytest.mark.napari

ELLIPSE = [[2, 15, 19], [2, 15, 29], [2, 25, 29], [2, 25, 19]]


def _plugin_images(viewer):
    from hu_roi_napari._series import handle_of_layer

    return [lay for lay in viewer.layers if handle_of_layer(lay) is not None]


def test_indexing_another_folder_replaces_the_study_on_screen(widget, study, tmp_path, qtbot):
    viewer, w = widget
    w.open_folder(study, roi_file=study.parent / "a.rois.json")
    w.next_series()
    w.session.add_roi("ellipse", ELLIPSE, level="L1")
    qtbot.waitUntil(lambda: len(w.table_rows()) == 1)
    w.save()
    other = tmp_path / "other" / "dicom"
    write_ct_series(
        other / "T1",
        hu_a()[:3],
        pixel_spacing=A_SPACING,
        origin=(0, 0, -500),
        slice_positions=np.arange(3) * 3.0,
        extra_tags=dict(SECRET, PatientID="P77"),
    )
    w.open_folder(other)
    assert _plugin_images(viewer) == [] and w.session.current is None
    assert [lay for lay in viewer.layers if "hu_roi_rois" in lay.metadata] == []
    assert w.tabs.currentIndex() == 0  # the new study list is what shows
    tree = [w.tree.topLevelItem(i).text(0) for i in range(w.tree.topLevelItemCount())]
    assert tree == ["P77"]
    assert w.table_rows() == [] and w.overlay_texts() == {}
    assert w.session.roi_path.name != "a.rois.json"


def test_a_second_dropped_series_becomes_current_and_the_slider_spans_it_only(widget, study, qtbot):
    viewer, w = widget
    viewer.open(str(study / "T0"), plugin="hu-roi")
    qtbot.waitUntil(lambda: w.session.current is not None, timeout=5000)
    first = w.session.current.info
    assert first.series_description == "Spine A"
    viewer.open(str(study / "T2"), plugin="hu-roi")
    qtbot.waitUntil(lambda: w.session.current.info.series_description == "Spine B", timeout=5000)
    (img,) = _plugin_images(viewer)
    assert img is w.session.image_layer
    shapes = [lay for lay in viewer.layers if "hu_roi_rois" in lay.metadata]
    assert shapes == [w.session.shapes_layer]
    # the slider spans the shown series only: its extent along the slice axis
    ax = w.session.transform.slice_axis
    corners = [img.data_to_world(c) for c in ([0, 0, 0], [s - 1 for s in img.data.shape])]
    lo, hi = sorted(float(c[ax]) for c in corners)
    rng = viewer.dims.range[ax]
    assert rng.start == pytest.approx(lo, abs=1e-6) and rng.stop == pytest.approx(hi, abs=1e-6)
    assert viewer.dims.nsteps[ax] == img.data.shape[ax]


def test_status_texts_follow_the_rois(widget, study, qtbot):
    viewer, w = widget
    w.open_folder(study, roi_file=study.parent / "s.rois.json")
    w.next_series()
    assert w.last_message.endswith(": 0 ROIs. Draw with the ROI tools.")
    w.session.add_roi("ellipse", ELLIPSE, level="L1")
    w.session.add_roi("ellipse", np.array(ELLIPSE) + [1, 0, 0], level="L2")
    qtbot.waitUntil(lambda: ": 2 ROIs." in w.last_message)
    w.save()

    def counts():
        out = []
        for i in range(w.tree.topLevelItemCount()):
            top = w.tree.topLevelItem(i)
            out += [top.child(j).text(2) for j in range(top.childCount())]
        return out

    assert "2" in counts()


def test_sample_source_does_not_stick_to_another_series(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w = make_widget(viewer)
    viewer.open_sample("hu-roi", "sample-ct")
    qtbot.waitUntil(lambda: w.session.current is not None, timeout=10000)
    other = [s for s in w.session.reading_list if s.series_key != w.session.current.info.series_key]
    w.open_series(other[0].series_key)
    for lay in (w.session.image_layer, w.session.shapes_layer):
        assert "sample" not in lay.get_source_str(), lay.get_source_str()


def _everything_visible(viewer, w) -> str:
    """Every string a reader can see: dock, layer list (names, tooltips), napari's status
    bar and tooltip, window title, canvas overlays, layer metadata and features."""
    from qtpy.QtWidgets import QLabel

    parts = list(w.all_texts())
    parts.append(viewer.title)
    for lay in viewer.layers:
        parts += [lay.name, lay.get_source_str(), json.dumps(lay.metadata, default=str)]
        feats = getattr(lay, "features", None)
        if feats is not None:
            parts.append(feats.to_csv())
        text = getattr(lay, "text", None)
        if text is not None:
            parts += [str(v) for v in text.values]
    st = viewer.status
    parts += list(st.values()) if isinstance(st, dict) else [st]
    parts.append(viewer.tooltip.text)
    bar = viewer.window._qt_window.statusBar()
    parts += [lab.text() for lab in bar.findChildren(QLabel)]
    parts += list(w.overlay_texts().values())
    model = viewer.window._qt_viewer.layers.model()
    from qtpy.QtCore import Qt

    for r in range(model.rowCount()):
        idx = model.index(r, 0)
        parts.append(str(model.data(idx, Qt.ItemDataRole.ToolTipRole)))
        parts.append(str(model.data(idx, Qt.ItemDataRole.DisplayRole)))
    return "\n".join(str(p) for p in parts if p)


def test_blinded_reading_leaks_nothing(make_napari_viewer, tmp_path, qtbot):
    """Patient-id folder, timepoint folder and dated file names never show when blinded.

    (The timepoint folder is T0: T1-T12 are also thoracic levels, listed by the level picker.)
    """
    root = tmp_path / "BS-4711"
    files = write_ct_series(
        root / "T0",
        hu_a(),
        pixel_spacing=A_SPACING,
        origin=A_ORIGIN,
        slice_positions=np.arange(A_SHAPE[0]) * A_STEP,
        extra_tags=dict(SECRET),
        file_names="sequential",
    )
    dated = []
    for i, f in enumerate(files):
        dated.append(f.rename(f.parent / f"CT_20210315_{i:04d}"))
    viewer = make_napari_viewer()
    w = make_widget(viewer)
    viewer.open(str(dated[0]), plugin="hu-roi")  # a file with a date in its name
    qtbot.waitUntil(lambda: w.session.current is not None, timeout=5000)
    # napari's status shows the layer (and its file) while unblinded
    viewer.mouse_over_canvas = True
    viewer.cursor.position = tuple(viewer.dims.point)
    viewer.status = {
        "layer_base": dated[0].name,
        "source_type": "plugin",
        "plugin": "hu-roi",
        "coordinates": "T0",
    }  # the last status before blinding
    w.set_blinded(True, seed=5)
    w.session.add_roi("ellipse", ELLIPSE, level="L1")
    qtbot.waitUntil(lambda: len(w.table_rows()) == 1)
    w.save()
    text = _everything_visible(viewer, w)
    for secret in (*SECRET_STRINGS, "BS-4711", "4711", "T0", "CT_2021", str(tmp_path)):
        assert secret not in text, (secret, text)
    # the status napari computes under the cursor, now, stays clean too
    viewer.update_status_from_cursor()
    text = _everything_visible(viewer, w)
    for secret in (*SECRET_STRINGS, "BS-4711", "T0", "CT_2021"):
        assert secret not in text, (secret, text)
    assert "HU" in text  # and it does show the reading aids
    assert w.session.roi_path.name == "blinded_reading.rois.json"
