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
    lps_of,
)

pytest.importorskip("napari", reason="the napari extra is not installed")
pytestmark = pytest.mark.napari

AXIAL = (1, 0, 0, 0, 1, 0)


def _open(w, study, desc: str):
    w.open_folder(study, roi_file=study.parent / "r.rois.json")
    key = next(s.series_key for s in w.session.reading_list if s.series_description == desc)
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
    assert ov["top_left"] == f"slice {k + 1}/{A_SHAPE[0]}   z {z:.1f} mm"
    # the markers are drawn on the canvas
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.size

    w.set_view("sagittal")
    assert tuple(viewer.dims.displayed) == (0, 1)
    ov = w.overlay_texts()
    assert (ov["top_center"], ov["bottom_center"]) == ("S", "I")
    assert (ov["middle_left"], ov["middle_right"]) == ("A", "P")
    assert ov["top_left"].startswith("sagittal   x ")
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
