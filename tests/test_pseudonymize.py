"""``hu-roi pseudonymize``: no identifier left, nothing written unless everything worked.

The tables come from the real command line (index, measure, longitudinal) run over CT
series written with pydicom, for two patients whose IDs also stand in the folder names,
the ROI file name, ``roi_id`` (followed by ".") and SeriesDescription.  Reference: the
IDs themselves -- after pseudonymisation neither may occur anywhere in the copies, while
every number, UID and date is unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_main
from dicom_factory import write_ct_series

from hu_roi.csvtext import escape_cell
from hu_roi.pseudonym import PseudonymMap, load_pseudonyms

IDS = ("4711-0815", "4711-0999")
UID = "1.2.826.0.1.3680043.10.1234.4711.{}"


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pseudo")
    rois = []
    for k, pid in enumerate(IDS):
        for j, (tp, date) in enumerate((("T0", "20200101"), ("T1", "20200115"))):
            uid = UID.format(10 * k + j)
            write_ct_series(
                root / "dicom" / pid / tp,
                np.full((4, 24, 24), 100.0 + 10 * k + j),
                pixel_spacing=(0.8, 0.8),
                series_uid=uid,
                extra_tags={
                    "PatientID": pid,
                    "StudyDate": date,
                    "SeriesDescription": f"Spine {pid} ({tp})",
                },
            )
            rois.append(
                {"roi_id": f"{pid}.{tp}-L1", "patient_id": pid, "timepoint": tp,
                 "series_instance_uid": uid, "level": "L1", "irradiated": True,
                 "lesion_type": "none", "kind": "target",
                 "shape": {"type": "circle", "center_mm": [9.2, 9.2, 1.0], "radius_mm": 5}}
            )  # fmt: skip
    roi_file = root / "rois" / f"{IDS[0]}.rois.json"
    roi_file.parent.mkdir()
    roi_file.write_text(
        json.dumps({"format": "hu-roi.roiset", "version": 1, "reader": "R1", "rois": rois})
    )
    out = root / "tables"
    for args in (
        ["index", str(root / "dicom"), "--out", str(out / "index.csv")],
        ["measure", "--dicom", str(root / "dicom"), "--rois", str(roi_file), "--out",
         str(out / "m.csv")],
        ["longitudinal", str(out / "m.csv"), "--out", str(out / "long.csv")],
    ):  # fmt: skip
        proc = run_main(*args, "--quiet")
        assert proc.returncode == 0, (args, proc.stderr)
    return {name: out / f"{name}.csv" for name in ("index", "m", "long")}


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_no_identifier_is_left_anywhere(tables: dict[str, Path], tmp_path: Path) -> None:
    # the premise: the IDs stand in paths, after a "." and in descriptions
    m = _rows(tables["m"])
    assert m[0]["roi_id"] == f"{IDS[0]}.T0-L1"
    assert m[0]["roi_file"].endswith(f"{IDS[0]}.rois.json")
    index = _rows(tables["index"])
    assert any(f"/{IDS[0]}/T0" in r["folder"] for r in index)
    # (series_description holds the ID, or "[redacted]" where index redacts it itself)

    share, secret = tmp_path / "share", tmp_path / "secret"
    proc = run_main("pseudonymize", *map(str, tables.values()), "--map",
                    str(secret / "map.csv"), "--create", "--out", str(share))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    pmap = load_pseudonyms(secret / "map.csv")
    assert sorted(pmap.codes) == sorted(IDS)
    for name, src in tables.items():
        copy = share / src.name
        text = copy.read_text(encoding="utf-8")
        for pid in IDS:
            assert pid not in text, (name, pid)
        a, b = _rows(src), _rows(copy)
        assert len(a) == len(b) and list(a[0]) == list(b[0])
        for ra, rb in zip(a, b, strict=True):
            for col, va in ra.items():
                vb = rb[col]
                if any(pid in va for pid in IDS):
                    want = va
                    for pid in IDS:
                        want = want.replace(pid, pmap.code(pid))
                    assert vb == want, (name, col)
                else:  # numbers, UIDs, dates, everything else: unchanged
                    assert vb == va, (name, col)
    c0 = pmap.code(IDS[0])
    b = _rows(share / "m.csv")
    assert b[0]["roi_id"] == f"{c0}.T0-L1" and b[0]["roi_file"].endswith(f"{c0}.rois.json")


def test_ids_are_replaced_between_non_alphanumerics_only() -> None:
    pmap = PseudonymMap({"4711": "S001", "4711-0815": "S002", "1": "S003"})
    cases = {
        "/x/4711-0815/4711-0815.rois.json": "/x/S002/S002.rois.json",
        "4711.T0-L1": "S001.T0-L1",
        "Spine_4711 (T0)": "Spine_S001 (T0)",
        "47110 x4711 4711a": "47110 x4711 4711a",  # part of a longer run: not an ID
        "plane (1.5000 mm) of 1-T0-L3": "plane (1.5000 mm) of S003-T0-L3",
        "1.2.840.4711.1": "1.2.840.4711.1",  # UID components
        "4711": "4711",  # a whole number is a measurement, never an ID
        "-4711.5": "-4711.5",
        "2017-03-01": "2017-03-01",
    }
    for text, want in cases.items():
        assert pmap.replace_ids(text) == want, text
    row = pmap.pseudonymize_row({"patient_id": "4711", "mean_hu": "4711", "note": "id 4711"})
    assert row == {"patient_id": "S001", "mean_hu": "4711", "note": "id S001"}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_long_row_fails_cleanly_and_writes_nothing(tmp_path: Path) -> None:
    """Was a traceback after the map had been written, so a rerun with --create failed."""
    good = _write(tmp_path / "a" / "good.csv", "roi_id,patient_id\nA.T0,A\n")
    bad = _write(tmp_path / "a" / "bad.csv", "roi_id,patient_id\nB.T0,B\nC.T0,C,surplus\n")
    secret, share = tmp_path / "secret", tmp_path / "share"
    secret.mkdir()
    argv = [str(good), str(bad), "--map", str(secret / "map.csv"), "--create",
            "--out", str(share)]  # fmt: skip
    proc = run_main("pseudonymize", *argv)
    assert proc.returncode == 2
    assert proc.stderr.startswith("hu-roi pseudonymize: error: hu-roi table"), proc.stderr
    assert "line 3: 3 field(s)" in proc.stderr
    assert not (secret / "map.csv").exists() and not share.exists()
    _write(bad, "roi_id,patient_id\nB.T0,B\nC.T0,C\n")
    proc = run_main("pseudonymize", *argv)
    assert proc.returncode == 0, proc.stderr
    assert sorted(load_pseudonyms(secret / "map.csv").codes) == ["A", "B", "C"]
    assert stat.S_IMODE((secret / "map.csv").stat().st_mode) == 0o600
    assert sorted(p.name for p in share.iterdir()) == ["bad.csv", "good.csv"]


def test_unknown_id_writes_no_copy_and_names_the_flag(tmp_path: Path) -> None:
    m = _write(tmp_path / "map.csv", "patient_id,study_code\nA,S1\n")
    a = _write(tmp_path / "in" / "a.csv", "roi_id,patient_id\nA.T0,A\n")
    b = _write(tmp_path / "in" / "b.csv", "roi_id,patient_id\nA.T1,A\nB.T0,B\n")
    share = tmp_path / "share"
    proc = run_main("pseudonymize", str(a), str(b), "--map", str(m), "--out", str(share))
    assert proc.returncode == 2
    assert "line 3" in proc.stderr and "--extend" in proc.stderr
    assert "existing=" not in proc.stderr
    assert not share.exists(), "a.csv was fine, but nothing is written when b.csv fails"
    assert m.read_text() == "patient_id,study_code\nA,S1\n"
    proc = run_main("pseudonymize", str(a), "--map", str(m), "--create", "--out", str(share))
    assert proc.returncode == 2 and "--extend" in proc.stderr and "existing=" not in proc.stderr
    proc = run_main("pseudonymize", str(a), str(b), "--map", str(m), "--extend", "--out",
                    str(share))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert load_pseudonyms(m).codes["A"] == "S1"
    assert len(load_pseudonyms(m)) == 2


def test_two_tables_with_one_name_are_refused(tmp_path: Path) -> None:
    a = _write(tmp_path / "x" / "m.csv", "roi_id,patient_id\nA.T0,A\n")
    b = _write(tmp_path / "y" / "m.csv", "roi_id,patient_id\nB.T0,B\n")
    share, m = tmp_path / "share", tmp_path / "secret" / "map.csv"
    proc = run_main("pseudonymize", str(a), str(b), "--map", str(m), "--create", "--out",
                    str(share))  # fmt: skip
    assert proc.returncode == 2
    assert "two tables are named 'm.csv'" in proc.stderr
    assert not share.exists() and not m.exists()


def test_a_copy_never_replaces_an_input_or_the_map(tmp_path: Path) -> None:
    a = _write(tmp_path / "m.csv", "roi_id,patient_id\nA.T0,A\n")
    m = _write(tmp_path / "secret" / "map.csv", "patient_id,study_code\nA,S1\n")
    before = a.read_text()
    proc = run_main("pseudonymize", str(a), "--map", str(m), "--out", str(tmp_path))
    assert proc.returncode == 2 and "would replace the input table" in proc.stderr
    assert a.read_text() == before
    c = _write(tmp_path / "other" / "map.csv", "roi_id,patient_id\nA.T0,A\n")
    proc = run_main("pseudonymize", str(c), "--map", str(m), "--out", str(m.parent))
    assert proc.returncode == 2 and "would replace the map" in proc.stderr
    assert load_pseudonyms(m).codes == {"A": "S1"}


def test_formula_escape_is_kept_exactly(tmp_path: Path) -> None:
    """A cell the writer escaped is copied as it was; an unescaped formula gets escaped."""
    src = _write(
        tmp_path / "m.csv",
        "roi_id,patient_id,detail,mean_hu\n"
        f"{escape_cell('=A.T0')},A,{escape_cell('-A moved')},-129.5\n"
        "B.T0,B,=HYPERLINK(1),-1\n",
    )
    m = _write(tmp_path / "map.csv", "patient_id,study_code\nA,S1\nB,S2\n")
    proc = run_main("pseudonymize", str(src), "--map", str(m), "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "m.csv").read_text() == (
        "roi_id,patient_id,detail,mean_hu\n'=S1.T0,S1,'-S1 moved,-129.5\n"
        "S2.T0,S2,'=HYPERLINK(1),-1\n"
    )


def test_help_names_the_flags() -> None:
    proc = run_main("pseudonymize", "--help")
    assert proc.returncode == 0
    assert "--extend" in proc.stdout and "--create" in proc.stdout
    assert "existing=" not in proc.stdout


def test_real_ge_phantom_index_holds_no_patient_id(real_ct: Path, tmp_path: Path) -> None:
    """The GE water phantom's PatientID (PHANTOM_EXAMPLE, also its PatientName) is gone
    from every cell of the pseudonymised index, whatever column it stood in."""
    folder = real_ct / "ge_discovery_mi_water_phantom"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    index = tmp_path / "index.csv"
    proc = run_main("index", str(folder), "--out", str(index), "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(index)
    assert {r["patient_id"] for r in rows} == {"PHANTOM_EXAMPLE"}
    proc = run_main("pseudonymize", str(index), "--map", str(tmp_path / "s" / "map.csv"),
                    "--create", "--out", str(tmp_path / "share"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "share" / "index.csv").read_text(encoding="utf-8")
    assert "phantom_example" not in text.lower()
    out = _rows(tmp_path / "share" / "index.csv")
    for ra, rb in zip(rows, out, strict=True):
        for col in ("series_instance_uid", "study_date", "kvp", "n_slices", "pixel_spacing_row_mm"):
            assert ra[col] == rb[col], col
    assert os.path.getsize(tmp_path / "s" / "map.csv") > 0
