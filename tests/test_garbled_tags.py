"""A garbled numeric tag never has its raw text copied into an output (issue 12 item 7).

Real files written with pydicom, then one value overwritten in the bytes with
``QUUXNAME19450`` (what a damaged length makes a number tag hold: a name and a date).  The
index names the tag and the problem; nothing in index.csv, the skipped list, the
measurement CSV (``detail``) or stderr quotes the raw text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from hu_roi.io import index_folder
from hu_roi.io.dicom import read_header
from tests.cli_helpers import run_main
from tests.dicom_factory import write_ct_series

RAW = b"QUUXNAME19450"
#: keyword -> a valid value of 12 or 13 characters, replaced in the file's bytes by as
#: many characters of RAW (IS values have at most 12)
PLACEHOLDER = {
    "RescaleSlope": "1.00000000000",
    "RescaleIntercept": "-1024.0000000",
    "KVP": "120.000000000",
    "SliceThickness": "2.00000000000",
    "SeriesNumber": "000000000001",
    "InstanceNumber": "000000000001",
    "AcquisitionNumber": "000000000001",
    "GantryDetectorTilt": "0.00000000000",
    "NumberOfFrames": "000000000001",
    "PixelSpacing": ["1.00000000000", "1.0"],
    "ImagePositionPatient": ["0.00000000000", "0", "2"],
    "ImageOrientationPatient": ["1.00000000000", "0", "0", "0", "1", "0"],
    "SOPClassUID": "9.9.9.9.9.9.9",  # and no Rows: "no image" names the class
}
#: tags whose garbling refuses the file, with the reason
REFUSED = {
    "RescaleSlope": "garbled DICOM header: RescaleSlope is not a finite number",
    "RescaleIntercept": "garbled DICOM header: RescaleIntercept is not a finite number",
    "NumberOfFrames": "garbled DICOM header: NumberOfFrames is not a finite number",
    "PixelSpacing": "missing or invalid PixelSpacing",
    "ImagePositionPatient": "missing or invalid ImagePositionPatient",
    "ImageOrientationPatient": "missing or invalid ImageOrientationPatient",
    "SOPClassUID": "no image in this file (SOP class unknown)",
}
#: informative tags: read as missing (the series is indexed, the field empty)
MISSING = {
    "KVP": "kvp",
    "SliceThickness": "slice_thickness_mm",
    "SeriesNumber": "series_number",
    "GantryDetectorTilt": "gantry_tilt_deg",
}


def _garble(folder: Path, keyword: str) -> Path:
    """A 3-slice series whose middle slice holds RAW in ``keyword``; returns that file."""
    hu = np.full((3, 16, 16), 150.0)
    if keyword == "SOPClassUID":
        paths = write_ct_series(folder, hu)
        mid = paths[1]
        import pydicom

        ds = pydicom.dcmread(mid)
        del ds.Rows, ds.PixelData
        ds.SOPClassUID = PLACEHOLDER[keyword]
        ds.save_as(mid)
    else:
        ph = PLACEHOLDER[keyword]
        tags = {keyword: lambda i: ph if i == 1 else DEFAULT.get(keyword, lambda i: None)(i)}
        paths = write_ct_series(folder, hu, slice_positions=[0.0, 2.0, 4.0], extra_tags=tags)
        mid = paths[1]
    data = mid.read_bytes()
    ph = PLACEHOLDER[keyword]
    key = ph if isinstance(ph, str) else ph[0]
    assert data.count(key.encode()) == 1, keyword
    mid.write_bytes(data.replace(key.encode(), RAW[: len(key)]))
    return mid


#: the factory's own value of a tag for slice i (slices at z = 0, 2, 4); tags not listed
#: are left out of the other slices
DEFAULT = {
    "RescaleSlope": lambda i: 1.0,
    "RescaleIntercept": lambda i: -1024.0,
    "PixelSpacing": lambda i: [1.0, 1.0],
    "ImagePositionPatient": lambda i: [0.0, 0.0, 2.0 * i],
    "ImageOrientationPatient": lambda i: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    "InstanceNumber": lambda i: i + 1,
}


@pytest.mark.parametrize("keyword", sorted(PLACEHOLDER))
def test_garbled_tag_named_never_quoted(tmp_path: Path, keyword: str) -> None:
    dicom = tmp_path / "dicom"
    bad = _garble(dicom, keyword)
    res = index_folder(dicom)
    reasons = {s.path: s.reason for s in res.skipped}
    if keyword in REFUSED:
        assert reasons[str(bad)].startswith(REFUSED[keyword]), reasons
        assert [s.n_slices for s in res.series] == [2]
    else:
        assert not reasons
        (s,) = res.series
        assert s.n_slices == 3
        if keyword in MISSING:
            assert getattr(read_header(bad), MISSING[keyword]) is None
    # the command line: index and measure; no output quotes the raw text
    idx = tmp_path / "index.csv"
    r1 = run_main("index", str(dicom), "--out", str(idx), "--no-cache")
    rois = tmp_path / "r.rois.json"
    rois.write_text(
        json.dumps(
            {
                "format": "hu-roi.roiset",
                "version": 1,
                "reader": "R1",
                "rois": [
                    {
                        "roi_id": f"z{z}",
                        "patient_id": "TEST",
                        "timepoint": "T0",
                        "level": "L1",
                        "kind": "target",
                        "series_instance_uid": res.series[0].series_instance_uid,
                        "shape": {"type": "circle", "center_mm": [8, 8, z], "radius_mm": 5},
                    }
                    for z in (0.0, 2.0, 4.0)
                ],
            }
        )
    )
    out = tmp_path / "m.csv"
    r2 = run_main("measure", "--dicom", str(dicom), "--rois", str(rois), "--out", str(out))
    assert r1.returncode == 0 and r2.returncode == 0, (r1.stderr, r2.stderr)
    texts = [r1.stdout, r1.stderr, r2.stdout, r2.stderr]
    texts += [p.read_text() for p in tmp_path.glob("*.csv")]
    for t in texts:
        # UIDs are random digits and may hold "1945" by chance: not a quote of the tag
        t = re.sub(r"\d+(?:\.\d+){3,}", "<uid>", t)
        assert "QUUX" not in t.upper() and "1945" not in t, (keyword, t)
    assert "z0.0" in out.read_text()
