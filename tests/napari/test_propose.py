"""Propose from baseline (issue 14 item 3, viewer): the follow-up gets the baseline ROIs
through ``hu-roi propagate``'s own code, drawn as proposals until confirmed or moved.

The follow-up is the synthetic patient of tests/test_propagate.py moved by a known rigid
transform (rotation about x, y, z and a translation of ~24 mm) with fresh noise; the
reference is that transform.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_propagate import FOLLOW_UPS, UID, _write, follow_up_grid, scan, true_map

pytest.importorskip("napari", reason="the napari extra is not installed")
pytestmark = [pytest.mark.napari, pytest.mark.slow]

BASE = [
    ("L2", {"type": "circle", "center_mm": [0.0, 15.0, 1.5], "radius_mm": 8.0}),
    (
        "L3",
        {
            "type": "ellipse",
            "center_mm": [1.0, 14.0, -31.5],
            "radii_mm": [9.0, 6.0],
            "angle_deg": 20.0,
        },
    ),
]


@pytest.fixture(scope="module")
def follow_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``dicom/T0`` baseline with two target ROIs, ``dicom/T2`` the moved follow-up."""
    root = tmp_path_factory.mktemp("propose")
    _write(root / "dicom" / "T0", scan(seed=1), UID + "0")
    rot, trans, _scale, _kvp, ori = FOLLOW_UPS["moved"]
    fov, ori = follow_up_grid("moved")
    _write(
        root / "dicom" / "T2",
        scan(rot, trans, seed=11, origin=fov, orientation=ori),
        UID + "1",
        origin=tuple(fov),
        orientation=ori,
    )
    rois = [
        {
            "roi_id": f"P01-T0-{lev}",
            "patient_id": "P01",
            "timepoint": "T0",
            "series_instance_uid": UID + "0",
            "level": lev,
            "irradiated": False,
            "lesion_type": "none",
            "kind": "target",
            "shape": shape,
        }
        for lev, shape in BASE
    ]
    doc = {"format": "hu-roi.roiset", "version": 1, "reader": "R1", "rois": rois}
    (root / "base.rois.json").write_text(json.dumps(doc), encoding="utf-8")
    return root


def _open_follow_up(w, study: Path, roi_file: Path) -> None:
    import shutil

    shutil.copy(study / "base.rois.json", roi_file)
    w.open_folder(study / "dicom", roi_file=roi_file)
    key = next(s.series_key for s in w.session.index.series if s.series_instance_uid == UID + "1")
    w.open_series(key)
    assert w.session.timepoint == "T2"


def test_propose_confirm_and_move(widget, follow_study, qtbot, tmp_path):
    from hu_roi.roi import load_roiset

    viewer, w = widget
    roi_file = tmp_path / "p.rois.json"
    _open_follow_up(w, follow_study, roi_file)
    s = w.session
    assert len(s.shapes_layer.data) == 0
    assert w.propose_from_baseline(background=True) is None  # returned at once
    qtbot.waitUntil(lambda: w.worker is None, timeout=300_000)
    props = [r for r in s.roiset.rois if r.proposed]
    assert len(props) == 2, w.last_message
    assert "2 ROIs proposed" in w.last_message
    rot, trans = FOLLOW_UPS["moved"][0], FOLLOW_UPS["moved"][1]
    for lev, shape in BASE:
        (p,) = [r for r in props if r.level == lev]
        assert p.timepoint == "T2" and p.series_instance_uid == UID + "1"
        assert p.patient_id == "P01" and p.registration is not None
        want = true_map(np.array(shape["center_mm"]), rot, trans)
        got = np.asarray(p.shape.center_mm)
        # within one voxel: 1.5 mm in-plane; along z the 2D shape lies on the nearest
        # follow-up slice (3 mm apart)
        assert np.hypot(*(got - want)[:2]) <= 1.5, (lev, got, want)
        assert abs(got[2] - want[2]) <= 3.0, (lev, got, want)
    # drawn as proposals: orange, thin, labelled; measured with the core's flag
    lay = s.shapes_layer
    assert len(lay.data) == 2
    labels = list(lay.text.values)
    assert all(t.endswith("(proposed)") for t in labels), labels
    np.testing.assert_allclose(lay.edge_color, [[1.0, 0.647, 0.0, 1.0]] * 2, atol=0.01)
    assert list(lay.edge_width) == [0.5, 0.5]
    assert all("proposed-unconfirmed" in m.qc_flags for m in s.measurements)
    # proposing again adds nothing: both levels are on this series already
    assert w.propose_from_baseline() is None
    assert "counterpart on this series already" in w.last_message
    assert len(s.roiset.rois) == 4
    # Confirm the first (selected) one, with the key (napari keymap, as a reader does)
    from qtpy.QtCore import Qt

    lay.selected_data = {0}
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.keyClick(canvas, Qt.Key.Key_Y, Qt.KeyboardModifier.AltModifier)
    qtbot.waitUntil(lambda: "1 proposal confirmed" in w.last_message, timeout=10_000)
    assert not lay.text.values[0].endswith("(proposed)")
    assert lay.text.values[1].endswith("(proposed)")
    # moving the second confirms it too
    data = list(lay.data)
    data[1] = data[1] + np.array([0.0, 0.0, 1.0])
    lay.data = data
    qtbot.waitUntil(lambda: not any(r.proposed for r in s.roiset.rois), timeout=10_000)
    w.save()
    saved = json.loads(roi_file.read_text(encoding="utf-8"))["rois"]
    t2 = [d for d in saved if d["timepoint"] == "T2"]
    assert len(t2) == 2
    assert all("proposed" not in d and "registration" in d for d in t2)
    assert len(load_roiset(roi_file).rois) == 4


def test_measure_of_unconfirmed_proposal_flags_it(widget, follow_study, qtbot, tmp_path):
    """``hu-roi measure`` on the saved file flags the unconfirmed proposals."""
    import csv

    from cli_helpers import run_main

    viewer, w = widget
    roi_file = tmp_path / "u.rois.json"
    _open_follow_up(w, follow_study, roi_file)
    assert w.propose_from_baseline() == 2  # on this thread
    w.save()
    out = tmp_path / "m.csv"
    res = run_main(
        "measure",
        "--dicom",
        str(follow_study / "dicom"),
        "--rois",
        str(roi_file),
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    rows = [r for r in csv.DictReader(open(out)) if not r["roi_id"].startswith("#")]
    t2 = [r for r in rows if r["timepoint"] == "T2"]
    t0 = [r for r in rows if r["timepoint"] == "T0"]
    assert len(t2) == 2 and len(t0) == 2
    assert all("proposed-unconfirmed" in r["qc_flags"] for r in t2)
    assert not any("proposed-unconfirmed" in r["qc_flags"] for r in t0)


def test_refusal_adds_nothing(widget, follow_study, qtbot, tmp_path):
    """No baseline of this patient, then a registration refused: a message, nothing added."""
    viewer, w = widget
    roi_file = tmp_path / "r.rois.json"
    _open_follow_up(w, follow_study, roi_file)
    s = w.session
    # the baseline series shown: its own timepoint has no other-timepoint ROIs
    base_key = next(i.series_key for i in s.index.series if i.series_instance_uid == UID + "0")
    w.open_series(base_key)
    assert w.propose_from_baseline() is None
    assert "Nothing proposed" in w.last_message and "no baseline ROIs" in w.last_message
    # a registration refused by the core (an impossible --min-ncc): nothing added
    import hu_roi.propagate as prop

    key = next(i.series_key for i in s.index.series if i.series_instance_uid == UID + "1")
    w.open_series(key)
    n = len(s.roiset.rois)
    old = prop.DEFAULT_MIN_NCC
    prop.DEFAULT_MIN_NCC = 0.9999
    try:
        w.propose_from_baseline(background=True)
        qtbot.waitUntil(lambda: w.worker is None, timeout=300_000)
    finally:
        prop.DEFAULT_MIN_NCC = old
    assert "Nothing proposed" in w.last_message and "poor registration" in w.last_message
    assert len(s.roiset.rois) == n and len(s.shapes_layer.data) == 0
