"""hu-roi reliability: ICC(2,1), ICC(3,1), Bland-Altman, precision SD and LSC against R
(psych::ICC(x, lmer = FALSE), base R), the worked example of docs/reliability.md by hand,
the pairing of the inputs, the outputs and bad input; and hu-roi longitudinal --lsc /
--precision (below-lsc-Tk).

Reference: tests/data/r_reference/icc_reference.json, written by
tests/data/r_reference/make_icc_reference.R (R 4.2.2, psych 2.2.9; the versions are in
the file).  R prints 17 significant digits; the comparisons are to 1e-9 (relative, or
absolute for values near 0).
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_main
from r_reference import load_reference

from hu_roi.export import columns
from hu_roi.reliability import (
    CV_MIN_MEAN_HU,
    LSC_FACTOR,
    OUTPUT_NAMES,
    bland_altman,
    icc,
    precision,
)

REF = load_reference("icc_reference.json")
CASES = {c["tag"]: c for c in REF["cases"]}
TOL = 1e-9


def close(a: float, b: float, tol: float = TOL) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(b))


def matrix(case: dict) -> np.ndarray:
    return np.array(case["x"], dtype=float)


# --------------------------------------------------------------------------- against R


def test_reference_covers_two_three_and_four_readers() -> None:
    assert REF["call"] == "psych::ICC(x, lmer = FALSE)"
    assert {c["k"] for c in REF["cases"]} == {2, 3, 4}
    assert any(c["icc2_1"]["ci_low"] < 0 for c in REF["cases"])  # a poor-agreement case
    assert any(0 < c["cv_n"] < c["n"] for c in REF["cases"])  # CV over some subjects only


@pytest.mark.parametrize("tag", sorted(CASES))
def test_icc_matches_psych(tag: str) -> None:
    case = CASES[tag]
    t = icc(matrix(case))
    for name in ("icc2_1", "icc3_1"):
        got, want = getattr(t, name), case[name]
        for f in ("icc", "ci_low", "ci_high", "f", "df1", "df2"):
            assert close(getattr(got, f), want[f]), (tag, name, f, getattr(got, f), want[f])
    for ms in ("msb", "msj", "mse", "msw"):
        assert close(getattr(t, ms), case["ms"][ms]), (tag, ms)


@pytest.mark.parametrize("tag", sorted(CASES))
def test_precision_and_bland_altman_match_r(tag: str) -> None:
    case = CASES[tag]
    x = matrix(case)
    p = precision(x)
    assert close(p.sd, case["precision_sd"])
    assert close(p.sd, case["sqrt_msw"])  # with equal k: √MSW of psych's one-way split
    assert all(close(a, b) for a, b in zip(p.sd_ci, case["precision_sd_ci"], strict=True))
    assert p.cv_n == case["cv_n"]
    assert close(p.cv_percent, case["cv_rms_percent"])
    assert close(LSC_FACTOR * p.sd, case["lsc"])
    if case["k"] == 2:
        ba, want = bland_altman(x[:, 0], x[:, 1]), case["ba"]
        for f in ("bias", "sd_diff", "loa_low", "loa_high"):
            assert close(getattr(ba, f), want[f]), f
        for f in ("bias_ci", "loa_low_ci", "loa_high_ci"):
            assert all(close(a, b) for a, b in zip(getattr(ba, f), want[f], strict=True)), f


def test_worked_example_by_hand() -> None:
    """docs/reliability.md, section "Worked example": every number there."""
    x = matrix(CASES["worked-example"])
    t = icc(x)
    assert (t.msb, t.msj, t.mse, t.msw) == pytest.approx((8487.4, 6.4, 9.4, 8.8), abs=1e-9)
    assert t.icc3_1.icc == pytest.approx(8478 / 8496.8, abs=1e-12)
    assert t.icc2_1.icc == pytest.approx(8478 / 8495.6, abs=1e-12)
    assert t.icc3_1.f == pytest.approx(8487.4 / 9.4, rel=1e-12)
    assert round(t.icc3_1.ci_low, 4) == 0.9789 and round(t.icc3_1.ci_high, 4) == 0.9998
    p = precision(x)
    assert p.sd == pytest.approx(math.sqrt(8.8), abs=1e-12)
    assert round(LSC_FACTOR * p.sd, 2) == 8.22
    assert p.cv_n == 5 and round(p.cv_percent, 2) == 2.98  # the 50-HU subject is kept (≥)
    ba = bland_altman(x[:, 0], x[:, 1])
    assert ba.bias == pytest.approx(-1.6, abs=1e-12)
    assert ba.sd_diff == pytest.approx(math.sqrt(18.8), abs=1e-12)
    assert (round(ba.loa_low, 2), round(ba.loa_high, 2)) == (-10.10, 6.90)


# --------------------------------------------------------------------------- the command


def write_reading(path: Path, rows: list[dict]) -> Path:
    cols = columns()
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return path


def target(pid: str, tp: str, level: str, mean: object, **kw: object) -> dict:
    return {
        "roi_id": f"{pid}-{tp}-{level}",
        "patient_id": pid,
        "timepoint": tp,
        "level": level,
        "irradiated": "true",
        "lesion_type": "none",
        "kind": "target",
        "shape": "ellipse",
        "mean_hu": mean,
        "qc_status": "pass",
        **kw,
    }


LEVELS = ("T11", "T12", "L1", "L2", "L3")


def case_inputs(tmp_path: Path, case: dict) -> list[Path]:
    """One measurement CSV per reader of an R case: subject i = patient P<i//5>, level."""
    x = matrix(case)
    paths = []
    for j in range(case["k"]):
        rows = [
            target(f"P{i // 5:02d}", "T0", LEVELS[i % 5], f"{x[i, j]:.2f}", reader=f"R{j + 1}")
            for i in range(case["n"])
        ]
        rows.reverse()  # pairing must not depend on the order of the rows
        paths.append(write_reading(tmp_path / f"reader{j + 1}.csv", rows))
    return paths


def read_result(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "reliability.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["statistic", "estimate", "ci_low", "ci_high", "n"]
    return {r["statistic"]: r for r in rows}


@pytest.mark.parametrize("tag", ["two-readers-n30", "three-readers-n25", "four-readers-low-hu"])
def test_command_writes_what_r_computes(tmp_path: Path, tag: str) -> None:
    case = CASES[tag]
    out = tmp_path / "rel"
    proc = run_main("reliability", *map(str, case_inputs(tmp_path, case)), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_NAMES)
    res = read_result(out)
    k, n = case["k"], case["n"]
    want = ["icc2_1", "icc3_1"]
    want += ["ba_bias", "ba_loa_low", "ba_loa_high"] if k == 2 else []
    want += ["precision_sd", "cv_rms_percent", "lsc"]
    assert list(res) == want
    for name in ("icc2_1", "icc3_1"):
        for col, f in (("estimate", "icc"), ("ci_low", "ci_low"), ("ci_high", "ci_high")):
            assert close(float(res[name][col]), case[name][f]), (name, col)
        assert res[name]["n"] == str(n)
    assert close(float(res["precision_sd"]["estimate"]), case["precision_sd"])
    assert close(float(res["lsc"]["estimate"]), case["lsc"])
    assert close(float(res["lsc"]["ci_high"]), LSC_FACTOR * case["precision_sd_ci"][1])
    assert close(float(res["cv_rms_percent"]["estimate"]), case["cv_rms_percent"])
    assert res["cv_rms_percent"]["n"] == str(case["cv_n"])
    assert res["cv_rms_percent"]["ci_low"] == ""
    if k == 2:
        ba = case["ba"]
        assert close(float(res["ba_bias"]["estimate"]), ba["bias"])
        assert close(float(res["ba_loa_low"]["ci_low"]), ba["loa_low_ci"][0])
        assert close(float(res["ba_loa_high"]["estimate"]), ba["loa_high"])
    assert f"{n} subjects paired across {k} inputs" in proc.stderr
    assert "without a partner" in proc.stderr and "WARNING" not in proc.stderr
    assert (out / "bland_altman.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "reliability.html").read_text()
    assert "ICC(2,1)" in page and "data:image/png;base64," in page
    assert all(f"reader{j + 1}.csv" in page for j in range(k))
    paired = list(csv.DictReader(open(out / "paired.csv", newline="")))
    assert len(paired) == n and list(paired[0])[3:] == [f"hu_{j + 1}" for j in range(k)]
    assert (paired[0]["patient_id"], paired[0]["level"]) == ("P00", "T11")  # sorted, anatomical


def test_pairing_lists_rows_without_partner_and_counts_left_out_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = write_reading(
        tmp_path / "a.csv",
        [
            target("P1", "T0", "L1", "150.5"),
            target("P1", "T2", "L1", "140.0"),  # partner fails qc in b
            target("P2", "T0", "L1", "90.0"),
            target("P2", "T0", "L2", "95.0"),  # no row in b
            target("P3", "T0", "L1", "88.0", qc_status="fail"),  # left out (qc fail)
            target("P4", "T0", "L1", ""),  # left out (no mean)
            target("P5", "T0", "L1", "77.0", timepoint=""),  # left out (no timepoint)
            {
                "roi_id": "air",
                "patient_id": "P1",
                "kind": "reference-air",
                "mean_hu": "-1000",
                "qc_status": "pass",
            },  # fmt: skip
        ],
    )
    b = write_reading(
        tmp_path / "b.csv",
        [
            target("P1", "T0", "L1", "152.5"),
            target("P1", "T2", "L1", "", qc_status="fail"),
            target("P2", "T0", "L1", "93.0"),
            target("P3", "T0", "L1", "87.0"),  # its partner failed: unpaired
            target("P9", "T3", "S1", "200.0"),  # no row in a
        ],
    )
    out = tmp_path / "rel"
    proc = run_main("reliability", str(a), str(b), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (
        "2 subjects paired across 2 inputs (2 qc fail; 1 without mean_hu; 1 without "
        "timepoint left out); 4 rows without a partner" in proc.stderr
    )
    assert "4 usable target rows without a partner in every input" in caplog.text
    lonely = list(csv.DictReader(open(out / "unpaired.csv", newline="")))
    got = {(r["input"], r["line"], r["roi_id"], r["reason"]) for r in lonely}
    assert got == {
        (str(a), "3", "P1-T2-L1", f"qc_status fail in {b}"),
        (str(a), "5", "P2-T0-L2", f"no row in {b}"),
        (str(b), "5", "P3-T0-L1", f"qc_status fail in {a}"),
        (str(b), "6", "P9-T3-S1", f"no row in {a}"),
    }
    paired = list(csv.DictReader(open(out / "paired.csv", newline="")))
    assert [(r["patient_id"], r["hu_1"], r["hu_2"]) for r in paired] == [
        ("P1", "150.5", "152.5"),
        ("P2", "90.0", "93.0"),
    ]
    res = read_result(out)
    assert float(res["ba_bias"]["estimate"]) == pytest.approx(-2.5)
    assert res["ba_bias"]["n"] == "2"


def test_three_inputs_key_missing_in_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [target(f"P{i}", "T0", "L1", f"{100 + 10 * i}.0") for i in range(4)]
    a = write_reading(tmp_path / "a.csv", rows)
    b = write_reading(tmp_path / "b.csv", rows[:3])
    c = write_reading(tmp_path / "c.csv", rows)
    out = tmp_path / "rel"
    proc = run_main("reliability", str(a), str(b), str(c), "--out", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    lonely = list(csv.DictReader(open(out / "unpaired.csv", newline="")))
    assert [(r["input"], r["reason"]) for r in lonely] == [
        (str(a), f"no row in {b}"),
        (str(c), f"no row in {b}"),
    ]
    assert "hu-roi reliability:" not in proc.stderr  # -q: no summary, the warning stays
    assert "2 usable target rows without a partner" in caplog.text


def test_identical_readings_give_icc_one_and_an_empty_undefined_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file read against itself: no residual and no reader variance.  ICC = 1 and its
    ICC(3,1) interval [1, 1]; the ICC(2,1) interval (Satterthwaite's ν = 0/0) is not
    defined: left empty, not a made-up number; no numpy warning reaches the user."""
    rows = [target(f"P{i}", "T0", "L1", f"{100 + 7 * i * i}.0") for i in range(6)]
    a = write_reading(tmp_path / "a.csv", rows)
    out = tmp_path / "rel"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proc = run_main("reliability", str(a), str(a), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    res = read_result(out)
    assert res["icc3_1"]["estimate"] == "1.0"
    assert (res["icc3_1"]["ci_low"], res["icc3_1"]["ci_high"]) == ("1.0", "1.0")
    assert res["icc2_1"]["estimate"] == "1.0"
    assert (res["icc2_1"]["ci_low"], res["icc2_1"]["ci_high"]) == ("", "")
    assert res["precision_sd"]["estimate"] == "0.0" and res["lsc"]["estimate"] == "0.0"
    assert "Warning" not in proc.stderr
    assert "hold the same readings (identical contents)" in caplog.text


def test_the_command_line_reports_on_stderr(tmp_path: Path) -> None:
    """As a user runs it (a new process): the warnings reach stderr through the CLI's
    logging, the summary follows, and no Python warning leaks."""
    import subprocess
    import sys

    rows = [target(f"P{i}", "T0", "L1", f"{100 + 9 * i}.0") for i in range(4)]
    a = write_reading(tmp_path / "a.csv", rows)
    b = write_reading(
        tmp_path / "b.csv", [dict(r, mean_hu=r["mean_hu"][:-1] + "4") for r in rows[:3]]
    )
    out = tmp_path / "rel"
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "hu_roi.cli", "reliability", str(a), str(b),
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == (
        "hu-roi: WARNING: 1 usable target row without a partner in every input, not used; "
        f"listed in {out / 'unpaired.csv'}"
    )
    assert lines[1].startswith("hu-roi reliability: 3 subjects paired across 2 inputs; 1 row ")
    assert len(lines) == 2


def test_constant_reader_offset_without_noise(tmp_path: Path) -> None:
    """B = A + 5 exactly: consistency is perfect (ICC(3,1) = 1), absolute agreement is
    not; ν = k − 1 in the limit MSE → 0, so the ICC(2,1) interval exists."""
    x = np.array([[100.0, 105.0], [150.0, 155.0], [80.0, 85.0], [210.0, 215.0]])
    t = icc(x)
    assert t.icc3_1.icc == pytest.approx(1.0) and t.icc3_1.ci_low == pytest.approx(1.0)
    assert t.icc2_1.icc < 1 and 0 < t.icc2_1.ci_low < t.icc2_1.icc < t.icc2_1.ci_high <= 1


def test_all_values_equal_leave_icc_empty_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [target(f"P{i}", "T0", "L1", "120.0") for i in range(3)]
    a = write_reading(tmp_path / "a.csv", rows)
    b = write_reading(tmp_path / "b.csv", rows)
    out = tmp_path / "rel"
    proc = run_main("reliability", str(a), str(b), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    res = read_result(out)
    assert res["icc2_1"]["estimate"] == "" and res["icc3_1"]["estimate"] == ""
    assert "icc2_1, icc3_1 not defined for these data" in caplog.text
    assert "ICC(2,1) undefined" in proc.stderr


def test_cv_leaves_out_subjects_near_zero_hu() -> None:
    x = np.array([[10.0, 14.0], [200.0, 204.0], [-300.0, -296.0], [CV_MIN_MEAN_HU - 2, 50.0]])
    p = precision(x)
    # kept: 202 and |−298| (≥ 50); left out: 12 and 49
    assert p.cv_n == 2
    sd2 = 8.0  # every subject differs by 4 HU: SD² = 4²/2
    assert p.cv_percent == pytest.approx(100 * math.sqrt((sd2 / 202**2 + sd2 / 298**2) / 2))
    assert math.isnan(precision(np.array([[1.0, 2.0], [3.0, 5.0]])).cv_percent)


def test_file_names_are_not_read_as_mathematics_in_the_figure() -> None:
    from hu_roi.reliability import _short

    assert _short("/data/a$b$.csv") == r"a\$b\$.csv"  # matplotlib would render b in italics
    assert _short("x" * 40 + ".csv") == "x" * 29 + "…"


def test_text_cells_are_escaped_for_spreadsheets(tmp_path: Path) -> None:
    rows = [target("=HYPERLINK(1)", "T0", "L1", "100.0"), target("P2", "T0", "L1", "90.0"),
            target("P3", "T0", "L1", "80.0")]  # fmt: skip
    a = write_reading(tmp_path / "a.csv", rows)
    b = write_reading(tmp_path / "b.csv", [dict(r, mean_hu=r["mean_hu"][:-1] + "5") for r in rows])
    out = tmp_path / "rel"
    assert run_main("reliability", str(a), str(b), "--out", str(out)).returncode == 0
    assert "'=HYPERLINK(1)" in (out / "paired.csv").read_text()
    raw = tmp_path / "raw"
    assert (
        run_main("reliability", str(a), str(b), "--out", str(raw), "--no-formula-escape").returncode
        == 0
    )
    assert "\n=HYPERLINK(1)," in (raw / "paired.csv").read_text()


# --------------------------------------------------------------------------- bad input


def assert_refused(proc, out: Path, *words: str) -> None:
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert err[0].startswith("hu-roi reliability: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)
    assert not out.exists()


def test_one_input_is_refused(tmp_path: Path) -> None:
    a = write_reading(tmp_path / "a.csv", [target("P1", "T0", "L1", "1.0")])
    out = tmp_path / "rel"
    assert_refused(run_main("reliability", str(a), "--out", str(out)), out, "two or more")


def test_two_usable_rows_for_one_key_are_refused(tmp_path: Path) -> None:
    rows = [target("P1", "T0", "L1", "100.0"), target("P2", "T0", "L1", "90.0")]
    extra = dict(target("P1", "T0", "L1", "101.0", reader="R2"), roi_id="other")
    a = write_reading(tmp_path / "a.csv", rows + [extra])
    b = write_reading(tmp_path / "b.csv", rows)
    out = tmp_path / "rel"
    proc = run_main("reliability", str(a), str(b), "--out", str(out))
    assert_refused(proc, out, "more than one usable target ROI", "P1/T0/L1", "'other'")


def test_fewer_than_two_subjects_are_refused(tmp_path: Path) -> None:
    a = write_reading(tmp_path / "a.csv", [target("P1", "T0", "L1", "100.0"),
                                           target("P2", "T0", "L1", "90.0")])  # fmt: skip
    b = write_reading(tmp_path / "b.csv", [target("P1", "T0", "L1", "100.0")])
    out = tmp_path / "rel"
    proc = run_main("reliability", str(a), str(b), "--out", str(out))
    assert_refused(proc, out, "1 subject ", "at least 2", "1 row without a partner")


def test_bad_csv_and_missing_file_are_refused(tmp_path: Path) -> None:
    a = write_reading(tmp_path / "a.csv", [target("P1", "T0", "L1", "abc")])
    b = write_reading(tmp_path / "b.csv", [target("P1", "T0", "L1", "1.0")])
    out = tmp_path / "rel"
    assert_refused(run_main("reliability", str(a), str(b), "--out", str(out)), out, "mean_hu")
    proc = run_main("reliability", str(b), str(tmp_path / "nope.csv"), "--out", str(out))
    assert_refused(proc, out, "does not exist")


def test_output_folder_holding_an_input_or_foreign_files_is_refused(tmp_path: Path) -> None:
    rows = [target(f"P{i}", "T0", "L1", f"{100 + i}.0") for i in range(3)]
    d = tmp_path / "data"
    d.mkdir()
    a = write_reading(d / "a.csv", rows)
    b = write_reading(tmp_path / "b.csv", rows)
    proc = run_main("reliability", str(a), str(b), "--out", str(d))
    assert proc.returncode == 2 and "refusing to overwrite an input" in proc.stderr
    assert a.exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    proc = run_main("reliability", str(a), str(b), "--out", str(other))
    assert proc.returncode == 2 and "notes.txt" in proc.stderr
    assert (other / "notes.txt").read_text() == "keep"
    # a folder of a previous run is replaced as a whole
    out = tmp_path / "rel"
    assert run_main("reliability", str(a), str(b), "--out", str(out), "-q").returncode == 0
    assert run_main("reliability", str(a), str(b), "--out", str(out), "-q").returncode == 0


# --------------------------------------------------------------------------- longitudinal


def changes(tmp_path: Path) -> Path:
    """P1 L1: +10 HU at T2, +30 HU at T3 (as in test_longitudinal)."""
    return write_reading(
        tmp_path / "m.csv",
        [
            target("P1", "T0", "L1", "100.0"),
            target("P1", "T2", "L1", "110.0"),
            target("P1", "T3", "L1", "130.0"),
        ],
    )


def long_flags(path: Path) -> set[str]:
    rows = list(csv.DictReader(open(path, newline="")))
    assert len(rows) == 1
    return set(filter(None, rows[0]["flags"].split(";")))


def test_longitudinal_lsc_replaces_the_default(tmp_path: Path) -> None:
    m = changes(tmp_path)
    out = tmp_path / "l.csv"
    assert run_main("longitudinal", str(m), "--out", str(out), "-q").returncode == 0
    assert {f for f in long_flags(out) if "lsc" in f} == {"within-lsc-T2"}  # default 16 HU
    proc = run_main("longitudinal", str(m), "--out", str(out), "--lsc", "35")
    assert proc.returncode == 0, proc.stderr
    assert {f for f in long_flags(out) if "lsc" in f} == {"below-lsc-T2", "below-lsc-T3"}
    assert "below-lsc at LSC 35 HU" in proc.stderr
    assert run_main("longitudinal", str(m), "--out", str(out), "--lsc", "8").returncode == 0
    assert not any("lsc" in f for f in long_flags(out))  # |10| and |30| ≥ 8
    assert run_main("longitudinal", str(m), "--out", str(out), "--lsc", "10").returncode == 0
    assert not any("lsc" in f for f in long_flags(out))  # strictly below, as within-lsc


def test_longitudinal_precision_reads_the_lsc_row(tmp_path: Path) -> None:
    case = CASES["two-readers-n30"]  # lsc ≈ 19.5 HU
    rel = tmp_path / "rel"
    sub = tmp_path / "in"
    sub.mkdir()
    assert (
        run_main(
            "reliability", *map(str, case_inputs(sub, case)), "--out", str(rel), "-q"
        ).returncode
        == 0
    )
    m = changes(tmp_path)
    out = tmp_path / "l.csv"
    proc = run_main("longitudinal", str(m), "--out", str(out), "--precision",
                    str(rel / "reliability.csv"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert case["lsc"] > 10 and case["lsc"] < 30
    assert {f for f in long_flags(out) if "lsc" in f} == {"below-lsc-T2"}
    assert f"LSC {case['lsc']:g} HU" in proc.stderr


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "abc"])
def test_longitudinal_bad_lsc_is_refused(tmp_path: Path, value: str) -> None:
    m = changes(tmp_path)
    out = tmp_path / "l.csv"
    proc = run_main("longitudinal", str(m), "--out", str(out), "--lsc", value)
    assert proc.returncode == 2 and "--lsc" in proc.stderr and not out.exists()


@pytest.mark.parametrize(
    "text, words",
    [
        ("statistic,estimate,ci_low,ci_high,n\nicc2_1,0.9,,,3\n", "0 rows named lsc"),
        ("statistic,estimate,ci_low,ci_high,n\nlsc,,,,3\n", "line 2: lsc estimate ''"),
        ("statistic,estimate,ci_low,ci_high,n\nlsc,0.0,0.0,0.0,3\n", "not a number of HU > 0"),
        ("a,b\n1,2\n", "expected the columns statistic,estimate"),
    ],
)
def test_longitudinal_bad_precision_file_is_refused(tmp_path: Path, text: str, words: str) -> None:
    m = changes(tmp_path)
    p = tmp_path / "reliability.csv"
    p.write_text(text)
    out = tmp_path / "l.csv"
    proc = run_main("longitudinal", str(m), "--out", str(out), "--precision", str(p))
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert proc.stderr.startswith("hu-roi longitudinal: error:") and not out.exists()


def test_longitudinal_lsc_and_precision_exclude_each_other(tmp_path: Path) -> None:
    m = changes(tmp_path)
    proc = run_main("longitudinal", str(m), "--lsc", "5", "--precision", str(m))
    assert proc.returncode == 2 and "not allowed with" in proc.stderr
