"""Reading aids of the napari plugin (issue 13): HU under the cursor, windows, orientation.

References: HU from the arrays written with pydicom, voxel positions from the formula of
docs/roi_format.md (``lps_of`` in napari_helpers, independent of the plugin).
"""

from __future__ import annotations

import numpy as np
import pytest
from napari_helpers import (
    A_ORIGIN,
    A_SHAPE,
    A_SPACING,
    A_STEP,
    B_ORIENT,
    B_ORIGIN,
    B_SPACING,
    B_STEP,
    hu_a,
    hu_b,
    key_of,
    lps_of,
)

pytest.importorskip("napari", reason="the napari extra is not installed")
pytestmark = pytest.mark.napari

AXIAL = (1, 0, 0, 0, 1, 0)


def _open(w, study, desc: str):
    w.open_folder(study, roi_file=study.parent / "r.rois.json")
    key = key_of(w, desc)
    w.open_series(key)
    return w.session


def _status_at(viewer, sess, k, r, c, jitter=(0.3, -0.2)):
    """napari's status (the viewer's own computation) with the cursor on voxel (k, r, c)."""
    img = sess.image_layer
    tr = sess.transform
    v = tr.to_layer([[k, r + jitter[0], c + jitter[1]]])[0]
    world = np.asarray(img.data_to_world(v), dtype=float)
    # the plane shown holds the voxel: move the dims there first
    for ax in range(3):
        if ax not in viewer.dims.displayed:
            viewer.dims.set_point(ax, world[ax])
    viewer.mouse_over_canvas = True
    viewer.cursor.position = tuple(world)
    status, _tip = viewer._calc_status_from_cursor()
    return status


@pytest.mark.parametrize(
    ("desc", "hu", "geo", "voxels"),
    [
        ("Spine A", hu_a, (A_ORIGIN, AXIAL, A_SPACING, A_STEP), [(3, 7, 11), (0, 39, 47)]),
        ("Spine B", hu_b, (B_ORIGIN, B_ORIENT, B_SPACING, B_STEP), [(2, 9, 30), (4, 29, 0)]),
    ],
)
def test_status_bar_shows_hu_and_lps_whichever_layer_is_active(
    widget, study, desc, hu, geo, voxels
):
    viewer, w = widget
    sess = _open(w, study, desc)
    for active in (sess.shapes_layer, sess.image_layer, None):
        viewer.layers.selection.active = active
        if active is None:
            viewer.layers.selection.clear()
        for k, r, c in voxels:
            status = _status_at(viewer, sess, k, r, c)
            assert isinstance(status, dict), status
            text = status["coordinates"]
            x, y, z = lps_of(*geo, k, r, c)
            assert text.startswith(f"{hu()[k, r, c]:.0f} HU"), text
            assert f"x {x:.1f}  y {y:.1f}  z {z:.1f} mm" in text, text
            assert f"slice {k + 1}/" in text and f"row {r} col {c}" in text, text
    # napari's own update puts it into the viewer's status (what the status bar shows)
    viewer.update_status_from_cursor()
    assert "HU" in viewer.status["coordinates"]


def test_status_outside_the_image_says_so(widget, study):
    viewer, w = widget
    sess = _open(w, study, "Spine A")
    status = _status_at(viewer, sess, 2, -30, 5)
    assert status["coordinates"] == "outside the image"


def test_window_presets_by_button_and_key(widget, study, qtbot):
    from qtpy.QtCore import Qt

    viewer, w = widget
    sess = _open(w, study, "Spine A")
    assert w.window_label.text() == "W 1400 / L 500 (bone)"
    w._window_buttons["soft tissue"].click()
    assert tuple(sess.image_layer.contrast_limits) == (-160.0, 240.0)
    assert w.window_label.text() == "W 400 / L 40 (soft tissue)"
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.keyClick(canvas, Qt.Key.Key_3, Qt.KeyboardModifier.AltModifier)
    qtbot.waitUntil(lambda: tuple(sess.image_layer.contrast_limits) == (-1350.0, 150.0))
    assert w.window_label.text() == "W 1500 / L -600 (lung)"
    # a window set by hand (napari's contrast slider) is shown too
    sess.image_layer.contrast_limits = (0.0, 100.0)
    assert w.window_label.text() == "W 100 / L 50"
    qtbot.keyClick(canvas, Qt.Key.Key_1, Qt.KeyboardModifier.AltModifier)
    qtbot.waitUntil(lambda: tuple(sess.image_layer.contrast_limits) == (-200.0, 1200.0))


def test_orientation_markers_slice_position_and_reformats(widget, study):
    viewer, w = widget
    sess = _open(w, study, "Spine A")
    k = 4
    sess.show_slice(k)
    ov = w.overlay_texts()
    assert (ov["middle_left"], ov["middle_right"]) == ("R", "L")  # radiological convention
    assert (ov["top_center"], ov["bottom_center"]) == ("A", "P")
    z = lps_of(A_ORIGIN, AXIAL, A_SPACING, A_STEP, k, 0, 0)[2]
    assert ov["top_left"] == f"slice {k + 1}/{A_SHAPE[0]}  z {z:.1f} mm"
    # the markers are drawn on the canvas
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.size

    w.set_view("sagittal")
    assert tuple(viewer.dims.displayed) == (0, 1)
    ov = w.overlay_texts()
    assert (ov["top_center"], ov["bottom_center"]) == ("S", "I")
    assert (ov["middle_left"], ov["middle_right"]) == ("A", "P")
    assert ov["top_left"].startswith("sagittal  x ")
    # the reformat shows the series' voxels where they are: HU under the cursor
    for kk, r, c in [(1, 5, 30), (5, 33, 30)]:
        viewer.dims.set_point(2, lps_of(A_ORIGIN, AXIAL, A_SPACING, A_STEP, kk, r, c)[0])
        status = _status_at(viewer, sess, kk, r, c, jitter=(0.2, 0.0))
        assert status["coordinates"].startswith(f"{hu_a()[kk, r, c]:.0f} HU"), status
        img = sess.image_layer
        # the plane napari draws holds the same HU at that voxel
        world = img.data_to_world(sess.transform.to_layer([[kk, r, c]])[0])
        assert float(img.get_value(world, world=True)) == hu_a()[kk, r, c]

    w.set_view("coronal")
    ov = w.overlay_texts()
    assert (ov["top_center"], ov["bottom_center"], ov["middle_left"], ov["middle_right"]) == (
        "S",
        "I",
        "R",
        "L",
    )
    w.set_view("axial")
    assert tuple(viewer.dims.displayed) == (1, 2)
    assert w.overlay_texts()["top_left"].startswith("slice ")


def test_orientation_letters_follow_camera_flips():
    from hu_roi_napari._viewing import orientation_letters

    assert orientation_letters((1, 2)) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert orientation_letters((1, 2), ("up", "left")) == {
        "top": "P",
        "bottom": "A",
        "left": "L",
        "right": "R",
    }
    assert orientation_letters((0, 1), ("up", "right"))["top"] == "S"


def _rgba(name: str) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(name)[0]


def test_rois_labelled_with_level_and_mean_colours_by_kind_survive_reload(widget, study, qtbot):
    viewer, w = widget
    sess = _open(w, study, "Spine A")
    sess.add_roi(
        "ellipse", [[2, 15, 19], [2, 15, 29], [2, 25, 29], [2, 25, 19]], level="L2", kind="target"
    )
    sess.add_roi(
        "ellipse", [[2, 2, 2], [2, 2, 8], [2, 8, 8], [2, 8, 2]], kind="reference-air", level=None
    )
    qtbot.waitUntil(lambda: len(w.table_rows()) == 2)
    lay = sess.shapes_layer
    means = {m.kind: m.mean_hu for m in sess.measurements}
    assert list(lay.text.values) == [
        f"L2 {means['target']:.0f} HU",
        f"reference-air {means['reference-air']:.0f} HU",
    ]
    before = np.asarray(lay.edge_color).copy()
    assert np.allclose(before[0], _rgba("yellow")) and np.allclose(before[1], _rgba("cyan"))
    w.save()
    # read back from the file: same colours and labels
    sess.load_rois(sess.roi_path)
    lay = sess.shapes_layer
    assert np.allclose(np.asarray(lay.edge_color), before)
    assert list(lay.text.values)[0] == f"L2 {means['target']:.0f} HU"
    # relabelling follows on the canvas
    sess.set_attributes([0], level="L3", kind="target")
    assert list(lay.text.values)[0].startswith("L3 ")


def test_sphere_drawn_on_every_slice_it_covers(widget, study, qtbot):
    viewer, w = widget
    sess = _open(w, study, "Spine A")
    radius = 4.0  # slices 2.5 mm apart: the sphere centred on slice 2 cuts slices 1, 2, 3
    sess.add_sphere((2, 20, 24), radius, level="L1", kind="target")
    qtbot.waitUntil(lambda: len(w.table_rows()) == 1)
    ext = sess.extent_layer
    assert ext is not None and ext in viewer.layers and not ext.editable
    tr = sess.transform
    got = {}
    for verts in ext.data:
        krc = tr.from_layer(verts)
        k = int(round(krc[0, 0]))
        half_cols = (krc[:, 2].max() - krc[:, 2].min()) / 2 * A_SPACING[1]
        half_rows = (krc[:, 1].max() - krc[:, 1].min()) / 2 * A_SPACING[0]
        got[k] = (round(half_rows, 6), round(half_cols, 6))
    rho = np.sqrt(radius**2 - A_STEP**2)
    assert sorted(got) == [1, 2, 3]
    assert np.allclose(got[2], (radius, radius)) and np.allclose(got[1], (rho, rho))
    assert np.allclose(got[3], (rho, rho))
    # the measurement covers exactly those slices
    (m,) = sess.measurements
    assert sorted(m.slice_indices) == [1, 2, 3]


def test_status_hook_when_docked_through_napari(make_napari_viewer, study):
    """napari gives plugin widgets a proxy viewer that refuses private attributes."""
    viewer = make_napari_viewer()
    _dock, w = viewer.window.add_plugin_dock_widget("hu-roi")
    w.ask = lambda title, q, buttons: buttons[-1]  # no modal dialog in a test
    sess = _open(w, study, "Spine A")
    status = _status_at(viewer, sess, 3, 7, 11)
    assert status["coordinates"].startswith(f"{hu_a()[3, 7, 11]:.0f} HU"), status
    w.session.dirty = False


def test_level_series_and_view_keys_through_napari_keymap(widget, study, qtbot):
    from qtpy.QtCore import Qt

    viewer, w = widget
    w.open_folder(study, roi_file=study.parent / "k.rois.json")
    w.next_series()
    first = w.session.current.info.series_key
    canvas = viewer.window._qt_viewer.canvas.native
    w.level_combo.setCurrentText("L1")
    qtbot.keyClick(canvas, Qt.Key.Key_BracketRight)
    qtbot.waitUntil(lambda: w.level_combo.currentText() == "L2")
    qtbot.keyClick(canvas, Qt.Key.Key_BracketLeft)
    qtbot.keyClick(canvas, Qt.Key.Key_BracketLeft)
    qtbot.waitUntil(lambda: w.level_combo.currentText() == "T12")
    qtbot.keyClick(canvas, Qt.Key.Key_Right, Qt.KeyboardModifier.AltModifier)
    qtbot.waitUntil(lambda: w.session.current.info.series_key != first)
    qtbot.keyClick(canvas, Qt.Key.Key_Left, Qt.KeyboardModifier.AltModifier)
    qtbot.waitUntil(lambda: w.session.current.info.series_key == first)
    qtbot.keyClick(canvas, Qt.Key.Key_5, Qt.KeyboardModifier.AltModifier)
    qtbot.waitUntil(lambda: tuple(viewer.dims.displayed) == (0, 1))
    assert w.view_combo.currentText() == "sagittal"
    qtbot.keyClick(canvas, Qt.Key.Key_4, Qt.KeyboardModifier.AltModifier)
    qtbot.waitUntil(lambda: tuple(viewer.dims.displayed) == (1, 2))
    # blinded: Alt+Right is the next case
    w.set_blinded(True, seed=4)
    w.next_series(-1)
    label = w.session.image_layer.name
    qtbot.keyClick(canvas, Qt.Key.Key_Right, Qt.KeyboardModifier.AltModifier)
    qtbot.waitUntil(lambda: w.session.image_layer.name != label)
    assert w.session.image_layer.name.startswith("Case ")


def test_ctrl_s_saves_the_roi_set_and_collides_with_nothing(widget, study, qtbot):
    from qtpy.QtCore import Qt
    from qtpy.QtGui import QKeySequence

    viewer, w = widget
    roi_file = study.parent / "ctrl_s.rois.json"
    w.open_folder(study, roi_file=roi_file)
    w.next_series()
    w.session.add_roi("ellipse", [[2, 15, 19], [2, 15, 29], [2, 25, 29], [2, 25, 19]])
    w._sync_now()
    # no menu entry of napari holds Ctrl+S any more (two shortcuts: neither fires)
    ctrl_s = QKeySequence("Ctrl+S")
    held = [
        a.text()
        for m in viewer.window._qt_window.menuBar().actions()
        if m.menu() is not None
        for a in m.menu().actions()
        if a.shortcut() == ctrl_s
    ]
    assert held == []
    moved = [a for a, _ in w._moved_actions]
    assert [a.text() for a in moved] == ["Save Selected Layers..."]
    assert moved[0].shortcut() == QKeySequence("Ctrl+Shift+S")
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.keyClick(canvas, Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: roi_file.exists() and not w.session.dirty)
    w.teardown()  # the dock closes: napari gets its key back
    assert moved[0].shortcut() == ctrl_s


def test_cortex_guard_shown_live_on_the_canvas_and_in_the_table(widget, study, qtbot):
    """An ROI half outside the homogeneous 'vertebra' disc gets the core's flag at once."""
    viewer, w = widget
    sess = _open(w, study, "Spine A")
    inside = [[2, 15, 19], [2, 15, 29], [2, 25, 29], [2, 25, 19]]
    sess.add_roi("ellipse", inside, level="L1")
    qtbot.waitUntil(lambda: len(w.table_rows()) == 1)
    assert "roi-heterogeneous" not in w.table_rows()[0][6]
    assert "heterogeneous" not in sess.shapes_layer.text.values[0]
    # drag it half off the disc (the grid around it runs through 1000s of HU)
    lay = sess.shapes_layer
    lay.data = [np.asarray(lay.data[0]) + [0, 0, 14]]
    qtbot.waitUntil(lambda: "roi-heterogeneous" in w.table_rows()[0][6])
    assert sess.shapes_layer.text.values[0].endswith("⚠ heterogeneous")
