"""Long work off the GUI thread (issue 13 item 13): indexing 2,000 DICOM files and
Measure all run in napari's thread_worker while Qt's event loop keeps running."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_factory import write_ct_series

pytest.importorskip("napari", reason="the napari extra is not installed")
pytestmark = [pytest.mark.napari, pytest.mark.slow]

N_FILES = 2000


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory):
    """One series of 2,000 tiny slices (2,000 DICOM files written with pydicom)."""
    root = tmp_path_factory.mktemp("big") / "dicom" / "T0"
    hu = np.zeros((N_FILES, 4, 4)) + np.arange(N_FILES)[:, None, None]
    write_ct_series(
        root,
        hu,
        slice_positions=np.arange(N_FILES) * 1.0,
        extra_tags={"PatientID": "PBIG", "SeriesDescription": "many slices"},
    )
    return root.parent


def test_event_loop_keeps_running_while_2000_files_are_indexed(
    widget, big_folder, qtbot, monkeypatch
):
    from qtpy.QtCore import QTimer

    from hu_roi.io.cache import HeaderCache

    viewer, w = widget
    assert len(list((big_folder / "T0").iterdir())) == N_FILES
    ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start()
    # no header cache: every header is read now
    monkeypatch.setattr(HeaderCache, "default", classmethod(lambda cls: cls(None)))
    try:
        w.open_folder(big_folder, roi_file=big_folder.parent / "b.rois.json", background=True)
        assert w.worker is not None and w.session.index is None  # returned at once
        ticks_at_start = len(ticks)
        qtbot.waitUntil(lambda: w.session.index is not None, timeout=300_000)
    finally:
        timer.stop()
    # the loop ran while the worker read the headers (blocked, it would not tick at all)
    assert len(ticks) - ticks_at_start >= 3
    assert w.worker is None
    (s,) = w.session.index.series
    assert s.n_slices == N_FILES
    assert w.tree.topLevelItemCount() == 1  # the study list is shown when done


def test_measure_all_in_the_background(widget, study, qtbot, tmp_path):
    import csv

    viewer, w = widget
    w.open_folder(study, roi_file=study.parent / "m.rois.json")
    w.next_series()
    w.session.add_roi("ellipse", [[2, 15, 19], [2, 15, 29], [2, 25, 29], [2, 25, 19]])
    out = tmp_path / "all.csv"
    assert w.measure_all(out, background=True) is None
    qtbot.waitUntil(lambda: out.exists() and w.worker is None, timeout=60_000)
    assert "Measured all stored ROIs" in w.last_message
    rows = [r for r in csv.DictReader(open(out)) if not r["roi_id"].startswith("#")]
    assert len(rows) == 1


def test_export_csv_in_the_background(widget, study, qtbot, tmp_path):
    """Export CSV (the button) writes in napari's thread_worker: the rows are taken on
    the GUI thread, the file appears when the worker is done, with the live values."""
    import csv

    viewer, w = widget
    w.open_folder(study, roi_file=study.parent / "e.rois.json")
    w.next_series()
    w.session.add_roi("ellipse", [[2, 15, 19], [2, 15, 29], [2, 25, 29], [2, 25, 19]])
    out = tmp_path / "one.csv"
    assert w.export_csv(out, background=True) is None
    qtbot.waitUntil(lambda: out.exists() and w.worker is None, timeout=60_000)
    assert "Wrote 1 row to one.csv" in w.last_message
    (row,) = [r for r in csv.DictReader(open(out)) if not r["roi_id"].startswith("#")]
    w._sync_now()
    (live,) = w.session.measurements
    assert float(row["mean_hu"]) == live.mean_hu
