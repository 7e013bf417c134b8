"""The folder walk stays inside the scanned tree unless ``--follow-links`` (issue 12 item 11).

Real series written with pydicom; links made by the test (skipped where the platform
cannot make symbolic links)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from hu_roi.io import index_folder
from hu_roi.io.dicom import LINK_OUTSIDE_REASON
from tests.cli_helpers import run_main
from tests.dicom_factory import write_ct_series

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")


@pytest.fixture()
def layout(tmp_path: Path) -> dict[str, object]:
    """tree/inside (a series), outside/ (another series), and links in the tree."""
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    a = write_ct_series(tree / "inside", np.full((3, 16, 16), 100.0))
    b = write_ct_series(outside / "scan", np.full((3, 16, 16), 300.0))
    (tree / "zz_out").symlink_to(outside, target_is_directory=True)  # leaves the tree
    (tree / "links").mkdir()
    (tree / "links" / "to_inside").symlink_to(tree / "inside", target_is_directory=True)
    (tree / "links" / "up").symlink_to(tree, target_is_directory=True)  # a loop
    return {"tree": tree, "outside": outside, "a": a, "b": b}


def _uids(res) -> set[str]:
    return {s.series_instance_uid for s in res.series}


def test_links_leaving_the_tree_not_followed(layout) -> None:
    tree = layout["tree"]
    res = index_folder(tree)
    assert len(res.series) == 1 and res.series[0].n_slices == 3
    by_path = {s.path: s.reason for s in res.skipped}
    assert by_path[str(tree / "zz_out")] == LINK_OUTSIDE_REASON
    assert sum(r == LINK_OUTSIDE_REASON for r in by_path.values()) == 1  # reported once
    assert "loop" in by_path[str(tree / "links" / "up")]
    # with follow_links: the outside series too; loops are still not walked
    res2 = index_folder(tree, follow_links=True)
    assert len(res2.series) == 2
    assert LINK_OUTSIDE_REASON not in {s.reason for s in res2.skipped}
    assert "loop" in {s.path: s.reason for s in res2.skipped}[str(tree / "links" / "up")]


def test_links_inside_the_tree_keep_working(layout, tmp_path) -> None:
    tree, b = layout["tree"], layout["b"]
    # the tree reached through a link; a folder of links to files elsewhere
    (tmp_path / "treelink").symlink_to(tree, target_is_directory=True)
    assert _uids(index_folder(tmp_path / "treelink")) == _uids(index_folder(tree))
    (tree / "filelinks").mkdir()
    for f in b:
        (tree / "filelinks" / f.name).symlink_to(f)
    res = index_folder(tree)
    assert len(res.series) == 2 and all(s.n_slices == 3 for s in res.series)
    # a link inside the tree to a folder inside it: its files are indexed once
    inside = [s for s in res.series if s.n_slices == 3]
    assert sum(s.n_slices for s in inside) == 6


def test_cli_index_and_measure_follow_links(layout, tmp_path) -> None:
    tree, b = layout["tree"], layout["b"]
    out = tmp_path / "i.csv"
    r = run_main("index", str(tree), "--out", str(out), "--no-cache")
    assert r.returncode == 0, r.stderr
    assert len(list(csv.DictReader(out.open()))) == 1
    skipped = list(csv.DictReader((tmp_path / "i.skipped.csv").open()))
    assert {"path": str(tree / "zz_out"), "reason": LINK_OUTSIDE_REASON} in skipped
    assert "--follow-links" in r.stderr  # the summary lists the skipped link
    r = run_main("index", str(tree), "--out", str(out), "--no-cache", "--follow-links")
    assert r.returncode == 0 and len(list(csv.DictReader(out.open()))) == 2
    import pydicom

    uid = str(pydicom.dcmread(b[0], stop_before_pixels=True).SeriesInstanceUID)
    rois = tmp_path / "r.rois.json"
    rois.write_text(
        json.dumps(
            {
                "format": "hu-roi.roiset",
                "version": 1,
                "reader": "R1",
                "rois": [
                    {
                        "roi_id": "b",
                        "patient_id": "TEST",
                        "timepoint": "T0",
                        "level": "L1",
                        "kind": "target",
                        "series_instance_uid": uid,
                        "shape": {"type": "circle", "center_mm": [8, 8, 1], "radius_mm": 5},
                    }
                ],
            }
        )
    )
    m = tmp_path / "m.csv"
    for extra, status, flag in (([], "fail", "series-not-found"), (["--follow-links"], "pass", "")):
        r = run_main("measure", "--dicom", str(tree), "--rois", str(rois), "--out", str(m), *extra)
        assert r.returncode == 0, r.stderr
        (row,) = list(csv.DictReader(m.open()))
        assert row["qc_status"] == status and row["qc_flags"].startswith(flag), row
