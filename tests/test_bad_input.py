"""Hostile and broken DICOM input: every case of the generated corpus, exact behaviour.

The corpus (``tests/bad_input/make_corpus.py``) is written once per session from real,
pydicom-written series and broken in known ways; nothing generated is committed.  For each
case these tests assert

* the index (in-process, :func:`hu_roi.io.index_folder`): the exact series, their slice
  counts and problem codes, and one skipped entry per bad file with a one-line reason
  matching the case's pattern;
* the load (:func:`hu_roi.io.load_series`): success, or the exact hu-roi error type with a
  one-line message naming the file;
* ``hu-roi index`` in-process per case (exit 0, the summary line's counts, the CSVs) and as
  a subprocess on the whole corpus (no traceback, no Python warning, the counts add up,
  the run completes within a time limit even with a named pipe in the tree);
* ``hu-roi measure`` as a subprocess on the whole corpus: one row per ROI, the bad ones with
  ``qc_status=fail`` and the reason, exit 0.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bad_input.make_corpus import CASES, OMITTED, PHANTOM_HU, SHAPE, SPACING, make_corpus
from cli_helpers import run_main as _run_main

from hu_roi.errors import DicomReadError, HuRoiError, SeriesProblemError
from hu_roi.io import index_folder, load_series
from hu_roi.series import MEASURE_ACCEPTS, REFUSING_PROBLEMS

#: Problems for which `hu-roi measure` refuses a series by default.
MEASURE_REFUSES = REFUSING_PROBLEMS - set(MEASURE_ACCEPTS)

REPO = Path(__file__).resolve().parents[1]
SUMMARY_RE = re.compile(
    r"^hu-roi index: (\d+) files?, (\d+) series \((\d+) measurable by hu-roi measure"
    r"(?:, \d+ of them with a warning)?\), (\d+) files? skipped$"
)
ERRORS = {"DicomReadError": DicomReadError, "SeriesProblemError": SeriesProblemError}
#: Wall-clock limit of one CLI run on the whole corpus (it takes ~2 s).
CLI_TIMEOUT_S = 60


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bad_corpus")
    return root, make_corpus(root)


def _case(corpus, case: str):
    root, cases = corpus
    if case not in cases:
        pytest.skip(f"case {case} not generated here: {OMITTED.get(case, 'unknown')}")
    return root / case, cases[case]


def _hu_roi(*args: str, timeout: float = CLI_TIMEOUT_S, **kw) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter (as a user would)."""
    env = dict(os.environ, PYTHONWARNINGS="default", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", *args],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=timeout,
        env=env,
        cwd=kw.pop("cwd", REPO),
        **kw,
    )


def _index_in_subprocess(folder: Path) -> list:
    """index_folder in a child process with a time limit (a blocking file cannot hang us)."""
    code = (
        "import json,sys\nfrom hu_roi.io import index_folder\n"
        "r = index_folder(sys.argv[1])\n"
        "print(json.dumps({'series': [[s.n_slices, list(s.problems)] for s in r.series],"
        " 'skipped': [[k.path, k.reason] for k in r.skipped]}))\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, str(folder)],
            capture_output=True,
            text=True,
            timeout=30,
            errors="surrogateescape",
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"index_folder({folder}) did not finish within 30 s (blocked on a file?)")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# ---------------------------------------------------------------------------------------
# in-process: the index of every case
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_index_case(corpus, case: str) -> None:
    folder, exp = _case(corpus, case)
    if case == "fifo":  # a bug here would block forever: use a child with a time limit
        got = _index_in_subprocess(folder)
        series = [(n, tuple(p)) for n, p in got["series"]]
        skipped = sorted((p, r) for p, r in got["skipped"])
    else:
        res = index_folder(folder)
        series = [(s.n_slices, s.problems) for s in res.series]
        skipped = sorted((k.path, k.reason) for k in res.skipped)
    assert series == list(zip(exp.n_slices, exp.problems, strict=True)), exp.description
    assert len(skipped) == len(exp.skipped), f"{exp.description}: skipped {skipped}"
    for (path, reason), pattern in zip(skipped, exp.skipped, strict=True):
        assert re.search(pattern, reason), f"{path}: reason {reason!r} !~ {pattern!r}"
        assert "\n" not in reason and "Traceback" not in reason
        assert len(reason) < 300, f"reason is not a short line: {reason!r}"


@pytest.mark.parametrize("case", CASES)
def test_load_case(corpus, case: str) -> None:
    folder, exp = _case(corpus, case)
    if case == "fifo":
        pytest.skip("the fifo case is indexed in a child process only")
    res = index_folder(folder)
    if not res.series:
        assert exp.n_series == 0
        return
    info = res.series[0]
    if exp.load_error is None:
        vol = load_series(info)
        assert vol.hu.shape == (info.n_slices, info.rows, info.columns)
        if case == "missing_rescale":  # stored values (HU + 1024) are taken as HU, flagged
            assert float(vol.hu.mean()) == PHANTOM_HU + 1024
        else:
            assert float(vol.hu.mean()) == PHANTOM_HU
        return
    kind, pattern = exp.load_error.split(":", 1)
    with pytest.raises(ERRORS[kind]) as ei:
        load_series(info)
    msg = str(ei.value)
    assert isinstance(ei.value, HuRoiError)
    assert re.search(pattern, msg), msg
    assert "\n" not in msg
    if kind == "DicomReadError" and "bad_file" in exp.extra:
        assert Path(str(exp.extra["bad_file"])).name in msg, "the message names the file"


def test_truncated_pixels_other_slices_still_load(corpus) -> None:
    """Only the slices asked for are read: a broken last slice does not stop slice 0."""
    folder, _ = _case(corpus, "truncated_pixels")
    info = index_folder(folder).series[0]
    vol = load_series(info, slices=[0, 1])
    assert vol.hu.shape[0] == 2 and float(vol.hu.mean()) == PHANTOM_HU


# ---------------------------------------------------------------------------------------
# in-process: `hu-roi index` on every case
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_cli_index_case(corpus, case: str, tmp_path: Path, capsys) -> None:
    from hu_roi.cli import main

    folder, exp = _case(corpus, case)
    if case == "fifo":
        pytest.skip("the fifo case runs in the subprocess test of the whole corpus")
    out = tmp_path / "index.csv"
    rc = main(["index", str(folder), "--out", str(out), "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "Traceback" not in err
    m = SUMMARY_RE.match(err.splitlines()[0])
    assert m, err
    n_files, n_series, n_ok, n_skipped = map(int, m.groups())
    assert n_series == exp.n_series
    # what measure measures by default: gantry tilt and missing slices with a warning
    assert n_ok == sum(1 for p in exp.problems if not MEASURE_REFUSES.intersection(p))
    assert n_skipped == len(exp.skipped)
    assert n_files >= sum(exp.n_slices)
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["n_slices"]) for r in rows] == list(exp.n_slices)
    assert [tuple(filter(None, r["problems"].split(";"))) for r in rows] == list(exp.problems)
    with open(out.with_name("index.skipped.csv"), newline="", encoding="utf-8") as fh:
        skipped = list(csv.DictReader(fh))
    assert len(skipped) == len(exp.skipped)
    for line in err.splitlines()[1:]:
        assert line.startswith(
            ("  skipped ", "  wrote ", "  … and", "  not measured: ", "  0 series: ")
        ), line


# ---------------------------------------------------------------------------------------
# subprocess: the whole corpus at once
# ---------------------------------------------------------------------------------------
def test_cli_index_whole_corpus(corpus, tmp_path: Path) -> None:
    root, cases = corpus
    out = tmp_path / "index.csv"
    try:
        proc = _hu_roi("index", str(root), "--out", str(out), "--no-cache")
    except subprocess.TimeoutExpired:
        pytest.fail(f"hu-roi index did not finish within {CLI_TIMEOUT_S} s (blocked on a file?)")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Warning" not in proc.stderr, "Python warnings leak to the terminal:\n" + proc.stderr
    lines = proc.stderr.splitlines()
    m = SUMMARY_RE.match(lines[0])
    assert m, proc.stderr
    n_files, n_series, n_ok, n_skipped = map(int, m.groups())
    assert n_series == sum(e.n_series for e in cases.values())
    assert n_skipped == sum(len(e.skipped) for e in cases.values())
    assert n_ok == sum(
        1 for e in cases.values() for p in e.problems if not MEASURE_REFUSES.intersection(p)
    )
    for line in lines[1:]:
        assert line.startswith(
            ("  skipped ", "  wrote ", "  … and", "  not measured: ", "  0 series: ")
        ), line
    # the table of series and the table of skipped files are complete
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n_series
    uids = {r["series_instance_uid"] for r in rows}
    assert {e.series_uid for e in cases.values() if e.n_series} <= uids
    with open(out.with_name("index.skipped.csv"), newline="", encoding="utf-8") as fh:
        skipped = list(csv.DictReader(fh))
    assert len(skipped) == n_skipped
    assert all(r["reason"] and "\n" not in r["reason"] for r in skipped)


def test_cli_index_to_stdout_with_odd_names(corpus) -> None:
    """The CSV on stdout survives non-ASCII and non-UTF-8 names (no UnicodeEncodeError)."""
    root, cases = corpus
    for case in ("non_ascii", "non_utf8"):
        if case not in cases:
            continue
        proc = _hu_roi("index", str(root / case), "--quiet", "--no-cache")
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(list(csv.DictReader(proc.stdout.splitlines()))) == 1


def test_cli_index_missing_folder(tmp_path: Path) -> None:
    proc = _run_main("index", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"hu-roi index: error: no such file or folder: {tmp_path / 'nope'}"
    ]


# ---------------------------------------------------------------------------------------
# subprocess: `hu-roi measure` on the whole corpus
# ---------------------------------------------------------------------------------------
def _has_measure() -> bool:
    from hu_roi.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return "measure" in sub.choices  # type: ignore[attr-defined]


def _roi_for(case: str, uid: str, z_mm: float) -> dict:
    centre = [(SHAPE[2] - 1) / 2 * SPACING[1], (SHAPE[1] - 1) / 2 * SPACING[0], z_mm]
    return {
        "roi_id": f"{case}-L3",
        "patient_id": "TEST",
        "timepoint": "T0",
        "series_instance_uid": uid,
        "level": "L3",
        "irradiated": False,
        "lesion_type": "none",
        "kind": "target",
        "shape": {"type": "circle", "center_mm": centre, "radius_mm": 5.0},
    }


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_measure_whole_corpus(corpus, tmp_path: Path, workers: int) -> None:
    """Every ROI a row with the expected status; the same with 2 worker processes."""
    if not _has_measure():
        pytest.skip("hu-roi measure is not wired into the CLI yet")
    root, cases = corpus
    rois = [_roi_for(c, e.series_uid, e.roi_z_mm) for c, e in cases.items() if e.measure]
    rois.append(_roi_for("no_such_series", "1.2.3.4.5.6.7.8.9", 1.0))
    far = _roi_for("far_outside", cases["good"].series_uid, 1.0)
    far["shape"]["center_mm"] = [5000.0, 5000.0, 1.0]
    rois.append(far)
    roi_file = tmp_path / "corpus.rois.json"
    roi_file.write_text(
        json.dumps({"format": "hu-roi.roiset", "version": 1, "reader": "R1", "rois": rois})
    )
    out = tmp_path / "m.csv"
    try:
        proc = _hu_roi(
            "measure",
            "--dicom",
            str(root),
            "--rois",
            str(roi_file),
            "--out",
            str(out),
            "--quiet",
            "--workers",
            str(workers),
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("hu-roi measure did not finish within 120 s")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    with open(out, newline="", encoding="utf-8") as fh:
        rows = {r["roi_id"]: r for r in csv.DictReader(fh)}
    assert len(rows) == len(rois), "one row per ROI, failed ones included"
    for case, exp in cases.items():
        if not exp.measure:
            continue
        row = rows[f"{case}-L3"]
        assert row["qc_status"] == exp.measure, (case, row["qc_status"], row["qc_flags"])
        assert re.search(exp.measure_flag, row["qc_flags"]), (case, row["qc_flags"])
        if exp.measure == "pass":
            assert float(row["mean_hu"]) == PHANTOM_HU, case
        if exp.measure == "fail":
            assert row["mean_hu"] in ("", "nan", "NaN"), (case, row["mean_hu"])
    assert rows["no_such_series-L3"]["qc_status"] == "fail"
    assert "series-not-found" in rows["no_such_series-L3"]["qc_flags"]
    assert rows["far_outside-L3"]["qc_status"] == "fail"
    assert "roi-outside-image" in rows["far_outside-L3"]["qc_flags"]


def test_cli_measure_cannot_run(tmp_path: Path) -> None:
    """No such DICOM folder / ROI file, a folder without ROI files, --workers 0: exit 2
    with one line on stderr."""
    if not _has_measure():
        pytest.skip("hu-roi measure is not wired into the CLI yet")
    rois = tmp_path / "a.rois.json"
    rois.write_text('{"format": "hu-roi.roiset", "version": 1, "rois": []}')
    proc = _run_main("measure", "--dicom", str(tmp_path / "nope"), "--rois", str(rois))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0] and "Traceback" not in proc.stderr
    proc = _run_main("measure", "--dicom", str(tmp_path), "--rois", str(tmp_path / "none.json"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "none.json" in lines[0], proc.stderr
    empty = tmp_path / "no_rois_here"
    empty.mkdir()
    (empty / "notes.json").write_text("{}")
    proc = _run_main("measure", "--dicom", str(tmp_path), "--rois", str(empty))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no ROI files" in lines[0] and str(empty) in lines[0], lines
    proc = _run_main("measure", "--dicom", str(rois), "--rois", str(rois), "--workers", "0")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ---------------------------------------------------------------------------------------
# resource limits
# ---------------------------------------------------------------------------------------
#: Files in the big-tree test: 20,000 by default (~8 s); ``HU_ROI_BIG_TREE_FILES`` (e.g.
#: 100000) for a longer check (measured numbers in docs/safety.md).
BIG_TREE_FILES = int(os.environ.get("HU_ROI_BIG_TREE_FILES", "20000"))

_RSS_CHILD = """
import json, resource, sys, time
import numpy, pydicom  # imported before the baseline is taken
from hu_roi.io import index_folder, load_series

def peak_mb():
    # VmHWM (peak RSS) since the last reset; ru_maxrss where /proc is missing
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # Linux >= 4.0: reset VmHWM to the current RSS
    except OSError:
        pass

reset_peak()
base = peak_mb()
t0 = time.perf_counter()
res = index_folder(sys.argv[1])
out = {"index_s": time.perf_counter() - t0, "index_growth_mb": peak_mb() - base,
       "n_files": res.n_files, "n_series": len(res.series), "n_skipped": len(res.skipped)}
if len(sys.argv) > 2:
    err = ""
    reset_peak()
    base = peak_mb()
    try:
        load_series(res.series[0])
    except Exception as exc:
        err = type(exc).__name__
    out["load_error"] = err
    out["load_growth_mb"] = peak_mb() - base
print(json.dumps(out))
"""


def _rss_child(folder: Path, *extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(folder), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_big_tree_indexed_with_bounded_memory(tmp_path: Path) -> None:
    """A tree of tiny non-DICOM clutter + 25 small series: peak RSS grows < 2 KB per file.

    The index keeps one short record per file (path and reason), never file contents; the
    limit (16 MB + 2 KB per file: 56 MB for 20,000 files) leaves room for that and catches
    anything proportional to the bytes read.  ``HU_ROI_BIG_TREE_FILES`` sets the number of
    files (default 20,000).
    """
    from bad_input.make_corpus import _series

    n_series = 25
    for s in range(n_series):
        _series(tmp_path / f"series{s:02d}")
    n_clutter = BIG_TREE_FILES - 4 * n_series
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(96))
    for i in range(n_clutter):  # hard links: 30x faster to make than written files
        folder = tmp_path / f"clutter{i // 1000:03d}"
        if i % 1000 == 0:
            folder.mkdir()
        os.link(blob, folder / f"f{i:06d}.dcm")
    blob.unlink()
    got = _rss_child(tmp_path)
    assert got["n_files"] == BIG_TREE_FILES
    assert got["n_series"] == n_series and got["n_skipped"] == n_clutter
    assert got["index_growth_mb"] < 16 + 2 * BIG_TREE_FILES / 1024, got
    print(f"\nindex of {BIG_TREE_FILES} files: {got}")


def test_claimed_size_refused_before_allocation(corpus) -> None:
    """Headers claiming 8 GiB (index) or 4 x 128 MB with 512 bytes of data (load) do not
    make hu-roi allocate what they claim: peak RSS grows by far less than the claim."""
    folder, _ = _case(corpus, "huge_dimensions")
    got = _rss_child(folder)
    assert got["n_series"] == 0 and got["n_skipped"] == 1
    assert got["index_growth_mb"] < 32, got
    folder, _ = _case(corpus, "claims_more_pixels")
    got = _rss_child(folder, "load")
    assert got["load_error"] == "DicomReadError"
    assert got["load_growth_mb"] < 64, f"claimed 512 MB, grew {got['load_growth_mb']:.0f} MB"


# ---------------------------------------------------------------------------------------
# unreadable entries: simulated as an unprivileged user when the tests run as root
# ---------------------------------------------------------------------------------------
_UNPRIVILEGED_CHILD = """
import json, os, shutil, sys, tempfile
sys.path.insert(0, sys.argv[1])
import numpy as np
from dicom_factory import write_ct_series
from hu_roi.io import index_folder, load_series

root = tempfile.mkdtemp(prefix="hu_roi_unreadable_")
try:
    os.chmod(root, 0o755)
    write_ct_series(os.path.join(root, "series"), np.full((3, 8, 8), 40.0))
    load_series(index_folder(root).series[0])  # import everything while still root
    first = sorted(os.listdir(os.path.join(root, "series")))[0]
    locked = os.path.join(root, "series", "locked.dcm")
    shutil.copyfile(os.path.join(root, "series", first), locked)
    os.chmod(locked, 0)
    locked_dir = os.path.join(root, "locked_dir")
    os.mkdir(locked_dir)
    open(os.path.join(locked_dir, "a.dcm"), "wb").close()
    os.chmod(locked_dir, 0)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop to nobody, then index
        os.close(r)
        os.setgid(65534)
        os.setuid(65534)
        res = index_folder(root)
        out = {"series": [s.n_slices for s in res.series],
               "skipped": sorted((os.path.basename(k.path), k.reason) for k in res.skipped)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(pid, 0)
    print(data.decode())
finally:
    for d, _, _ in os.walk(root):
        os.chmod(d, 0o755)
    shutil.rmtree(root, ignore_errors=True)
"""


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0, reason="needs root to drop to an unprivileged uid"
)
def test_unreadable_entries_as_unprivileged_user() -> None:
    """Permission-denied file and folder, made real by indexing as uid 65534 (nobody)."""
    proc = subprocess.run(
        [sys.executable, "-c", _UNPRIVILEGED_CHILD, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["series"] == [3]
    (file_name, file_reason), (dir_name, dir_reason) = got["skipped"]  # sorted by name
    assert (dir_name, dir_reason) == ("locked_dir", "cannot list folder: Permission denied")
    assert file_name == "locked.dcm"
    assert re.match(r"^cannot read file: .*Permission denied", file_reason), file_reason


def test_cli_index_unusable_out_path(corpus, tmp_path: Path) -> None:
    """--out pointing at a folder: exit 2, one line, no traceback.  (A missing folder is
    created: tests/test_output_safety.py::test_missing_folders_are_created.)"""
    root, _ = corpus
    out = tmp_path
    proc = _run_main("index", str(root / "good"), "--out", str(out), "--no-cache", "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hu-roi index: error: "), proc.stderr


# ---------------------------------------------------------------------------------------
# tables given to longitudinal / analyze that are not what they should be
# ---------------------------------------------------------------------------------------
_BAD_TABLES = {
    "empty": b"",
    "wrong_columns": b"a,b\n1,2\n",
    "binary": bytes(range(256)) * 2,
    "png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
}


_TABLE_CASES = [
    *[("longitudinal", k) for k in (*_BAD_TABLES, "missing", "fifo")],
    # analyze is slow to start (pandas, statsmodels): a few kinds per table suffice
    ("analyze-measurements", "binary"),
    ("analyze-measurements", "fifo"),
    ("analyze-clinical", "wrong_columns"),
    ("analyze-clinical", "png"),
    ("analyze-clinical", "missing"),
]


@pytest.mark.parametrize(("command", "kind"), _TABLE_CASES)
def test_cli_bad_tables(tmp_path: Path, command: str, kind: str) -> None:
    """Exit 2 with one line naming the file; never a traceback, never blocking."""
    bad = tmp_path / "table.csv"
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("needs named pipes")
        os.mkfifo(bad)
    elif kind != "missing":
        bad.write_bytes(_BAD_TABLES[kind])
    if command == "longitudinal":
        args = ["longitudinal", str(bad), "--out", str(tmp_path / "l.csv")]
    else:  # the other table is valid: the synthetic trial of hu_roi.analysis
        from hu_roi.analysis.synthetic import write_trial

        meas, clin = write_trial(tmp_path / "trial")
        if command == "analyze-measurements":
            meas = bad
        else:
            clin = bad
        args = ["analyze", "--measurements", str(meas), "--clinical", str(clin), "--out",
                str(tmp_path / "an")]  # fmt: skip
    if kind == "fifo":  # a bug would block: run it in a child with a time limit
        try:
            proc = _hu_roi(*args, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"hu-roi {command} blocked on a {kind} table")
    else:
        proc = _run_main(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "table.csv" in lines[0], proc.stderr


# ---------------------------------------------------------------------------------------
# files that change between index and load
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("change", ["deleted", "emptied", "resized", "replaced_by_pdf"])
def test_file_changed_after_index(tmp_path: Path, change: str) -> None:
    """A slice deleted or rewritten after indexing: a DicomReadError naming the file;
    the other slices still load."""
    from bad_input.make_corpus import _PDF, _series

    paths, _ = _series(tmp_path / "s")
    info = index_folder(tmp_path / "s").series[0]
    victim = Path(info.slices[2].path)
    if change == "deleted":
        victim.unlink()
    elif change == "emptied":
        victim.write_bytes(b"")
    elif change == "resized":
        from dicom_factory import write_ct_series

        other = write_ct_series(tmp_path / "other", np.full((1, 32, 32), 40.0))[0]
        victim.write_bytes(other.read_bytes())
    else:
        victim.write_bytes(_PDF)
    with pytest.raises(DicomReadError) as ei:
        load_series(info)
    assert victim.name in str(ei.value) and "\n" not in str(ei.value)
    vol = load_series(info, slices=[0, 1])
    assert float(vol.hu.mean()) == PHANTOM_HU


def test_measure_broken_slice_fails_only_its_rois(corpus, tmp_path: Path) -> None:
    """Two ROIs on one series, one on the truncated last slice: only that one fails;
    the ROI on an intact slice is measured (its slices load)."""
    from hu_roi.batch import measure_batch

    root, cases = corpus
    uid = cases["truncated_pixels"].series_uid
    rois = [_roi_for("intact", uid, 1.0), _roi_for("broken", uid, float(SHAPE[0] - 1))]
    f = tmp_path / "two.rois.json"
    f.write_text(json.dumps({"format": "hu-roi.roiset", "version": 1, "rois": rois}))
    rows = {m.roi_id: m for m in measure_batch(root / "truncated_pixels", f).measurements}
    assert rows["broken-L3"].qc_status == "fail"
    assert rows["broken-L3"].qc_flags[0] == "series-load-failed"
    assert Path(str(cases["truncated_pixels"].extra["bad_file"])).name in rows["broken-L3"].detail
    assert rows["intact-L3"].qc_status == "pass", rows["intact-L3"].qc_flags
    assert rows["intact-L3"].mean_hu == PHANTOM_HU
