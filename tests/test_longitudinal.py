"""hu-roi longitudinal: values by hand from a small measurement CSV, every flag of
hu_roi.longitudinal fired and kept quiet, the table conforms to LONGITUDINAL_SCHEMA, and
the command's exit codes."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from hu_roi.analysis.schemas import LONGITUDINAL_SCHEMA, read_longitudinal
from hu_roi.cli import main
from hu_roi.export import columns
from hu_roi.longitudinal import (
    LSC_HU,
    UNSTABLE_BASELINE_HU,
    longitudinal_table,
    read_measurement_targets,
)


def write_measurements(path: Path, rows: list[dict]) -> Path:
    cols = columns()
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    return path


def row(pid, level, tp, mean, status="pass", flags="", kind="target", reader="R1", **kw):
    return {
        "roi_id": f"{pid}-{tp}-{level}",
        "patient_id": pid,
        "timepoint": tp,
        "level": level,
        "irradiated": "true",
        "lesion_type": "osteolytic",
        "kind": kind,
        "mean_hu": mean,
        "qc_status": status,
        "qc_flags": flags,
        "reader": reader,
        "shape": "ellipse",
        **kw,
    }


@pytest.fixture
def table(tmp_path):
    rows = [
        row("P1", "L1", "T0", "100"),
        row("P1", "L1", "T1", "110"),  # +10: within LSC
        row("P1", "L1", "T2", "130", status="warn", flags="kvp-differs-from-T0"),  # +30
        row("P1", "L1", "T3", "", status="fail", flags="roi-outside-image"),
        row("P2", "T12", "T0", "40"),  # unstable baseline
        row("P2", "T12", "T2", "56"),  # +16 = LSC exactly: not within
        row(
            "P2",
            "T12",
            "T3",
            "70",
            flags="kernel-differs-from-T0;contrast-differs-from-T0",
            status="warn",
        ),
        row("P3", "L2", "T2", "200"),  # no baseline
        # reference ROIs without timepoint/level are ignored, not an error
        {
            "roi_id": "air",
            "patient_id": "P1",
            "kind": "reference-air",
            "mean_hu": "-1000",
            "qc_status": "pass",
        },
    ]
    p = write_measurements(tmp_path / "m.csv", rows)
    return p, longitudinal_table(read_measurement_targets(p))


def get(t, pid, level):
    r = t.loc[(t.patient_id == pid) & (t.level == level)]
    assert len(r) == 1
    return r.iloc[0]


def flags(r):
    return set(filter(None, str(r["flags"]).split(";")))


def test_values(table):
    _, t = table
    assert list(t.columns[: len(LONGITUDINAL_SCHEMA.names)]) == list(LONGITUDINAL_SCHEMA.names)
    r = get(t, "P1", "L1")
    assert (r.hu_T0, r.hu_T1, r.hu_T2) == (100.0, 110.0, 130.0)
    assert r.delta_hu_T1 == 10.0 and r.pct_delta_T1 == 10.0
    assert r.delta_hu_T2 == 30.0 and r.pct_delta_T2 == 30.0
    assert r.hu_T3 != r.hu_T3  # NaN: failed measurement not used
    r2 = get(t, "P2", "T12")
    assert r2.delta_hu_T2 == 16.0 and r2.pct_delta_T2 == 40.0


def test_flags_fire_and_stay_quiet(table):
    _, t = table
    p1 = flags(get(t, "P1", "L1"))
    p2 = flags(get(t, "P2", "T12"))
    p3 = flags(get(t, "P3", "L2"))
    # LSC: |10| < 16 fires at T1; |30| and |16| (not strictly below) stay quiet
    assert LSC_HU == 16.0
    assert "within-lsc-T1" in p1 and "within-lsc-T2" not in p1
    assert "within-lsc-T2" not in p2 and "within-lsc-T3" not in p2  # +30 at T3
    # unstable percent: |40| < 50 fires, |100| quiet
    assert UNSTABLE_BASELINE_HU == 50.0
    assert "pct-unstable" in p2 and "pct-unstable" not in p1
    # carried technical differences, with their timepoint
    assert "kvp-differs-T2" in p1 and "kvp-differs-T1" not in p1
    assert {"kernel-differs-T3", "contrast-differs-T3"} <= p2 and "kvp-differs-T3" not in p2
    # schema flags still there
    assert "qc-fail-T3" in p1 and "qc-warn-T2" in p1
    assert "no-baseline" in p3 and not any(f.startswith("within-lsc") for f in p3)


def test_cli_writes_schema_conformant_csv(table, tmp_path, capsys):
    p, t = table
    out = tmp_path / "long.csv"
    assert main(["longitudinal", str(p), "--out", str(out), "--quiet"]) == 0
    back = read_longitudinal(out)  # validates against LONGITUDINAL_SCHEMA
    assert len(back) == len(t) == 3
    r = back.loc[back.patient_id == "P1"].iloc[0]
    assert r.delta_hu_T2 == 30.0 and "kvp-differs-T2" in r["flags"]
    assert bool(r.irradiated) is True


def test_cli_errors(tmp_path, capsys):
    assert main(["longitudinal", str(tmp_path / "missing.csv")]) == 2
    assert "error" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["longitudinal", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hu-roi longitudinal: error:") and len(err.splitlines()) == 1


def test_empty_measurements_give_header_only(tmp_path):
    p = write_measurements(tmp_path / "m.csv", [])
    out = tmp_path / "l.csv"
    assert main(["longitudinal", str(p), "--out", str(out), "--quiet"]) == 0
    assert out.read_text().splitlines() == [",".join(LONGITUDINAL_SCHEMA.names)]
