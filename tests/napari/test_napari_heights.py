"""Vertebral heights in the viewer (issue 13 item 15): line ROIs drawn on the sagittal
view, stored in LPS mm, measured by the core (length_mm), loss against the baseline.

References: end points from the formula of docs/roi_format.md (``lps_of``), lengths by
hand from the grid spacing, and ``hu_roi.batch.measure_batch`` (what hu-roi measure runs).
"""

from __future__ import annotations

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
    key_of,
    lps_of,
)

pytest.importorskip("napari", reason="the napari extra is not installed")
pytestmark = pytest.mark.napari

AXIAL = (1, 0, 0, 0, 1, 0)


def test_heights_drawn_on_the_sagittal_view_with_loss_against_baseline(widget, study, qtbot):
    from hu_roi.batch import measure_batch
    from hu_roi.roi import load_roiset

    viewer, w = widget
    roi_file = study.parent / "h.rois.json"
    w.open_folder(study, roi_file=roi_file)
    w.open_series(key_of(w, "Spine A"))  # T0, axial
    w.set_view("sagittal")
    w.draw_height("height-anterior")
    assert w.session.shapes_layer.mode == "add_line"
    # a line across the slices (k 0 -> 5) on the sagittal plane c = 24: 5 x 2.5 mm
    w.session.add_roi("line", [[0, 20, 24], [5, 20, 24]], level="L1", kind="height-anterior")
    qtbot.waitUntil(lambda: len(w.table_rows()) == 1)
    (m,) = w.session.measurements
    assert m.qc_status == "pass" and m.length_mm == pytest.approx(5 * A_STEP, abs=1e-9)
    assert w.heights_text() == "Heights: L1 anterior 12.5 mm"
    assert list(w.session.shapes_layer.text.values) == ["L1 ant 12.5 mm"]
    w.save()
    (roi,) = load_roiset(roi_file).rois
    assert roi.shape.type == "line" and roi.kind == "height-anterior" and roi.level == "L1"
    geo = (A_ORIGIN, AXIAL, A_SPACING, A_STEP)
    assert np.allclose(roi.shape.points_mm, [lps_of(*geo, 0, 20, 24), lps_of(*geo, 5, 20, 24)])
    assert roi.roi_id == "PSECRET7-T0-height-anterior-L1"

    # the follow-up (T2, coronal series): rows run feet-wards, 1.0 mm apart
    w.set_view("axial")
    w.open_series(key_of(w, "Spine B"))
    w.session.add_roi("line", [[2, 5, 10], [2, 20, 10]], level="L1", kind="height-anterior")
    qtbot.waitUntil(lambda: len(w.table_rows()) == 1)
    now = 15 * B_SPACING[0]
    loss = 100 * (12.5 - now) / 12.5
    assert w.heights_text() == (
        f"Heights: L1 anterior {now:.1f} mm (baseline 12.5 mm, loss {loss:.1f} %)"
    )
    w.session.add_roi("line", [[2, 0, 20], [2, 5, 20]], level="L1", kind="height-posterior")
    qtbot.waitUntil(lambda: len(w.table_rows()) == 2)
    assert "posterior 5.0 mm" in w.heights_text()  # no baseline for it: no loss
    w.save()
    # the core measures the stored lines to the same lengths
    res = measure_batch(study, roi_file)
    got = {(m.timepoint, m.kind): m.length_mm for m in res.measurements}
    assert got[("T0", "height-anterior")] == pytest.approx(12.5)
    assert got[("T2", "height-anterior")] == pytest.approx(now)
    rois = {r.roi_id: r for r in load_roiset(roi_file).rois}
    p = rois["PSECRET7-T2-height-anterior-L1"].shape.points_mm
    geo_b = (B_ORIGIN, B_ORIENT, B_SPACING, B_STEP)
    assert np.allclose(p, [lps_of(*geo_b, 2, 5, 10), lps_of(*geo_b, 2, 20, 10)])
    # blinded: the heights stay, the comparison with the baseline goes
    w.set_blinded(True, seed=2)
    w.open_series(key_of(w, "Spine B"))
    assert "baseline" not in w.heights_text() and "anterior" in w.heights_text()


def test_a_line_with_an_area_kind_is_reported_not_stored(widget, study, qtbot):
    viewer, w = widget
    w.open_folder(study, roi_file=study.parent / "x.rois.json")
    w.open_series(key_of(w, "Spine A"))
    w.session.add_roi("line", [[0, 20, 24], [5, 20, 24]], level="L1", kind="target")
    w._sync_now()
    assert w.session.roiset.rois == ()
    assert any("vertebral height" in p for p in w.session.problems)


def test_loss_above_the_endpoint_is_marked(widget, study, qtbot):
    viewer, w = widget
    w.open_folder(study, roi_file=study.parent / "y.rois.json")
    w.open_series(key_of(w, "Spine A"))
    w.session.add_roi("line", [[0, 20, 24], [5, 20, 24]], level="L2", kind="height-middle")
    w._sync_now()
    w.open_series(key_of(w, "Spine B"))
    w.session.add_roi("line", [[2, 5, 10], [2, 13, 10]], level="L2", kind="height-middle")
    w._sync_now()
    loss = 100 * (12.5 - 8 * B_SPACING[0]) / 12.5
    assert f"loss {loss:.1f} % ⚠ > 20 %" in w.heights_text()
