"""ROI propagation (issue 14): proposed ROIs, their ``registration`` record, the
``proposed-unconfirmed`` flag of ``hu-roi measure``, and ``hu-roi propagate``.

The reference for the registration tests is the known rigid transform the follow-up
series were made with (docs/propagation.md).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from cli_helpers import run_main
from dicom_factory import write_ct_series

from hu_roi.errors import RoiFormatError
from hu_roi.roi import load_roiset, save_roiset


def _roi_doc(**kw) -> dict:
    d = {
        "roi_id": "P01-T2-L1",
        "patient_id": "P01",
        "timepoint": "T2",
        "series_instance_uid": "",
        "level": "L1",
        "irradiated": False,
        "lesion_type": "none",
        "kind": "target",
        "shape": {"type": "circle", "center_mm": [8.0, 8.0, 2.0], "radius_mm": 5.0},
    }
    d.update(kw)
    return d


def _write_set(path: Path, *rois: dict) -> Path:
    doc = {"format": "hu-roi.roiset", "version": 1, "reader": "R1", "rois": list(rois)}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------
# the ROI model: proposed and registration
def test_registration_round_trips(tmp_path: Path) -> None:
    reg = {
        "metric": "mattes-mi",
        "metric_value": -0.61,
        "iterations": 57,
        "parameters": [0.1, 0, 0, 20.5, -3, 1],
    }
    p = _write_set(tmp_path / "a.rois.json", _roi_doc(proposed=True, registration=reg))
    rs = load_roiset(p)
    assert rs.rois[0].proposed is True
    assert rs.rois[0].registration == reg
    assert rs.rois[0].extra == {}  # a known field, not an unknown one
    out = tmp_path / "b.rois.json"
    save_roiset(rs, out)
    d = json.loads(out.read_text())["rois"][0]
    assert d["proposed"] is True and d["registration"] == reg
    # absent stays absent
    rs2 = load_roiset(_write_set(tmp_path / "c.rois.json", _roi_doc()))
    assert rs2.rois[0].registration is None and "registration" not in rs2.rois[0].to_dict()


def test_registration_must_be_an_object(tmp_path: Path) -> None:
    p = _write_set(tmp_path / "a.rois.json", _roi_doc(registration=[1, 2]))
    try:
        load_roiset(p)
    except RoiFormatError as exc:
        assert "registration" in str(exc) and "JSON object" in str(exc)
    else:
        raise AssertionError("a registration that is not an object was accepted")
    bad = '{"metric_value": NaN}'
    text = json.dumps({"format": "hu-roi.roiset", "rois": [_roi_doc(registration={})]})
    q = tmp_path / "b.rois.json"
    q.write_text(text.replace('"registration": {}', f'"registration": {bad}'), encoding="utf-8")
    try:
        load_roiset(q)
    except RoiFormatError as exc:
        assert "finite" in str(exc)
    else:
        raise AssertionError("NaN inside registration was accepted")


def test_measure_flags_unconfirmed_proposals(tmp_path: Path) -> None:
    hu = np.full((5, 24, 24), 150.0)
    write_ct_series(
        tmp_path / "dicom",
        hu,
        series_uid="1.2.826.0.1.3680043.10.999.1",
        extra_tags={"PatientID": "P01"},
    )
    uid = "1.2.826.0.1.3680043.10.999.1"
    rois = _write_set(
        tmp_path / "p.rois.json",
        _roi_doc(roi_id="A", series_instance_uid=uid, proposed=True),
        _roi_doc(roi_id="B", series_instance_uid=uid, proposed=False),
        _roi_doc(roi_id="C", series_instance_uid=uid),
        _roi_doc(
            roi_id="D", series_instance_uid=uid, proposed=True, kind="reference-water", level=None
        ),
    )
    out = tmp_path / "m.csv"
    proc = run_main(
        "measure", "--dicom", str(tmp_path / "dicom"), "--rois", str(rois), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    with out.open(newline="", encoding="utf-8") as fh:
        rows = {r["roi_id"]: r for r in csv.DictReader(fh)}
    assert "proposed-unconfirmed" in rows["A"]["qc_flags"].split(";")
    assert rows["A"]["qc_status"] == "warn"
    assert "proposed-unconfirmed" in rows["D"]["qc_flags"].split(";")
    for rid in ("B", "C"):
        assert "proposed-unconfirmed" not in rows[rid]["qc_flags"]
