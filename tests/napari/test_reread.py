"""Blinded re-read session (issue 14 item 9): a random subset of the series already read,
shown blinded, drawn into a separate ROI set that pairs with the first in ``hu-roi
reliability`` by (patient_id, timepoint, level)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_main
from dicom_factory import write_ct_series

pytest.importorskip("napari", reason="the napari extra is not installed")
pytestmark = [pytest.mark.napari]

# (folder, PatientID, timepoint given in the first reading); the folder names carry no
# timepoint, so the re-read can only know it from the first reading
SERIES = [("a", "PR1", "T0"), ("b", "PR1", "T2"), ("c", "PR2", "T0"), ("d", "PR2", "T3")]


@pytest.fixture
def four_series(tmp_path: Path) -> Path:
    root = tmp_path / "study" / "dicom"
    rng = np.random.default_rng(3)
    for i, (folder, pid, _tp) in enumerate(SERIES):
        hu = 150.0 + 10 * i + rng.normal(0, 8, (4, 32, 32)).round()
        write_ct_series(
            root / folder,
            hu,
            slice_positions=np.arange(4) * 2.0,
            extra_tags={"PatientID": pid, "SeriesDescription": f"Spine {folder}"},
        )
    return root


def _ellipse(k: int, r0: int, c0: int) -> list[list[int]]:
    return [[k, r0, c0], [k, r0, c0 + 8], [k, r0 + 8, c0 + 8], [k, r0 + 8, c0]]


def _measure(root: Path, rois: Path, out: Path) -> list[dict]:
    res = run_main("measure", "--dicom", str(root), "--rois", str(rois), "--out", str(out))
    assert res.returncode == 0, res.stderr
    return [r for r in csv.DictReader(open(out)) if not r["roi_id"].startswith("#")]


def test_reread_subset_blinded_separate_file_and_reliability(widget, four_series, tmp_path):
    viewer, w = widget
    s = w.session
    first = four_series.parent / "first.rois.json"
    w.open_folder(four_series, roi_file=first)
    tp_of = {}
    for info in list(s.reading_list):
        folder, pid, tp = next(x for x in SERIES if x[0] == Path(info.folder).name)
        w.open_series(info.series_key)
        w.timepoint_combo.setCurrentText(tp)
        s.add_roi("ellipse", _ellipse(1, 6, 6), level="L1", kind="target")
        s.add_roi("ellipse", _ellipse(2, 16, 16), level="L2", kind="target")
        tp_of[info.series_key] = (pid, tp)
    w.save()
    first_ids = {r.roi_id for r in s.roiset.rois}
    assert len(first_ids) == 8

    # deterministic subset of the read series: same fraction and seed, same series
    sub = [i.series_key for i in s.reread_subset(0.5, 1)]
    assert len(sub) == 2
    assert sub == [i.series_key for i in s.reread_subset(0.5, 1)]
    assert set(sub) <= set(tp_of)

    assert w.start_reread(0.5, 1)
    assert s.blinded and s.roi_path == four_series.parent / "blinded_reread.rois.json"
    assert sorted(i.series_key for i in s.reading_list) == sorted(sub)
    assert s.roi_file_name() == "blinded_reread.rois.json"  # neutral name, shown
    assert not s.roiset.rois
    for _ in sub:
        w.next_series()
        info = s.current.info
        assert s.label(info).startswith("Case ")
        assert len(s.shapes_layer.data) == 0  # the first reading's ROIs are not shown
        assert not any(t for t in w.all_texts() if "PR1" in t or "PR2" in t)
        s.add_roi("ellipse", _ellipse(1, 7, 6), level="L1", kind="target")
        s.add_roi("ellipse", _ellipse(2, 16, 17), level="L2", kind="target")
    w.save()
    saved = json.loads((four_series.parent / "blinded_reread.rois.json").read_text())["rois"]
    assert len(saved) == 4
    for d in saved:
        (key,) = [
            k for k in sub if d["series_instance_uid"] == s.find_series(k).series_instance_uid
        ]
        assert (d["patient_id"], d["timepoint"]) == tp_of[key]
    # the first reading's file is untouched
    assert {d["roi_id"] for d in json.loads(first.read_text())["rois"]} == first_ids

    a = _measure(four_series, first, tmp_path / "a.csv")
    b = _measure(four_series, four_series.parent / "blinded_reread.rois.json", tmp_path / "b.csv")
    assert len(a) == 8 and len(b) == 4
    res = run_main(
        "reliability",
        str(tmp_path / "a.csv"),
        str(tmp_path / "b.csv"),
        "--out",
        str(tmp_path / "rel"),
    )
    assert res.returncode == 0, res.stderr
    stats = {r["statistic"]: r for r in csv.DictReader(open(tmp_path / "rel" / "reliability.csv"))}
    assert int(stats["icc2_1"]["n"]) == 4  # the 4 re-read vertebrae paired
    unpaired = list(csv.DictReader(open(tmp_path / "rel" / "unpaired.csv")))
    assert len(unpaired) == 4  # the first reading's series not drawn in the re-read


def test_reread_needs_read_series(widget, four_series):
    viewer, w = widget
    w.open_folder(four_series, roi_file=four_series.parent / "empty.rois.json")
    assert not w.start_reread(0.5, 1)
    assert "nothing to re-read" in w.last_message
    assert not w.session.blinded
