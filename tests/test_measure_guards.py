"""``hu-roi measure`` guards: ROI and series of different patients, targets without
timepoint/level, malformed ``--scheduler``, non-finite HU, echoed values, and the rescale of
every slice read.  Real DICOM written with pydicom (tests/dicom_factory.py; its PatientID
is ``TEST``)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from hu_roi.batch import BatchInputError, measure_batch
from hu_roi.measure import measure_roi
from hu_roi.parallel import check_scheduler_address, connect_scheduler, map_tasks
from hu_roi.roi import Roi, RoiSet, save_roiset
from hu_roi.util import show
from hu_roi.volume import Volume
from tests.cli_helpers import run_main
from tests.dicom_factory import write_ct_series

REPO = Path(__file__).resolve().parents[1]
UID = "1.2.826.0.1.3680043.10.1234.9.8888"


def _roi(rid: str, z: float = 2.0, **kw) -> Roi:
    d = {
        "roi_id": rid,
        "patient_id": "TEST",
        "timepoint": "T0",
        "level": "L1",
        "kind": "target",
        "series_instance_uid": UID,
        "shape": {"type": "circle", "center_mm": [9.5, 9.5, z], "radius_mm": 5.0},
    }
    d.update(kw)
    return Roi.from_dict({k: v for k, v in d.items() if v is not None})


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("guards") / "dicom"
    write_ct_series(d, np.full((5, 20, 20), 150.0), slice_positions=[0, 2, 4, 6, 8], series_uid=UID)
    return d


def _rois_file(tmp_path: Path, *rois: Roi) -> Path:
    f = tmp_path / "r.rois.json"
    save_roiset(RoiSet(rois=tuple(rois), reader="R1"), f, overwrite=True)
    return f


def _csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["roi_id"]: r for r in csv.DictReader(fh)}


# ------------------------------------------------------------------ patient mismatch
def test_roi_of_another_patient_is_a_fail_row(series, tmp_path):
    long_id = "P" * 250  # the ROI loader refuses IDs over 256 characters
    f = _rois_file(
        tmp_path,
        _roi("same"),
        _roi("other", patient_id="P02"),
        _roi("no-id", patient_id=""),
        _roi("long", patient_id=long_id),
        _roi("spaces", patient_id=" TEST "),
    )
    rows = {m.roi_id: m for m in measure_batch(series, f).measurements}
    assert rows["same"].qc_status == "pass" and rows["same"].mean_hu == 150.0
    m = rows["other"]
    assert m.qc_status == "fail" and m.qc_flags[0] == "patient-mismatch"
    assert "'P02'" in m.detail and "'TEST'" in m.detail and math.isnan(m.mean_hu)
    assert m.patient_id == "P02" and m.series_instance_uid == UID  # names both sides
    assert rows["no-id"].qc_status == "pass" and rows["no-id"].patient_id == "TEST"
    assert rows["long"].qc_flags[0] == "patient-mismatch"
    assert len(rows["long"].detail) < 300 and long_id not in rows["long"].detail
    assert rows["spaces"].qc_status == "pass"


def test_pseudonym_map_links_study_codes_to_dicom_ids(series, tmp_path):
    f = _rois_file(
        tmp_path,
        _roi("code", patient_id="S001"),
        _roi("wrong-code", patient_id="S002"),
        _roi("dicom-id", patient_id="TEST"),
    )
    pmap = tmp_path / "map.csv"
    pmap.write_text("patient_id,study_code\nTEST,S001\nOTHER,S002\n")
    out = tmp_path / "m.csv"
    args = ["measure", "--dicom", str(series), "--rois", str(f), "--out", str(out), "--quiet"]
    assert run_main(*args).returncode == 0
    rows = _csv(out)
    assert rows["code"]["qc_flags"].split(";")[0] == "patient-mismatch"  # no map: refused
    proc = run_main(*args, "--pseudonym-map", str(pmap))
    assert proc.returncode == 0, proc.stderr
    rows = _csv(out)
    assert rows["code"]["qc_status"] == "pass" and rows["code"]["patient_id"] == "S001"
    assert float(rows["code"]["mean_hu"]) == 150.0
    assert rows["dicom-id"]["qc_status"] == "pass"
    w = rows["wrong-code"]
    assert w["qc_status"] == "fail" and w["qc_flags"].split(";")[0] == "patient-mismatch"
    assert "'S002'" in w["detail"] and "'S001'" in w["detail"]
    meta = json.loads((tmp_path / "m.csv.meta.json").read_text())
    assert meta["settings"]["pseudonym_map"] is True
    # a map without the series' PatientID: every code fails, saying so
    pmap.write_text("patient_id,study_code\nOTHER,S001\n")
    assert run_main(*args, "--pseudonym-map", str(pmap)).returncode == 0
    assert "not in the pseudonym map" in _csv(out)["code"]["detail"]
    # an unreadable map: exit 2, one line, nothing written
    out.unlink()
    proc = run_main(*args, "--pseudonym-map", str(tmp_path / "missing.csv"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("hu-roi measure: error:") and not out.exists()


# ------------------------------------------------------------------ labels
def test_targets_without_timepoint_or_level_are_flagged_and_counted(series, tmp_path):
    f = _rois_file(
        tmp_path,
        _roi("full"),
        _roi("no-tp", timepoint=None),
        _roi("no-level", level=None),
        _roi("neither", timepoint=None, level=None),
        _roi("air", kind="reference-air", level=None, timepoint=None),
    )
    out = tmp_path / "m.csv"
    proc = run_main("measure", "--dicom", str(series), "--rois", str(f), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = _csv(out)
    flags = {k: set(r["qc_flags"].split(";")) - {""} for k, r in rows.items()}
    assert not flags["full"] & {"no-timepoint", "no-level"}
    assert flags["no-tp"] >= {"no-timepoint"} and "no-level" not in flags["no-tp"]
    assert flags["no-level"] >= {"no-level"} and "no-timepoint" not in flags["no-level"]
    assert flags["neither"] >= {"no-timepoint", "no-level"}
    assert not flags["air"] & {"no-timepoint", "no-level"}
    for k in ("no-tp", "no-level", "neither"):
        assert rows[k]["qc_status"] == "warn" and float(rows[k]["mean_hu"]) == 150.0
    summary = proc.stderr.splitlines()[0]
    assert "3 target ROIs without timepoint or level" in summary, proc.stderr


# ------------------------------------------------------------------ --scheduler
@pytest.mark.parametrize("address", ["nonsense://x", "127.0.0.1:notaport", "", "tcp://h"])
def test_malformed_scheduler_is_one_line_before_any_work(series, tmp_path, address):
    f = _rois_file(tmp_path, _roi("a"))
    out = tmp_path / "m.csv"
    code = (
        "import sys, time\n"
        "from hu_roi.cli import main\n"
        "t = time.perf_counter()\n"
        f"rc = main(['measure', '--dicom', {str(series)!r}, '--rois', {str(f)!r}, "
        f"'--out', {str(out)!r}, '--scheduler', {address!r}])\n"
        "print(rc, 'distributed' in sys.modules, round(time.perf_counter() - t, 3))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    rc, imported, seconds = proc.stdout.split()
    assert rc == "2" and imported == "False", (proc.stdout, proc.stderr)
    assert float(seconds) < 5
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hu-roi measure: error: --scheduler"), lines
    assert not out.exists()


def test_scheduler_address_check_and_bounded_connect(series, tmp_path):
    assert check_scheduler_address("10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert check_scheduler_address("tls://[::1]:8786") == "tls://[::1]:8786"
    for bad in ("nonsense://x", "127.0.0.1:notaport", "host:0", "host:99999", "a b:1"):
        with pytest.raises(ValueError):
            check_scheduler_address(bad)
    with pytest.raises(ValueError, match="unknown protocol"):
        map_tasks(abs, [1], scheduler="nonsense://x")
    # the API refuses it before indexing (the folder does not even exist)
    with pytest.raises(BatchInputError, match="--scheduler"):
        measure_batch(tmp_path / "no-such-folder", tmp_path, scheduler="127.0.0.1:notaport")
    pytest.importorskip("distributed")
    t = time.perf_counter()
    with pytest.raises(OSError, match="cannot reach the dask scheduler"):
        connect_scheduler("127.0.0.1:9", timeout_s=1.0)  # discard port: nobody listens
    assert time.perf_counter() - t < 30


# ------------------------------------------------------------------ non-finite HU
def _volume(values: np.ndarray) -> Volume:
    return Volume(
        hu=values,
        orientation=np.array([[1.0, 0, 0], [0, 1.0, 0]]),
        pixel_spacing_mm=(1.0, 1.0),
        slice_origins_lps_mm=np.array([[0.0, 0.0, 2.0 * k] for k in range(values.shape[0])]),
    )


@pytest.mark.parametrize(
    "value, reason",
    [
        (np.inf, "not finite numbers"),
        (np.nan, "not finite numbers"),
        (1e300, "overflow"),  # finite values, squares beyond float range
        (-1e300, "overflow"),
    ],
)
def test_non_finite_statistics_are_a_fail_row_without_warnings(value, reason):
    hu = np.full((3, 20, 20), 100.0)
    hu[1, 8:12, 8:12] = value
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = measure_roi(_volume(hu), _roi("x", 2.0))
    assert not caught, [str(w.message) for w in caught]
    assert m.qc_status == "fail" and m.qc_flags[0] == "non-finite-hu", m.qc_flags
    assert reason in m.detail and m.n_voxels == 0 and math.isnan(m.mean_hu)
    # an ROI beside the bad voxels is measured
    ok = measure_roi(
        _volume(hu),
        _roi("y", 2.0, shape={"type": "circle", "center_mm": [3.0, 3.0, 2.0], "radius_mm": 2.0}),
    )
    assert ok.qc_status != "fail" and ok.mean_hu == 100.0


def test_huge_rescale_slope_through_measure_is_a_fail_row_and_silent(tmp_path):
    d = tmp_path / "dicom"
    write_ct_series(
        d,
        np.full((3, 20, 20), 150.0),
        slice_positions=[0, 2, 4],
        series_uid=UID,
        extra_tags={"RescaleSlope": lambda i: 1e300 if i == 1 else 1.0},
    )
    f = _rois_file(tmp_path, _roi("hit", 2.0), _roi("spared", 0.0))
    out = tmp_path / "m.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", "measure", "--dicom", str(d), "--rois", str(f),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    rows = _csv(out)
    hit = rows["hit"]
    assert hit["qc_status"] == "fail" and hit["mean_hu"] == "" and hit["n_voxels"] == "0"
    assert hit["detail"], hit
    assert rows["spared"]["qc_status"] != "fail" and float(rows["spared"]["mean_hu"]) == 150.0


# ------------------------------------------------------------------ echoed values
def test_show_cuts_and_escapes():
    assert show("a\nb") == "'a\\nb'"
    assert len(show("x" * 3_000_000)) == 80
    assert "\n" not in show("\n" * 500) and len(show("\n" * 500)) <= 80
    assert show(10**5000) == "<int too large to show>"


def test_roi_id_echoed_in_the_summary_forges_no_line(series, tmp_path):
    # the ROI loader refuses control characters; U+2028 (a line break for many tools and
    # for str.splitlines) and U+202E (right-to-left override) pass it
    forged = "x\u2028hu-roi measure: 1 ROIs (1 pass, 0 warn, 0 fail) on 1 series\u202e"
    long_id = "y" * 256
    f = _rois_file(
        tmp_path,
        _roi(forged, z=500.0),  # outside the stack: a fail row echoed in the summary
        _roi(long_id, z=500.0),
    )
    out = tmp_path / "m.csv"
    proc = run_main("measure", "--dicom", str(series), "--rois", str(f), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert sum(ln.startswith("hu-roi measure:") for ln in lines) == 1, lines
    assert "\u2028" not in proc.stderr and "\u202e" not in proc.stderr
    assert all(len(ln) < 160 for ln in lines), [len(ln) for ln in lines]
    rows = _csv(out)
    for rid in (forged, long_id):
        d = rows[rid]["detail"]
        assert "\u2028" not in d and long_id not in d and len(d) < 400, d
    # a newline in an roi_id is refused when the ROI file is read: one line, exit 2
    bad = tmp_path / "bad.rois.json"
    data = json.loads(f.read_text())
    data["rois"][0]["roi_id"] = "a\nhu-roi measure: forged"
    bad.write_text(json.dumps(data))
    proc = run_main("measure", "--dicom", str(series), "--rois", str(bad), "--out", str(out))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ------------------------------------------------------------------ rescale of every slice
def test_rescale_unusual_looks_at_every_slice_read(tmp_path):
    d = tmp_path / "dicom"
    # slice 3 (z = 6 mm) has an unusual intercept; the index sees slice 0's only
    write_ct_series(
        d,
        np.full((5, 20, 20), 150.0),
        slice_positions=[0, 2, 4, 6, 8],
        series_uid=UID,
        extra_tags={"RescaleIntercept": lambda i: 2000.0 if i == 3 else -1024.0},
        file_names="sequential",  # the index's header facts come from IM0001 (slice 0)
    )
    from hu_roi.io import index_folder

    assert index_folder(d).series[0].rescale_intercept == -1024.0  # the index sees slice 0
    f = _rois_file(tmp_path, _roi("on-3", 6.0))
    m = measure_batch(d, f).measurements[0]
    assert "rescale-unusual" in m.qc_flags, m.qc_flags
    # a scan flag: every ROI of the scan gets it once that slice is read
    f = _rois_file(tmp_path, _roi("on-1", 2.0), _roi("on-3", 6.0))
    ms = measure_batch(d, f).measurements
    assert all("rescale-unusual" in m.qc_flags for m in ms), [m.qc_flags for m in ms]
    # slice 3 not read: nothing unusual was read
    f = _rois_file(tmp_path, _roi("on-1", 2.0))
    assert "rescale-unusual" not in measure_batch(d, f).measurements[0].qc_flags
