"""Outputs never destroy anything (issue 12, items 1-4, 8, 9): devices and FIFOs are
streams, symbolic links are followed, inputs are never overwritten, a failed run changes
no existing output, missing folders are made, errors have one format, and text cells that
a spreadsheet would run as a formula are escaped.

Real files throughout: a CT series written with pydicom (tests/dicom_factory.py), ROI
files saved with hu_roi.roi, FIFOs and links made in tmp_path; the one device used is
/dev/null, checked to still be a character device afterwards (the tests run as root, where
a wrong rename would replace it).
"""

from __future__ import annotations

import csv
import io
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_main
from dicom_factory import write_ct_series

from hu_roi.roi import Roi, RoiSet, Shape, save_roiset
from hu_roi.util import OutputError, OutputSet

REPO = Path(__file__).resolve().parents[1]
UID_T0 = "1.2.826.0.1.3680043.10.1234.12.1"
UID_T2 = "1.2.826.0.1.3680043.10.1234.12.2"
#: Text a spreadsheet would run as a formula, in a DICOM header and in an ROI file.
FORMULA_DESCRIPTION = '=HYPERLINK("http://example.invalid","click")'
FORMULA_ROI = "=1+1"
FORMULA_READER = "@R1"


def _roi(rid: str, tp: str, uid: str) -> Roi:
    return Roi(
        roi_id=rid,
        patient_id="P01",
        timepoint=tp,
        series_instance_uid=uid,
        level="L3",
        kind="target",
        irradiated=True,
        lesion_type="osteolytic",
        shape=Shape(type="circle", center_mm=(11.5, 11.5, 1.0), radius_mm=5.0),
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two CT series of patient P01 (T0 at 150 HU, T2 at -120 HU: a negative mean that
    must stay a number), one ROI file whose ids and reader start with formula triggers,
    and the measurement CSV `hu-roi measure` writes from them."""
    root = tmp_path_factory.mktemp("study")
    tags = {"PatientID": "P01", "SeriesDescription": FORMULA_DESCRIPTION}
    write_ct_series(
        root / "dicom" / "t0",
        np.full((4, 24, 24), 150.0),
        series_uid=UID_T0,
        file_names="sequential",
        extra_tags={**tags, "StudyDate": "20200101"},
    )
    write_ct_series(
        root / "dicom" / "t2",
        np.full((4, 24, 24), -120.0),
        series_uid=UID_T2,
        file_names="sequential",
        extra_tags={**tags, "StudyDate": "20200401"},
    )
    rois = root / "work.rois.json"
    save_roiset(
        RoiSet(
            rois=(_roi(f"{FORMULA_ROI}-T0", "T0", UID_T0), _roi(f"{FORMULA_ROI}-T2", "T2", UID_T2)),
            reader=FORMULA_READER,
        ),
        rois,
    )
    meas = root / "m.csv"
    proc = run_main(
        "measure", "--dicom", str(root / "dicom"), "--rois", str(rois), "--out", str(meas),
        "--quiet", "--no-cache",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "dicom": root / "dicom", "rois": rois, "meas": meas}


def _measure(study: dict[str, Path], out: str | Path, *extra: str) -> subprocess.CompletedProcess:
    return run_main(
        "measure", "--dicom", str(study["dicom"]), "--rois", str(study["rois"]),
        "--out", str(out), "--quiet", "--no-cache", *extra,
    )  # fmt: skip


def _one_error(proc: subprocess.CompletedProcess, command: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"hu-roi {command}: error: "), proc.stderr
    assert ".tmp" not in lines[0], "a temporary file name must never be shown"
    return lines[0]


def _listing(folder: Path) -> dict[str, bytes | None]:
    """Every entry below ``folder`` with its content (None for folders)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


# ---------------------------------------------------------------------------------------
# 1. --out on something that is not a regular file
# ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
@pytest.mark.parametrize("command", ["index", "measure", "longitudinal"])
def test_dev_null_stays_a_device(study: dict[str, Path], command: str) -> None:
    """`--out /dev/null` writes into the device; it stays a character device and no sidecar
    (null.meta.json, null.skipped.csv) or temporary file appears in /dev."""
    # guard first: should the rules ever regress, fail here instead of replacing the device
    assert OutputSet().is_stream("/dev/null")
    before = set(os.listdir("/dev"))
    if command == "index":
        proc = run_main("index", str(study["dicom"]), "--out", "/dev/null", "--quiet", "--no-cache")
    elif command == "measure":
        proc = _measure(study, "/dev/null")
    else:
        proc = run_main("longitudinal", str(study["meas"]), "--out", "/dev/null", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not os.path.islink("/dev/null")
    new = set(os.listdir("/dev")) - before
    assert not [n for n in new if "null" in n], new
    assert proc.stdout == ""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("command", ["index", "measure"])
def test_fifo_is_written_as_a_stream(study: dict[str, Path], tmp_path: Path, command: str) -> None:
    """A named pipe gets the CSV as a stream; it stays a FIFO, and no sidecar is made."""
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    if command == "index":
        proc = run_main("index", str(study["dicom"]), "--out", str(fifo), "--quiet", "--no-cache")
    else:
        proc = _measure(study, fifo)
    reader.join(timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.csv"], "no sidecar, no temp"
    rows = list(csv.DictReader(io.StringIO(got[0].decode())))
    assert len(rows) == 2


def test_dash_is_stdout(study: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    """`--out -` writes to stdout; no file named '-' or '-.meta.json' is made."""
    monkeypatch.chdir(tmp_path)
    proc = _measure(study, "-")
    assert proc.returncode == 0, proc.stderr
    assert len(list(csv.DictReader(io.StringIO(proc.stdout)))) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dangling", [False, True])
def test_symlink_out_writes_its_target(study: dict[str, Path], tmp_path: Path, dangling) -> None:
    """A symbolic link given as --out stays a link; its target gets the table."""
    target = tmp_path / "real" / "long.csv"
    target.parent.mkdir()
    if not dangling:
        target.write_text("previous\n")
        target.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    proc = run_main("longitudinal", str(study["meas"]), "--out", str(link), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("patient_id,")
    if not dangling:  # the replaced file's permission bits are kept
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["long.csv"]


def test_symlink_to_a_folder_is_refused(study: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "d")
    line = _one_error(
        run_main("longitudinal", str(study["meas"]), "--out", str(link)), "longitudinal"
    )
    assert "folder" in line and str(link) in line
    assert link.is_symlink() and list((tmp_path / "d").iterdir()) == []


def test_outputset_refuses_folders_and_skips_sidecars_of_streams(tmp_path: Path) -> None:
    """Unit check of the rules: a folder is refused; a stream is written at commit."""
    outs = OutputSet()
    with pytest.raises(OutputError, match="folder"):
        outs.check(tmp_path)
    assert outs.is_stream("-") and not outs.is_stream(tmp_path / "x.csv")
    if os.path.exists("/dev/null"):
        assert outs.is_stream("/dev/null")
        # a sidecar of a stream is not written at all
        assert outs.add("/dev/null.meta.json", "{}", sidecar_of="/dev/null") is False


# ---------------------------------------------------------------------------------------
# 2. --out equal to an input
# ---------------------------------------------------------------------------------------
def test_measure_out_onto_the_roi_file_is_refused(study: dict[str, Path], tmp_path: Path) -> None:
    """`measure --rois work.rois.json --out work.rois.json`: the reader's work stays."""
    before = study["rois"].read_bytes()
    line = _one_error(_measure(study, study["rois"]), "measure")
    assert line.count(str(study["rois"])) == 2, "names the output and the input"
    assert study["rois"].read_bytes() == before
    # the same file under another name (hard link) and through a symbolic link
    hard = tmp_path / "hard.csv"
    os.link(study["rois"], hard)
    _one_error(_measure(study, hard), "measure")
    soft = tmp_path / "soft.csv"
    soft.symlink_to(study["rois"])
    _one_error(_measure(study, soft), "measure")
    assert study["rois"].read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.csv", "soft.csv"]


def test_measure_out_into_the_roi_folder_or_dicom_tree_is_refused(
    study: dict[str, Path], tmp_path: Path
) -> None:
    """Any existing file inside an --rois folder or DICOM_DIR is an input."""
    folder = tmp_path / "rois"
    folder.mkdir()
    other = folder / "other.rois.json"
    other.write_bytes(study["rois"].read_bytes())
    notes = folder / "notes.txt"
    notes.write_text("mine\n")
    proc = run_main(
        "measure", "--dicom", str(study["dicom"]), "--rois", str(folder), "--out", str(notes),
        "--quiet", "--no-cache",
    )  # fmt: skip
    _one_error(proc, "measure")
    assert notes.read_text() == "mine\n"
    dcm = study["dicom"] / "t0" / "IM0001.dcm"
    before = dcm.read_bytes()
    line = _one_error(_measure(study, dcm), "measure")
    assert "DICOM_DIR" in line
    assert dcm.read_bytes() == before


def test_longitudinal_out_onto_its_input_is_refused(study: dict[str, Path], tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_bytes(study["meas"].read_bytes())
    before = m.read_bytes()
    line = _one_error(run_main("longitudinal", str(m), "--out", str(m)), "longitudinal")
    assert line.count(str(m)) == 2
    assert m.read_bytes() == before
    alias = tmp_path / "alias.csv"
    os.link(m, alias)
    _one_error(run_main("longitudinal", str(m), "--out", str(alias)), "longitudinal")
    assert m.read_bytes() == before


def test_index_out_onto_a_dicom_file_is_refused(study: dict[str, Path], tmp_path: Path) -> None:
    """`index tree --out tree/IM0001.dcm`, also via a hard link outside the tree, and a
    skipped-files sidecar that would land on a DICOM file."""
    dcm = study["dicom"] / "t0" / "IM0001.dcm"
    before = dcm.read_bytes()
    for out in (dcm, tmp_path / "hard.csv"):
        if out != dcm:
            os.link(dcm, out)
        line = _one_error(
            run_main("index", str(study["dicom"]), "--out", str(out), "--quiet", "--no-cache"),
            "index",
        )
        assert "DICOM_DIR" in line and str(out) in line
    assert dcm.read_bytes() == before
    # the sidecar FILE.skipped.csv would replace a (DICOM) file of the tree
    tree = tmp_path / "tree"
    tree.mkdir()
    victim = tree / "x.skipped.csv"
    victim.write_bytes(before)
    _one_error(
        run_main("index", str(tree), "--out", str(tree / "x.csv"), "--quiet", "--no-cache"),
        "index",
    )
    assert victim.read_bytes() == before and not (tree / "x.csv").exists()


def test_index_out_onto_a_file_linked_from_the_tree_is_refused(
    study: dict[str, Path], tmp_path: Path
) -> None:
    """A DICOM file outside the tree, reached through a symbolic link in it, is an input."""
    outside = tmp_path / "archive" / "IM0001.dcm"
    outside.parent.mkdir()
    outside.write_bytes((study["dicom"] / "t0" / "IM0001.dcm").read_bytes())
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "linked.dcm").symlink_to(outside)
    before = outside.read_bytes()
    line = _one_error(
        run_main("index", str(tree), "--out", str(outside), "--quiet", "--no-cache"), "index"
    )
    assert str(outside) in line
    assert outside.read_bytes() == before


def test_analyze_out_folder_holding_inputs_is_refused(tmp_path: Path) -> None:
    from hu_roi.analysis.synthetic import write_trial

    out = tmp_path / "trial"
    meas, clin = write_trial(out)  # the inputs inside the output folder
    before = _listing(out)
    proc = run_main(
        "analyze", "--measurements", str(meas), "--clinical", str(clin), "--out", str(out)
    )
    line = _one_error(proc, "analyze")
    assert str(meas) in line or str(clin) in line
    assert _listing(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial"], "no temporary folder"


# ---------------------------------------------------------------------------------------
# 3. a failed run leaves every existing output unchanged
# ---------------------------------------------------------------------------------------
def test_sidecar_that_is_a_folder_leaves_the_csv_unchanged(
    study: dict[str, Path], tmp_path: Path
) -> None:
    """Sidecar path is a folder: exit 2, the CSV unchanged, no temporary file left."""
    out = tmp_path / "m.csv"
    out.write_text("previous results\n")
    (tmp_path / "m.csv.meta.json").mkdir()
    before = _listing(tmp_path)
    line = _one_error(_measure(study, out), "measure")
    assert "m.csv.meta.json" in line
    assert _listing(tmp_path) == before
    # the same for the index and its skipped-files table
    idx = tmp_path / "i.csv"
    idx.write_text("previous index\n")
    (tmp_path / "i.skipped.csv").mkdir()
    before = _listing(tmp_path)
    _one_error(
        run_main("index", str(study["dicom"]), "--out", str(idx), "--quiet", "--no-cache"), "index"
    )
    assert _listing(tmp_path) == before


def test_a_failing_rename_undoes_the_others(tmp_path: Path) -> None:
    """All or nothing also when the last rename fails: the first file is put back."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("old a\n")
    b.write_text("old b\n")
    with pytest.raises(OutputError, match=r"cannot write .*b\.csv") as info:
        with OutputSet() as outs:
            outs.add(a, "new a\n")
            outs.add(b, "new b\n")
            b.unlink()
            b.mkdir()  # replaced by a folder after it was checked: its rename fails
            (b / "keep").write_text("x")
    assert ".tmp" not in str(info.value)
    assert a.read_text() == "old a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.csv"]


def test_exception_inside_the_block_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "x.csv"
    with pytest.raises(ZeroDivisionError):
        with OutputSet() as outs:
            outs.add(out, "x\n")
            1 / 0  # noqa: B018
    assert list(tmp_path.iterdir()) == [], "temporaries and the folders made for them removed"


def test_pseudonymize_writes_copies_and_map_together(
    study: dict[str, Path], tmp_path: Path
) -> None:
    """A copy that cannot be written: no copy and no map are written, so the same command
    with --create works once the obstacle is gone."""
    share, secure = tmp_path / "share", tmp_path / "secure"
    long_csv = tmp_path / "long.csv"
    assert (
        run_main("longitudinal", str(study["meas"]), "--out", str(long_csv), "--quiet").returncode
        == 0
    )
    (share / "long.csv").mkdir(parents=True)  # the second copy's path is a folder
    argv = ["pseudonymize", "--map", str(secure / "map.csv"), "--create", "--out", str(share),
            str(study["meas"]), str(long_csv), "--quiet"]  # fmt: skip
    line = _one_error(run_main(*argv), "pseudonymize")
    assert "long.csv" in line
    assert not secure.exists(), "no map (and no folder for it) after a failed run"
    assert sorted(p.name for p in share.iterdir()) == ["long.csv"], "no copy, no temp file"
    (share / "long.csv").rmdir()
    proc = run_main(*argv)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE((secure / "map.csv").stat().st_mode) == 0o600
    assert sorted(p.name for p in share.iterdir()) == ["long.csv", "m.csv"]


@pytest.fixture(scope="module")
def endpoints():  # type: ignore[no-untyped-def]
    import tempfile

    from hu_roi.analysis.clinical import read_clinical
    from hu_roi.analysis.endpoints import analyze
    from hu_roi.analysis.schemas import longitudinal_from_measurements, read_measurements
    from hu_roi.analysis.synthetic import write_trial

    with tempfile.TemporaryDirectory() as d:
        meas, clin = write_trial(Path(d))
        return analyze(longitudinal_from_measurements(read_measurements(meas)), read_clinical(clin))


def test_analyze_folder_is_swapped_whole(endpoints, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A failed rerun leaves the old folder as it was; a successful one leaves no file of
    the old run (no new tables mixed with an old report); foreign files are refused."""
    import dataclasses

    import pandas as pd

    from hu_roi.analysis.report import write_outputs

    out = tmp_path / "an"
    extra = dict(endpoints.tables, hu_repeated_measures=pd.DataFrame({"term": ["x"]}))
    write_outputs(dataclasses.replace(endpoints, tables=extra), out)
    first = _listing(out)
    assert "hu_repeated_measures.csv" in first
    real_to_csv = pd.DataFrame.to_csv
    calls = []

    def failing_to_csv(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_to_csv(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", failing_to_csv)
    with pytest.raises(OutputError, match="No space left") as info:
        write_outputs(endpoints, out)
    assert ".tmp" not in str(info.value)
    monkeypatch.setattr(pd.DataFrame, "to_csv", real_to_csv)
    assert _listing(out) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["an"], "no temporary folder left"
    write_outputs(endpoints, out)  # without the repeated-measures table
    assert "hu_repeated_measures.csv" not in _listing(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["an"]
    (out / "my_notes.txt").write_text("mine\n")
    with pytest.raises(OutputError, match="my_notes.txt"):
        write_outputs(endpoints, out)
    assert (out / "my_notes.txt").read_text() == "mine\n"


# ---------------------------------------------------------------------------------------
# 4. missing folders are created, by every command
# ---------------------------------------------------------------------------------------
def test_missing_folders_are_created(study: dict[str, Path], tmp_path: Path) -> None:
    idx = tmp_path / "a" / "b" / "index.csv"
    proc = run_main("index", str(study["dicom"]), "--out", str(idx), "--quiet", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    assert idx.is_file() and (idx.parent / "index.skipped.csv").is_file()
    m = tmp_path / "c" / "m.csv"
    assert _measure(study, m).returncode == 0
    assert m.is_file() and (m.parent / "m.csv.meta.json").is_file()
    lg = tmp_path / "d" / "e" / "long.csv"
    assert run_main("longitudinal", str(m), "--out", str(lg), "--quiet").returncode == 0
    assert lg.is_file()


# ---------------------------------------------------------------------------------------
# 5. the error format
# ---------------------------------------------------------------------------------------
def test_error_lines_are_capped_and_cannot_be_forged() -> None:
    from hu_roi.cli import MAX_ERROR_LINES, error_lines
    from hu_roi.errors import SchemaError

    many = SchemaError(
        "table.csv: 50 invalid value(s):\n" + "\n".join(f"row {i}" for i in range(50))
    )
    lines = error_lines("longitudinal", many)
    assert lines[0] == "hu-roi longitudinal: error: table.csv: 50 invalid value(s):"
    assert len(lines) == MAX_ERROR_LINES + 1
    assert lines[1:3] == ["  row 0", "  row 1"] and lines[-1] == "  … and 31 more"
    # a value with a newline or an escape sequence cannot start a line of its own
    forged = SchemaError("bad roi_id 'x\nhu-roi measure: 5 ROIs (5 pass)\x1b[2K'")
    lines = error_lines("measure", forged)
    assert all(line.startswith(("hu-roi measure: error: ", "  ")) for line in lines)
    assert "\x1b" not in "".join(lines) and "\\x1b" in lines[-1]
    # an OSError names the file without Python's "[Errno 2]" decoration
    lines = error_lines("index", FileNotFoundError(2, "No such file or directory", "a\nb"))
    assert lines == ["hu-roi index: error: No such file or directory: a\\nb"]


def test_multi_line_schema_error_is_shown_not_cut(study: dict[str, Path], tmp_path: Path) -> None:
    """`longitudinal` with many invalid values lists them (was: the first line only)."""
    (template,) = [r for r in _rows(study["meas"]) if r["timepoint"] == "T0"]
    bad = tmp_path / "m.csv"
    with open(bad, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(template))
        w.writeheader()
        for i in range(40):
            w.writerow({**template, "roi_id": f"R{i}", "patient_id": f"P{i}", "mean_hu": "abc"})
    proc = run_main("longitudinal", str(bad), "--out", str(tmp_path / "l.csv"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("hu-roi longitudinal: error: "), proc.stderr
    assert 3 <= len(lines) <= 21, proc.stderr
    assert all(line.startswith("  ") for line in lines[1:]), proc.stderr
    assert "more" in lines[-1], proc.stderr
    assert not (tmp_path / "l.csv").exists()


def _fake_command(exc: BaseException):  # type: ignore[no-untyped-def]
    """`hu-roi index` whose work raises ``exc``."""
    import hu_roi.indexcli as cli

    def boom(args):  # type: ignore[no-untyped-def]
        raise exc

    return cli, boom


@pytest.mark.parametrize(
    "make",
    [
        lambda pd: pd.errors.OutOfBoundsDatetime("Out of bounds nanosecond timestamp: 9999-12-31"),
        lambda pd: pd.errors.ParserError("Error tokenizing data. C error"),
        lambda pd: UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
        lambda pd: csv.Error("field larger than field limit (131072)"),
    ],
)
def test_input_errors_are_error_lines(make, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    cli, boom = _fake_command(make(pd))
    monkeypatch.setattr(cli, "run_index", boom)
    proc = run_main("index", ".")
    assert proc.returncode == 2
    assert proc.stderr.startswith("hu-roi index: error: ") and "Traceback" not in proc.stderr


def test_a_bug_keeps_its_traceback(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A plain ValueError/KeyError is a bug in hu-roi, not bad input: not hidden."""
    cli, boom = _fake_command(KeyError("mean_hu"))
    monkeypatch.setattr(cli, "run_index", boom)
    with pytest.raises(KeyError):
        run_main("index", ".")


# ---------------------------------------------------------------------------------------
# 6. spreadsheet formulas
# ---------------------------------------------------------------------------------------
def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_formula_text_is_escaped_numbers_are_not(study: dict[str, Path], tmp_path: Path) -> None:
    rows = _rows(study["meas"])
    assert {r["roi_id"] for r in rows} == {f"'{FORMULA_ROI}-T0", f"'{FORMULA_ROI}-T2"}
    assert {r["reader"] for r in rows} == {f"'{FORMULA_READER}"}
    t2 = next(r for r in rows if r["timepoint"] == "T2")
    assert float(t2["mean_hu"]) == -120.0 and t2["mean_hu"].startswith("-")
    assert t2["min_hu"].startswith("-")
    idx = tmp_path / "index.csv"
    assert (
        run_main(
            "index", str(study["dicom"]), "--out", str(idx), "--quiet", "--no-cache"
        ).returncode
        == 0
    )
    assert {r["series_description"] for r in _rows(idx)} == {"'" + FORMULA_DESCRIPTION}
    # switched off: the text as it is
    raw = tmp_path / "raw.csv"
    assert _measure(study, raw, "--no-formula-escape").returncode == 0
    assert {r["roi_id"] for r in _rows(raw)} == {f"{FORMULA_ROI}-T0", f"{FORMULA_ROI}-T2"}


def test_escaped_tables_read_back_unchanged(study: dict[str, Path], tmp_path: Path) -> None:
    """longitudinal and the analysis read what measure wrote, without the apostrophe, and
    longitudinal escapes its own text once (not twice)."""
    from hu_roi.analysis.schemas import read_measurements
    from hu_roi.csvtext import unescape_cell

    m = read_measurements(study["meas"])
    assert set(m["roi_id"]) == {f"{FORMULA_ROI}-T0", f"{FORMULA_ROI}-T2"}
    assert set(m["reader"]) == {FORMULA_READER}
    lg = tmp_path / "long.csv"
    assert run_main("longitudinal", str(study["meas"]), "--out", str(lg), "--quiet").returncode == 0
    (row,) = _rows(lg)
    assert row["reader"] == "'" + FORMULA_READER
    assert unescape_cell(row["reader"]) == FORMULA_READER
    assert float(row["hu_T2"]) == -120.0 and float(row["delta_hu_T2"]) == -270.0


def test_subprocess_dev_stdout(study: dict[str, Path]) -> None:
    """`--out /dev/stdout` (a link to a pipe here) is a stream, not a file to replace."""
    child = (
        "import sys\n"
        "from hu_roi.util import OutputSet\n"
        "assert OutputSet().is_stream('/dev/stdout'), 'guard: never replace /dev/stdout'\n"
        "from hu_roi.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", child, "longitudinal", str(study["meas"]), "--out", "/dev/stdout",
         "--quiet"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("patient_id,")
    assert os.path.islink("/dev/stdout")
