"""``hu-roi export-dicom`` read back by dcmqi, the converters 3D Slicer's
QuantitativeReporting uses (issue 15, items 2 and 3): an independent reader of the SR and
the SEG, not built on highdicom.

- ``tid1500reader`` turns each SR into dcmqi's JSON: every ROI's group with its tracking
  identifier and UID, finding site, and mean / SD / median HU equal to the measurement CSV
  (to the 16-character DS the JSON carries); with ``--sr-groups segment`` each group names
  its SEG segment.
- ``segimage2itkimage`` writes each SEG segment as an image: its voxels, placed by ITK in
  LPS, are exactly the ROI's voxels of hu-roi's own rasterisation.

Skipped when dcmqi is not installed (it is a dev dependency, installed by scripts/test).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_export_dicom import _export, _manifest, synthetic  # noqa: F401 - a fixture

from hu_roi.io import index_folder, load_series
from hu_roi.rasterize import rasterize_roi
from hu_roi.roi import load_roiset

BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    exe = BIN / name
    if exe.is_file():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"dcmqi's {name} is not installed (pip install dcmqi)")
    return found


def _tid1500(sr: Path, tmp: Path) -> list[dict]:
    out = tmp / (sr.name + ".json")
    r = subprocess.run([_tool("tid1500reader"), "--inputDICOM", str(sr), "--outputMetadata",
                        str(out)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())["Measurements"]


def _items(group: dict) -> dict[str, float]:
    names = {"Mean": "mean_hu", "Standard Deviation": "sd_hu", "Median": "median_hu"}
    out = {}
    for it in group["measurementItems"]:
        if it["quantity"]["CodeValue"] == "112031":
            assert it["units"]["CodeValue"] == "[hnsf'U]"
            out[names[it["derivationModifier"]["CodeMeaning"]]] = float(it["value"])
    return out


@pytest.mark.parametrize("sr_groups", ["geometry", "segment"])
def test_tid1500reader_reads_every_roi(synthetic, tmp_path, sr_groups) -> None:  # noqa: F811
    out = tmp_path / "out"
    r = _export(synthetic["dicom"], synthetic["rois"], out, "--sr-groups", sr_groups, "-q")
    assert r.returncode == 0, r.stderr
    man, rows = _manifest(out), synthetic["csv"]
    seen = set()
    for sr in sorted(out.glob("*.SR.dcm")):
        for g in _tid1500(sr, tmp_path):
            rid = g["TrackingIdentifier"]
            seen.add(rid)
            assert g["TrackingUniqueIdentifier"] == man[rid]["tracking_uid"]
            vals = _items(g)
            for col in ("mean_hu", "sd_hu", "median_hu"):
                if rows[rid][col]:
                    assert vals[col] == pytest.approx(float(rows[rid][col]), rel=1e-12), (rid, col)
            if sr_groups == "segment":
                assert g["ReferencedSegment"] == int(man[rid]["segment_number"])
                assert man[rid]["seg_file"].startswith(g["SourceSeriesForImageSegmentation"])
            if rows[rid]["level"] == "L1":
                assert g["FindingSite"]["CodeValue"] == "66794005"  # L1 vertebra, SCT
    assert seen == {rid for rid, m in man.items() if m["exported"] == "true"}


def test_segimage2itkimage_voxels_equal_rasterisation(synthetic, tmp_path) -> None:  # noqa: F811
    out, man = synthetic["out"], _manifest(synthetic["out"])
    rois = {r.roi_id: r for r in load_roiset(synthetic["rois"]).rois}
    infos = {i.series_instance_uid: i for i in index_folder(synthetic["dicom"]).series}
    checked = 0
    for seg in sorted(out.glob("*.SEG.dcm")):
        folder = tmp_path / seg.stem
        folder.mkdir()
        r = subprocess.run([_tool("segimage2itkimage"), "--inputDICOM", str(seg),
                            "--outputDirectory", str(folder), "--outputType", "nrrd"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        for rid, row in man.items():
            if row["seg_file"] != seg.name:
                continue
            roi = rois[rid]
            vol = load_series(infos[roi.series_instance_uid])
            rm = rasterize_roi(vol, roi)
            want = np.concatenate(
                [vol.pixel_to_lps(p.k, *p.rows_cols()) for p in rm.parts if p.n_voxels]
            )
            im = sitk.ReadImage(str(folder / f"{row['segment_number']}.nrrd"))
            nz = np.argwhere(sitk.GetArrayFromImage(im) > 0)  # (k, row, column)
            got = np.array(
                [im.TransformIndexToPhysicalPoint((int(c), int(r), int(k))) for k, r, c in nz]
            )
            assert len(got) == len(want) == rm.n_voxels, rid
            assert {tuple(p) for p in np.round(got, 3)} == {tuple(p) for p in np.round(want, 3)}
            checked += 1
    assert checked == sum(m["exported"] == "true" for m in man.values())
