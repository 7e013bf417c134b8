"""One consistent command line (the front-door issue): ISO dates and no raw DICOM
multi-values in the index, no binary-float noise in CSVs, ``-v``/``-q`` after the
subcommand, grammatical counts, the index summary agreeing with ``measure``, a hint for a
tree without DICOM, a short ``SeriesInfo`` repr, and no import circle through the CLI.

References: DICOM files written here with pydicom (values known), read back with the csv
module; the module graph from the sources with :mod:`ast`.
"""

from __future__ import annotations

import ast
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_main

from hu_roi.csvtext import derived_number_text, number_text
from tests.dicom_factory import write_ct_series

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def siemens_like(tmp_path: Path) -> Path:
    """A 4-slice CT with Siemens' two-valued kernel, 0.9765625 mm pixels, a DICOM date."""
    d = tmp_path / "dicom"
    hu = np.full((4, 16, 16), 100.0)
    write_ct_series(
        d,
        hu,
        pixel_spacing=(0.9765625, 0.9765625),
        slice_positions=[0.0, 3.0, 6.0, 9.0],
        extra_tags={
            "ConvolutionKernel": ["Br38f", "3"],
            "StudyDate": "20190304",
            "PatientID": "S01",
            "KVP": 120,
        },
    )
    return d


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------------------
# index table
# ---------------------------------------------------------------------------------------
def test_index_iso_date_spacing_columns_kernel(siemens_like: Path, tmp_path: Path) -> None:
    out = tmp_path / "i.csv"
    proc = run_main("index", str(siemens_like), "--out", str(out), "--no-cache")
    assert proc.returncode == 0, proc.stderr
    (row,) = _rows(out)
    assert row["study_date"] == "2019-03-04"
    assert "pixel_spacing_mm" not in row
    assert row["pixel_spacing_row_mm"] == "0.9765625" and row["pixel_spacing_col_mm"] == "0.9765625"
    assert row["kernel"] == "Br38f;3"
    assert "\\" not in out.read_text()
    assert row["slice_spacing_mm"] == "3.0" and row["kvp"] == "120.0"


def test_index_columns_documented() -> None:
    from hu_roi.indexcli import INDEX_COLUMNS

    text = (ROOT / "docs" / "csv_schemas.md").read_text(encoding="utf-8")
    section = text.split("## Index CSV", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M)
    assert documented == list(INDEX_COLUMNS)


# ---------------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "text"),
    [
        (167.19999999999993, "167.2"),  # percentile interpolation noise
        (0.1 + 0.2, "0.3"),
        (0.9765625, "0.9765625"),  # a header value at full precision
        (170.5438596491228, "170.5438596491228"),  # a mean: bit-identical, not shortened
        (80.0, "80.0"),
        (float("nan"), ""),
        (float("inf"), ""),
    ],
)
def test_number_text(value: float, text: str) -> None:
    assert number_text(value) == text
    if text:
        assert abs(float(text) - value) <= 4 * np.spacing(value)


def test_derived_number_text_drops_subtraction_noise() -> None:
    assert repr(342.3 - 340.5) == "1.8000000000000114"  # the noise this is about
    assert derived_number_text(342.3 - 340.5) == "1.8"
    assert derived_number_text(27.050058021685312) == "27.0500580217"


def test_no_float_noise_in_measure_and_longitudinal(tmp_path: Path) -> None:
    """The bundled sample set through measure and longitudinal: no cell ends in a run of
    noise digits (…0000000x or …9999999x)."""
    m, lg = tmp_path / "m.csv", tmp_path / "l.csv"
    sample = ROOT / "sample_dicom"
    proc = run_main(
        "measure", "--dicom", str(sample / "dicom"), "--rois", str(sample / "rois"),
        "--out", str(m), "--no-cache", "-q",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert run_main("longitudinal", str(m), "--out", str(lg), "-q").returncode == 0
    noise = re.compile(r"\d\.\d*(?:0{6,}|9{6,})\d+")
    for path in (m, lg):
        text = path.read_text()
        assert not noise.search(text), (path.name, noise.search(text))
    # and the values are still the measured ones: mean_hu reads back within 4 ulps
    rows = _rows(m)
    assert any(r["p95_hu"] for r in rows)


# ---------------------------------------------------------------------------------------
# options and messages
# ---------------------------------------------------------------------------------------
def test_verbose_and_quiet_after_the_subcommand(siemens_like: Path, tmp_path: Path) -> None:
    rois = tmp_path / "r.rois.json"
    new = run_main(
        "roi", "new", "--dicom", str(siemens_like), "--series", _key(siemens_like),
        "--voxel", "1", "8", "8", "--radius", "4", "--level", "L1", "--timepoint", "T0",
        "--out", str(rois), "--no-cache",
    )  # fmt: skip
    assert new.returncode == 0, new.stderr
    base = ["--dicom", str(siemens_like), "--rois", str(rois), "--no-cache"]
    # a child process each: logging is configured once per process, as for a user
    plain = _hu_roi("measure", *base, "--out", str(tmp_path / "a.csv"))
    after = _hu_roi("measure", *base, "--out", str(tmp_path / "b.csv"), "-v")
    before = _hu_roi("-v", "measure", *base, "--out", str(tmp_path / "c.csv"))
    quiet = _hu_roi("measure", *base, "--out", str(tmp_path / "d.csv"), "--quiet")
    quiet_before = _hu_roi("-q", "measure", *base, "--out", str(tmp_path / "e.csv"))
    for p in (plain, after, before, quiet, quiet_before):
        assert p.returncode == 0, p.stderr
    assert "INFO" not in plain.stderr
    for verbose in (after, before):  # -v shows what was read and measured
        assert re.search(r"INFO: ROI 'S01-T0-L1': (pass|warn), mean 100.0 HU", verbose.stderr)
        assert "reading 1 slice" in verbose.stderr
    assert quiet.stderr == "" and quiet_before.stderr == ""


def _hu_roi(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _key(dicom: Path) -> str:
    from hu_roi.io import index_folder

    (s,) = index_folder(dicom).series
    return s.series_key


def test_counts_are_grammatical(siemens_like: Path, tmp_path: Path) -> None:
    (siemens_like / "notes.txt").write_text("not DICOM")
    proc = run_main("index", str(siemens_like), "--no-cache")
    head = proc.stderr.splitlines()[0]
    assert head.startswith("hu-roi index: 5 files, 1 series (1 measurable"), head
    assert head.endswith(", 1 file skipped"), head
    rois = tmp_path / "r.rois.json"
    run_main(
        "roi", "new", "--dicom", str(siemens_like), "--series", _key(siemens_like),
        "--voxel", "1", "8", "8", "--radius", "4", "--level", "L1", "--timepoint", "T0",
        "--out", str(rois), "--no-cache",
    )  # fmt: skip
    m = run_main("measure", "--dicom", str(siemens_like), "--rois", str(rois), "--no-cache")
    assert re.match(r"hu-roi measure: 1 ROI \(\d pass, \d warn, 0 fail\) on 1 series$", m.stderr)


def test_longitudinal_help_shows_percent_delta() -> None:
    proc = run_main("longitudinal", "--help")
    assert "%Δ" in proc.stdout and "%%" not in proc.stdout


def test_pseudonymize_help_names_cli_flags() -> None:
    proc = run_main("pseudonymize", "--help")
    assert "--extend" in proc.stdout and "existing=" not in proc.stdout


def test_every_cli_error_has_one_prefix(tmp_path: Path) -> None:
    for args, cmd in [
        (("index", str(tmp_path / "nope")), "index"),
        (("measure", "--dicom", str(tmp_path / "nope"), "--rois", str(tmp_path)), "measure"),
        (("longitudinal", str(tmp_path / "nope.csv")), "longitudinal"),
        (("roi", "validate", str(tmp_path / "nope.json")), "roi"),
    ]:
        proc = run_main(*args)
        assert proc.returncode == 2
        assert proc.stderr.startswith(f"hu-roi {cmd}: error: "), proc.stderr


# ---------------------------------------------------------------------------------------
# the index summary and measure agree
# ---------------------------------------------------------------------------------------
def test_index_counts_gantry_tilt_as_measure_does(tmp_path: Path) -> None:
    """A tilted series (origins shifted along Y slice by slice) is measured by measure
    (with a series-gantry-tilt warning), so the index counts it as measurable."""
    d = tmp_path / "tilt"
    n = 5
    origins = [(0.0, 0.5 * k, 2.0 * k) for k in range(n)]  # ~14° tilt
    write_ct_series(d, np.full((n, 16, 16), 50.0), origins=origins, extra_tags={"PatientID": "S01"})
    proc = run_main("index", str(d), "--no-cache")
    head = proc.stderr.splitlines()[0]
    assert "1 series (1 measurable by hu-roi measure, 1 of them with a warning)" in head, head
    rois = tmp_path / "r.rois.json"
    key = _key(d)
    run_main(
        "roi", "new", "--dicom", str(d), "--series", key, "--voxel", "2", "8", "8",
        "--radius", "3", "--level", "L1", "--timepoint", "T0", "--out", str(rois), "--no-cache",
    )  # fmt: skip
    out = tmp_path / "m.csv"
    m = run_main("measure", "--dicom", str(d), "--rois", str(rois), "--out", str(out))
    assert m.returncode == 0, m.stderr
    (row,) = _rows(out)
    assert row["qc_status"] == "warn" and "series-gantry-tilt" in row["qc_flags"]


def test_tree_without_dicom_gets_a_hint(tmp_path: Path) -> None:
    (tmp_path / "scan.nii.gz").write_bytes(b"\x1f\x8b" + bytes(100))
    proc = run_main("index", str(tmp_path), "--no-cache")
    assert proc.returncode == 0
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("hu-roi index: 1 file, 0 series"), lines
    assert any(x.startswith("  0 series: no DICOM image found (NIfTI") for x in lines), lines


# ---------------------------------------------------------------------------------------
# printing and structure
# ---------------------------------------------------------------------------------------
def test_series_info_repr_is_short(siemens_like: Path) -> None:
    from hu_roi.io import index_folder

    (s,) = index_folder(siemens_like).series
    text = repr(s)
    assert text.startswith("SeriesInfo(series_key=") and "n_slices=4" in text
    assert "SliceRef" not in text and "S01" not in text  # no slice list, no patient ID
    assert len(text) < 300


def _module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for p in (ROOT / "hu_roi").rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        deps: set[str] = set()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d.startswith("hu_roi")}
    return graph


def test_nothing_below_the_cli_imports_it() -> None:
    """cli → commands → command modules → clibase: no module (even lazily) imports
    ``hu_roi.cli`` back, so the house reads from the bottom up."""
    graph = _module_graph()
    assert "hu_roi.clibase" in graph and "hu_roi.indexcli" in graph

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for d in graph.get(todo.pop(), ()):
                if d == goal:
                    return True
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return False

    offenders = [m for m in graph if m != "hu_roi.cli" and reaches(m, "hu_roi.cli")]
    assert offenders == []
    assert not any(d.startswith("hu_roi.") for d in graph["hu_roi.clibase"] - {
        "hu_roi.errors", "hu_roi.util"})  # fmt: skip


def test_no_doc_points_outside_the_repository() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    docs += [ROOT / "sample_dicom" / "README.md"]
    for p in docs:
        text = p.read_text(encoding="utf-8")
        assert "DESIGN.md" not in text, p
        assert "/work/" not in text, p


def test_a_fail_row_without_patient_id_does_not_refuse_the_table(tmp_path: Path) -> None:
    """A series without PatientID (as the anonymised Siemens export) and one ROI that names
    no patient: measure writes a patient-id-missing fail row with an empty patient_id;
    longitudinal and analyze's reader leave that row out with a warning naming it instead
    of refusing the whole file, and keep the good ROI."""
    from hu_roi.analysis.schemas import read_measurements

    d = tmp_path / "dicom"
    write_ct_series(d, np.full((4, 16, 16), 120.0), extra_tags={"PatientID": None})
    rois = tmp_path / "r.rois.json"
    base = ["--dicom", str(d), "--series", _key(d), "--radius", "4", "--timepoint", "T0"]
    ok = run_main("roi", "new", *base, "--voxel", "1", "8", "8", "--level", "L1",
                  "--patient-id", "S01", "--out", str(rois), "--no-cache")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    data = json.loads(rois.read_text())
    bad = dict(data["rois"][0], roi_id="X-T0-L2", level="L2", patient_id="")
    data["rois"].append(bad)
    rois.write_text(json.dumps(data))
    m = tmp_path / "m.csv"
    assert run_main("measure", "--dicom", str(d), "--rois", str(rois), "--out", str(m),
                    "-q").returncode == 0  # fmt: skip
    by_id = {r["roi_id"]: r for r in _rows(m)}
    assert by_id["X-T0-L2"]["qc_status"] == "fail" and by_id["X-T0-L2"]["patient_id"] == ""
    assert "patient-id-missing" in by_id["X-T0-L2"]["qc_flags"]
    lg = tmp_path / "l.csv"
    proc = _hu_roi("longitudinal", str(m), "--out", str(lg))
    assert proc.returncode == 0, proc.stderr
    assert "1 fail row(s) without patient_id left out (line 3: roi_id 'X-T0-L2')" in proc.stderr
    (row,) = _rows(lg)
    assert row["patient_id"] == "S01" and row["level"] == "L1"
    assert float(row["hu_T0"]) == 120.0
    assert list(read_measurements(m)["roi_id"]) == ["S01-T0-L1"]
