"""Identifiers in free-text DICOM tags are redacted when the header is read (issue 12 item
6): not in index.csv, not in the header cache, not in measurement rows.  Real DICOM
written with pydicom, and the real GE phantom whose PatientName is in SeriesDescription."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from hu_roi.io import index_folder
from hu_roi.io.cache import HeaderCache
from hu_roi.io.dicom import FREE_TEXT_FIELDS, REDACTED, read_header
from tests.cli_helpers import run_main
from tests.dicom_factory import write_ct_series

REPO = Path(__file__).resolve().parents[1]
GE = REPO.parent / "shared" / "real_ct" / "ge_discovery_mi_water_phantom"

NAME = "Mustermann^Erika-Maria"
PID = "4711-0815"
BIRTH = "19450317"
#: Every form of an identifier that must not survive (case-insensitive).
LEAKS = ["mustermann", "erika", "maria", PID, BIRTH, "1945-03-17", "17.03.1945"]


def _series(folder: Path, **tags: object) -> list[Path]:
    base = {"PatientName": NAME, "PatientID": PID, "PatientBirthDate": BIRTH}
    return write_ct_series(folder, np.zeros((2, 8, 8)), extra_tags={**base, **tags})


def _no_leak(text: str) -> None:
    low = text.lower()
    for w in LEAKS:
        assert w.lower() not in low, (w, text)


def test_free_text_redacted_in_every_field(tmp_path):
    (p, _) = _series(
        tmp_path,
        SeriesDescription="CT MUSTERMANN Erika 4711-0815 *1945-03-17 thorax",
        ManufacturerModelName="model-maria",
        ConvolutionKernel="B30f 17.03.1945",
        ContrastBolusAgent="given to mustermann",
        Manufacturer="19450317 Inc",
    )
    h = read_header(p)
    assert h.series_description == (f"CT {REDACTED} {REDACTED} {REDACTED} *{REDACTED} thorax")
    for f in FREE_TEXT_FIELDS:
        value = getattr(h, f)
        assert REDACTED in value, (f, value)
        _no_leak(value)
    # the identifiers themselves stay in their own fields (the pseudonymous ID is needed)
    assert h.patient_id == PID and h.patient_name == NAME


def test_whole_name_and_short_components(tmp_path):
    (p, _) = _series(
        tmp_path / "a",
        PatientName="PHANTOM_EXAMPLE",
        PatientID="PX",
        SeriesDescription="phantom_example daily QA, example 2, PX-1 px",
    )
    assert read_header(p).series_description == (
        f"{REDACTED} daily QA, {REDACTED} 2, {REDACTED}-1 {REDACTED}"
    )
    # components under 3 characters and an ID inside a word are left alone
    (q, _) = _series(
        tmp_path / "b",
        PatientName="Li^Wu",
        PatientID="12",
        PatientBirthDate="",
        SeriesDescription="Lithium Wurst 1.25mm 12x",
    )
    assert read_header(q).series_description == "Lithium Wurst 1.25mm 12x"


def test_index_csv_and_cache_hold_no_identifier(tmp_path, monkeypatch):
    _series(tmp_path / "dicom", SeriesDescription="Erika Mustermann 17.03.1945")
    monkeypatch.setenv("HU_ROI_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "index.csv"
    for _ in range(2):  # the second run reads the headers from the cache
        r = run_main("index", str(tmp_path / "dicom"), "--out", str(out), "--quiet")
        assert r.returncode == 0, r.stderr
        (row,) = list(csv.DictReader(out.open()))
        assert row["series_description"] == f"{REDACTED} {REDACTED} {REDACTED}"
        _no_leak(row["series_description"])
    # nothing in the cache files: only the pseudonymous PatientID, in its own field
    raw = b"".join(f.read_bytes() for f in (tmp_path / "cache").iterdir() if f.is_file())
    text = raw.decode("latin-1").replace(PID, "")
    _no_leak(text)
    with HeaderCache(tmp_path / "cache" / "headers.sqlite3") as cache:
        paths = sorted(str(p) for p in (tmp_path / "dicom").iterdir())
        got = cache.get_many(paths)
    assert all(h is not None and h.series_description.count(REDACTED) == 3 for h in got)


@pytest.mark.realct
def test_real_ge_phantom_name_in_description(tmp_path):
    if not GE.is_dir():
        pytest.skip(f"real CT data not found at {GE}")
    (s,) = index_folder(GE).series
    assert s.series_description == REDACTED  # was PHANTOM_EXAMPLE, the PatientName
    out = tmp_path / "i.csv"
    r = run_main("index", str(GE), "--out", str(out), "--quiet", "--no-cache")
    assert r.returncode == 0, r.stderr
    (row,) = list(csv.DictReader(out.open()))
    assert "PHANTOM" not in row["series_description"].upper()
