"""No leaked patient data; the optional pseudonymisation map.

The phantom series carry distinctive direct identifiers (name, birth date, address, phone,
other IDs, referring physician).  Running the real command line (subprocesses, verbose
logging on) over them -- including a damaged file whose garbage makes pydicom log header
bytes, a failing ROI, and a file that cannot be decoded -- must not put any of those
identifiers into the index CSV, the skipped-files CSV, the measurement CSV and its
meta.json, the longitudinal CSV, stderr (logs, warnings, error messages) or the header
cache.  ``patient_id`` is written (docs/design.md requires it) and can be replaced by study
codes with :mod:`hu_roi.pseudonym`.

Control: with ``--include-identifiers`` the name *is* found, so the search works.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series

from hu_roi.errors import SchemaError
from hu_roi.pseudonym import (
    PseudonymMap,
    create_pseudonyms,
    load_pseudonyms,
    pseudonymize_csv,
    pseudonymize_rows,
)

REPO = Path(__file__).resolve().parents[1]
PATIENT_ID = "MRN4711"
NAME = "Doe^Jane^Quincy"
#: Every direct identifier written into the headers, and the forms it could leak in.
IDENTIFIERS = {
    "PatientName": [NAME, "Doe^Jane", "Jane", "Quincy", "DOE^JANE"],
    "PatientBirthDate": ["19411231", "1941-12-31", "31.12.1941"],
    "PatientAddress": ["Hauptstrasse 77"],
    "PatientTelephoneNumbers": ["+41 61 555 1234"],
    "OtherPatientIDs": ["AHV756.1234.5678.97"],
    "ReferringPhysicianName": ["Smith^Kirsten"],
    "PatientMotherBirthName": ["Brunhilde"],
}
TAGS = {
    "PatientID": PATIENT_ID,
    "PatientName": NAME,
    "PatientBirthDate": "19411231",
    "PatientAddress": "Hauptstrasse 77, 4051 Basel",
    "PatientTelephoneNumbers": "+41 61 555 1234",
    "OtherPatientIDs": "AHV756.1234.5678.97",
    "ReferringPhysicianName": "Smith^Kirsten",
    "PatientMotherBirthName": "Brunhilde",
}
UID_T0 = "1.2.826.0.1.3680043.10.1234.9.50"
UID_T2 = "1.2.826.0.1.3680043.10.1234.9.52"


def _leaks(text: str) -> list[str]:
    low = text.lower()
    return [f"{tag}: {v}" for tag, vals in IDENTIFIERS.items() for v in vals if v.lower() in low]


def _swallow_into_uid(path: Path) -> None:
    """Damage a file so that SOPClassUID's value swallows the patient module.

    pydicom then warns "Invalid value for VR UI: '...Doe^Jane^Quincy...19411231...'": the
    identifiers reach the logging/warnings machinery, which must not print them.
    """
    raw = bytearray(path.read_bytes())
    i = raw.index(b"\x08\x00\x16\x00UI")  # (0008,0016) SOPClassUID, explicit VR LE
    j = raw.index(b"\x10\x00\x30\x00DA")  # (0010,0030) PatientBirthDate
    end = j + 8 + int.from_bytes(raw[j + 6 : j + 8], "little")
    raw[i + 6 : i + 8] = (end - (i + 8)).to_bytes(2, "little")
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("patient_data")
    dicom = root / "dicom"
    hu = np.full((4, 24, 24), 150.0)
    for uid, date in ((UID_T0, "20200101"), (UID_T2, "20200401")):
        tags = dict(TAGS, StudyDate=date)
        write_ct_series(dicom / date, hu, pixel_spacing=(0.8, 0.8), series_uid=uid, extra_tags=tags)
    # a damaged file whose garbage holds the identifiers (see _swallow_into_uid)
    p = write_ct_series(dicom / "damaged", hu[:1], series_uid="1.2.3.77", extra_tags=TAGS)[0]
    _swallow_into_uid(p)
    # a series that cannot be decoded (pixel data cut) and a non-DICOM file
    paths = write_ct_series(dicom / "cut", hu, series_uid="1.2.3.78", extra_tags=TAGS)
    paths[1].write_bytes(paths[1].read_bytes()[:-100])
    (dicom / "cut" / "notes.dcm").write_text(f"patient {NAME} born 19411231\n")
    rois = root / "study.rois.json"
    rois.write_text(
        json.dumps(
            {
                "format": "hu-roi.roiset",
                "version": 1,
                "reader": "R1",
                "rois": [
                    {
                        "roi_id": f"{PATIENT_ID}-{tp}-L3",
                        "patient_id": PATIENT_ID,
                        "timepoint": tp,
                        "series_instance_uid": uid,
                        "level": "L3",
                        "irradiated": True,
                        "lesion_type": "osteolytic",
                        "kind": "target",
                        "shape": {"type": "circle", "center_mm": [9.2, 9.2, 1.0], "radius_mm": 5},
                    }
                    for tp, uid in (("T0", UID_T0), ("T2", UID_T2), ("T3", "1.2.3.78"))
                ],
            }
        )
    )
    return root


def _hu_roi(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="default")
    if cache:  # else the session's private cache dir (tests/conftest.py)
        env["HU_ROI_CACHE_DIR"] = str(cache)
    proc = subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", *args],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=180,
        cwd=REPO,
        env=env,
    )
    return proc


@pytest.fixture(scope="module")
def outputs(study: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("outputs")
    cache = out / "cache"
    procs = {
        "index": _hu_roi("-v", "index", str(study / "dicom"), "--out", str(out / "index.csv"),
                         cache=cache),
        "measure": _hu_roi("-v", "measure", "--dicom", str(study / "dicom"), "--rois",
                           str(study / "study.rois.json"), "--out", str(out / "m.csv")),
    }  # fmt: skip
    procs["longitudinal"] = _hu_roi("-v", "longitudinal", str(out / "m.csv"), "--out",
                                    str(out / "long.csv"))  # fmt: skip
    return {"dir": out, "cache": cache, "procs": procs}


@pytest.mark.parametrize("command", ["index", "measure", "longitudinal"])
def test_commands_ran(outputs, command: str) -> None:
    proc = outputs["procs"][command]  # type: ignore[index]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "name", ["index.csv", "index.skipped.csv", "m.csv", "m.csv.meta.json", "long.csv"]
)
def test_output_files_hold_no_identifier(outputs, name: str) -> None:
    path = outputs["dir"] / name  # type: ignore[operator]
    assert path.is_file(), f"{name} was not written"
    assert _leaks(path.read_text(encoding="utf-8", errors="replace")) == []


@pytest.mark.parametrize("command", ["index", "measure", "longitudinal"])
def test_terminal_output_holds_no_identifier(outputs, command: str) -> None:
    """stderr with -v: logs, Python warnings, skip reasons, error lines."""
    proc = outputs["procs"][command]  # type: ignore[index]
    assert _leaks(proc.stderr) == [], proc.stderr[-3000:]
    assert _leaks(proc.stdout) == []


def test_header_cache_holds_no_identifier(outputs) -> None:
    """The persistent header cache (``HU_ROI_CACHE_DIR``) is a file hu-roi writes too."""
    files = [p for p in Path(outputs["cache"]).rglob("*") if p.is_file()]  # type: ignore[arg-type]
    if not files:
        pytest.skip("no header cache was written")
    for p in files:
        text = p.read_bytes().decode("latin-1")
        assert _leaks(text) == [], f"{p} stores direct identifiers: {_leaks(text)}"


def test_patient_id_is_written_and_only_it(outputs) -> None:
    """docs/design.md: the index and measurement tables carry patient_id (a pseudonymous ID)."""
    d = outputs["dir"]
    with open(d / "index.csv", newline="", encoding="utf-8") as fh:  # type: ignore[operator]
        rows = list(csv.DictReader(fh))
    assert {r["patient_id"] for r in rows} >= {PATIENT_ID}
    assert not {"patient_name", "patient_birth_date"} & set(rows[0])
    with open(d / "m.csv", newline="", encoding="utf-8") as fh:  # type: ignore[operator]
        mrows = list(csv.DictReader(fh))
    assert {r["patient_id"] for r in mrows} == {PATIENT_ID}
    assert [r["qc_status"] for r in mrows][:2] != ["fail", "fail"]
    assert mrows[2]["qc_status"] == "fail"  # the cut series: a failure without leaking


def test_control_include_identifiers_shows_the_name(study: Path, tmp_path: Path) -> None:
    """The search above can fail: asked for, the name and birth date are written."""
    out = tmp_path / "m.csv"
    proc = _hu_roi("measure", "--dicom", str(study / "dicom"), "--rois",
                   str(study / "study.rois.json"), "--out", str(out), "--include-identifiers",
                   "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    found = _leaks(out.read_text(encoding="utf-8"))
    assert any(f.startswith("PatientName") for f in found), found
    assert any(f.startswith("PatientBirthDate") for f in found), found


def test_series_repr_and_errors_hold_no_identifier(study: Path) -> None:
    """Objects that end up in log lines and exception messages."""
    from hu_roi.errors import HuRoiError
    from hu_roi.io import index_folder, load_series

    res = index_folder(study / "dicom")
    for s in res.series:
        assert _leaks(repr(s)) == [] and _leaks(str(s)) == []
        try:
            load_series(s)
        except HuRoiError as exc:
            assert _leaks(str(exc)) == [], str(exc)
    for k in res.skipped:
        assert _leaks(k.reason) == [], k.reason


# ---------------------------------------------------------------------------------------
# pseudonymisation map
# ---------------------------------------------------------------------------------------
def test_create_map_random_codes_private_file(tmp_path: Path) -> None:
    ids = [f"MRN{i:04d}" for i in range(1, 13)]
    p = tmp_path / "private" / "map.csv"
    p.parent.mkdir()
    pmap = create_pseudonyms(ids + ["", ids[0]], p, rng=random.Random(1))
    assert len(pmap) == 12
    assert sorted(pmap.codes.values()) == [f"S{i:03d}" for i in range(1, 13)]
    assert [pmap.code(i) for i in ids] != [f"S{i:03d}" for i in range(1, 13)], "random order"
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert load_pseudonyms(p).codes == pmap.codes
    with pytest.raises(FileExistsError):
        create_pseudonyms(["X"], p)  # never overwritten
    bigger = create_pseudonyms(ids + ["MRN9999"], p, existing=load_pseudonyms(p))
    assert {k: bigger.code(k) for k in ids} == dict(pmap.codes), "old codes unchanged"
    assert bigger.code("MRN9999") == "S013"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("patient,code\nA,S1\n", "exactly the columns"),
        ("patient_id,study_code\nA,S1\nB,S1\n", "two patients"),
        ("patient_id,study_code\nA,S1\nA,S2\n", "appears twice"),
        ("patient_id,study_code\nA,\n", "both be filled"),
        ("patient_id,study_code\nA,B\nB,C\n", "also patient IDs"),
        ("patient_id,study_code\nA,S 1\n", "not a plain code"),
    ],
)
def test_bad_map_is_refused(tmp_path: Path, text: str, error: str) -> None:
    p = tmp_path / "map.csv"
    p.write_text(text)
    with pytest.raises(SchemaError, match=error):
        load_pseudonyms(p)


def test_rows_pseudonymized_in_id_and_text_columns() -> None:
    pmap = PseudonymMap({"P1": "S007", "P10": "S003"})
    rows = [
        {"roi_id": "P1-T0-L3", "patient_id": "P1", "detail": "P10 and P1", "mean_hu": "1"},
        {"roi_id": "P10-T0-L3", "patient_id": "P10", "detail": "", "mean_hu": "2"},
        {"roi_id": "air", "patient_id": "", "detail": "", "mean_hu": "3"},
    ]
    out = pseudonymize_rows(rows, pmap)
    # every ID of the map is replaced, also another patient's (P10) in this row's text
    assert out[0] == {"roi_id": "S007-T0-L3", "patient_id": "S007", "detail": "S003 and S007",
                      "mean_hu": "1"}  # fmt: skip
    assert out[1]["roi_id"] == "S003-T0-L3" and out[1]["patient_id"] == "S003"
    assert out[2] == rows[2]
    with pytest.raises(SchemaError, match="no study code"):
        pseudonymize_rows([{"patient_id": "P2"}], pmap)
    # a short numeric ID is replaced as a token, not inside numbers
    one = PseudonymMap({"1": "S042"})
    row = {"roi_id": "1-T0-L3", "patient_id": "1", "detail": "plane (1.5000 mm) of 1-T0-L3"}
    assert one.pseudonymize_row(row) == {
        "roi_id": "S042-T0-L3",
        "patient_id": "S042",
        "detail": "plane (1.5000 mm) of S042-T0-L3",
    }


def test_pseudonymized_tables_are_consistent(outputs, tmp_path: Path) -> None:
    """Measurements pseudonymised, then the longitudinal table computed from them, equals
    the pseudonymised longitudinal table of the original: the codes join across tables."""
    d = outputs["dir"]
    pmap = create_pseudonyms([PATIENT_ID], tmp_path / "map.csv", rng=random.Random(3))
    code = pmap.code(PATIENT_ID)
    share = tmp_path / "share"
    share.mkdir()
    n = pseudonymize_csv(d / "m.csv", share / "m.csv", pmap)  # type: ignore[operator]
    assert n == 3
    pseudonymize_csv(d / "long.csv", share / "long_from_original.csv", pmap)  # type: ignore[operator]
    proc = _hu_roi("longitudinal", str(share / "m.csv"), "--out", str(share / "long.csv"),
                   "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    a = (share / "long.csv").read_text()
    b = (share / "long_from_original.csv").read_text()
    assert a == b
    for f in share.iterdir():
        text = f.read_text()
        assert PATIENT_ID not in text, f
        assert _leaks(text) == []
    rows = list(csv.DictReader(io.StringIO((share / "m.csv").read_text())))
    assert {r["patient_id"] for r in rows} == {code}
    assert all(r["roi_id"].startswith(code + "-") for r in rows)


def test_unknown_id_leaves_destination_untouched(tmp_path: Path) -> None:
    src = tmp_path / "m.csv"
    src.write_text("roi_id,patient_id\nA-T0,A\nB-T0,B\n")
    dst = tmp_path / "out.csv"
    dst.write_text("previous\n")
    with pytest.raises(SchemaError):
        pseudonymize_csv(src, dst, PseudonymMap({"A": "S1"}))
    assert dst.read_text() == "previous\n"
    with pytest.raises(SchemaError, match="new file"):
        pseudonymize_csv(src, src, PseudonymMap({"A": "S1", "B": "S2"}))


def test_pseudonymize_command(outputs, tmp_path: Path, capsys) -> None:
    """``hu-roi pseudonymize`` (parser from hu_roi.pseudonym; the CLI registers it)."""
    import argparse

    from hu_roi.pseudonym import add_pseudonymize_parser

    parser = argparse.ArgumentParser(prog="hu-roi")
    add_pseudonymize_parser(parser.add_subparsers(dest="command"))
    d = outputs["dir"]
    secure = tmp_path / "secure"
    secure.mkdir()
    share = tmp_path / "share"
    argv = ["pseudonymize", "--map", str(secure / "map.csv"), "--create", "--out", str(share),
            str(d / "m.csv"), str(d / "long.csv")]  # type: ignore[operator]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    assert sorted(p.name for p in share.iterdir()) == ["long.csv", "m.csv"]
    for p in share.iterdir():
        assert PATIENT_ID not in p.read_text()
    pmap = load_pseudonyms(secure / "map.csv")
    assert list(pmap.codes) == [PATIENT_ID]
    # a second --create refuses to overwrite the map
    args = parser.parse_args(argv)
    with pytest.raises(FileExistsError):
        args.func(args)
    assert load_pseudonyms(secure / "map.csv").codes == pmap.codes


def test_real_ct_index_holds_no_identifier(real_ct: Path, tmp_path: Path) -> None:
    """On the real scanner files of ../shared/real_ct: names and birth dates (read here with
    pydicom, the reference) appear nowhere in ``hu-roi -v index`` output."""
    import pydicom

    names, births, ids, dates = set(), set(), set(), set()
    for f in real_ct.rglob("*"):
        if not f.is_file():
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM (NIfTI, PROVENANCE.md, ...)
            continue
        names.add(str(ds.get("PatientName", "")).strip())
        births.add(str(ds.get("PatientBirthDate", "")).strip())
        ids.add(str(ds.get("PatientID", "")).strip())
        dates |= {str(ds.get(k, "")) for k in ("StudyDate", "SeriesDate", "ContentDate")}
    # a name that equals the patient ID is written as patient_id on purpose
    secret = {n for n in names if len(n) >= 4 and n not in ids}
    secret |= {b for b in births if len(b) == 8 and b not in dates}
    if not secret:
        pytest.skip("no names or birth dates in the real data")
    out = tmp_path / "index.csv"
    proc = _hu_roi("-v", "index", str(real_ct), "--out", str(out), cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr
    texts = {
        "index.csv": out.read_text(encoding="utf-8"),
        "index.skipped.csv": out.with_name("index.skipped.csv").read_text(encoding="utf-8"),
        "stderr": proc.stderr,
    }
    for where, text in texts.items():
        found = sorted(s for s in secret if s.lower() in text.lower())
        assert found == [], f"{where} holds {found}"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_pseudonymize_refuses_a_named_pipe(tmp_path: Path) -> None:
    fifo = tmp_path / "m.csv"
    os.mkfifo(fifo)
    with pytest.raises(SchemaError, match="not a regular file"):
        pseudonymize_csv(fifo, tmp_path / "out.csv", PseudonymMap({"A": "S1"}))
    with pytest.raises(SchemaError, match="not a regular file"):
        load_pseudonyms(fifo)


def test_pseudonymize_reads_crlf_and_bom_and_refuses_a_huge_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hu_roi.pseudonym as pseudonym

    src = tmp_path / "m.csv"
    # Excel's way: BOM and CRLF, and a quoted note with a line break inside
    src.write_bytes(b'\xef\xbb\xbfpatient_id,note\r\nA,"one\r\ntwo"\r\n')
    n = pseudonymize_csv(src, tmp_path / "out.csv", PseudonymMap({"A": "S1"}))
    assert n == 1
    assert (tmp_path / "out.csv").read_text() == 'patient_id,note\nS1,"one\ntwo"\n'
    monkeypatch.setattr(pseudonym, "MAX_TABLE_BYTES", 10)
    with pytest.raises(SchemaError, match="too large for a hu-roi table"):
        pseudonymize_csv(src, tmp_path / "out2.csv", PseudonymMap({"A": "S1"}))
    assert not (tmp_path / "out2.csv").exists()
