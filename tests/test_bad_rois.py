"""Bad ROI files and ROIs that cannot be measured: exact errors and rows.

Two levels, as ``docs/safety.md`` promises:

* an ROI **file** that cannot be used (not JSON, wrong format name or version, an ROI with
  an unknown shape, a missing field, NaN/inf, a negative radius, a polygon off its plane,
  …) is refused as a whole: :func:`hu_roi.roi.load_roiset` raises
  :class:`~hu_roi.errors.RoiFormatError` whose one-line message names the file, the ROI and
  the field; ``hu-roi measure`` exits 2 with that line on stderr and writes nothing;
* a valid ROI that cannot be **measured** (outside the image, off the slices, tilted, on a
  tie between two slices, absurdly large, series missing) is a row with
  ``qc_status=fail`` and the reason code in ``qc_flags``; the batch goes on.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_main as _run_main
from dicom_factory import write_ct_series

from hu_roi.errors import HuRoiError, RoiFormatError
from hu_roi.roi import load_roiset

REPO = Path(__file__).resolve().parents[1]
UID = "1.2.826.0.1.3680043.10.1234.9.777"
#: Centre of the phantom's middle (24 x 24, 0.8 mm) image on slice z = 1 mm.
C = [9.2, 9.2, 1.0]


def _roi(rid: str, shape: dict, **kw) -> dict:
    d = {
        "roi_id": rid,
        "patient_id": "TEST",
        "timepoint": "T0",
        "series_instance_uid": UID,
        "level": "L3",
        "irradiated": False,
        "lesion_type": "none",
        "kind": "target",
        "shape": shape,
    }
    d.update(kw)
    return d


def _set(*rois: dict, **top) -> str:
    d = {"format": "hu-roi.roiset", "version": 1, "reader": "R1", "rois": list(rois)}
    d.update(top)
    return json.dumps(d)


CIRCLE = {"type": "circle", "center_mm": C, "radius_mm": 5.0}

#: (case, file content, ROI named in the message or None, field named or None, pattern)
BAD_FILES: list[tuple[str, str | bytes, str | None, str | None, str]] = [
    ("empty", "", None, None, "not a JSON file"),
    ("not_json", "roi_id,center\nA,1 2 3\n", None, None, "not a JSON file"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", None, None, "not a JSON file"),
    ("truncated_json", _set(_roi("A", CIRCLE))[:-20], None, None, "not a JSON file"),
    ("top_level_list", "[1, 2, 3]", None, None, "top level must be a JSON object"),
    ("wrong_format", _set(_roi("A", CIRCLE), format="hu-roi.rois"), None, "format", "must be"),
    ("no_format", json.dumps({"version": 1, "rois": []}), None, "format", "must be"),
    ("future_version", _set(_roi("A", CIRCLE), version=2), None, "version", "not supported"),
    ("rois_not_list", _set(rois={}), None, "rois", "must be a list"),
    ("roi_not_object", _set("A"), None, None, r"ROI #0: must be a JSON object"),
    ("missing_roi_id", _set({"patient_id": "P", "shape": CIRCLE}), None, "roi_id", "missing"),
    (
        "duplicate_roi_id",
        _set(_roi("A", CIRCLE), _roi("A", CIRCLE)),
        "A",
        "roi_id",
        "duplicated",
    ),
    (
        "missing_patient_id",
        _set({"roi_id": "A", "shape": CIRCLE}),
        "A",
        "patient_id",
        "missing",
    ),
    ("missing_shape", _set({"roi_id": "A", "patient_id": "P"}), "A", "shape", "missing"),
    (
        "unknown_shape_type",
        _set(_roi("A", {"type": "hexagon", "center_mm": C})),
        "A",
        "shape.type",
        "unknown shape type 'hexagon'",
    ),
    (
        "shape_type_not_a_string",
        _set(_roi("A", {"type": ["circle"], "center_mm": C, "radius_mm": 5})),
        "A",
        "shape.type",
        "unknown shape type",
    ),
    (
        "circle_without_radius",
        _set(_roi("A", {"type": "circle", "center_mm": C})),
        "A",
        "shape.radius_mm",
        "missing",
    ),
    (
        "ellipse_without_radii",
        _set(_roi("A", {"type": "ellipse", "center_mm": C, "radius_mm": 3})),
        "A",
        "shape.radii_mm",
        "missing",
    ),
    (
        "polygon_without_points",
        _set(_roi("A", {"type": "polygon", "center_mm": C})),
        "A",
        "shape.points_mm",
        "missing",
    ),
    (
        "nan_centre",
        _set(_roi("A", dict(CIRCLE, center_mm=[float("nan"), 0, 0]))),
        "A",
        "shape.center_mm",
        "finite",
    ),
    (
        "inf_radius",
        _set(_roi("A", dict(CIRCLE, radius_mm=float("inf")))),
        "A",
        "shape.radius_mm",
        "finite",
    ),
    (
        "overflowing_number",  # 1e400 parses as inf
        _set(_roi("A", CIRCLE)).replace('"radius_mm": 5.0', '"radius_mm": 1e400'),
        "A",
        "shape.radius_mm",
        "finite",
    ),
    (
        "negative_radius",
        _set(_roi("A", dict(CIRCLE, radius_mm=-2.0))),
        "A",
        "shape.radius_mm",
        "must be > 0",
    ),
    (
        "zero_radius",
        _set(_roi("A", dict(CIRCLE, radius_mm=0))),
        "A",
        "shape.radius_mm",
        "must be > 0",
    ),
    (
        "negative_ellipse_radius",
        _set(_roi("A", {"type": "ellipse", "center_mm": C, "radii_mm": [3, -1]})),
        "A",
        "shape.radii_mm",
        "must be > 0",
    ),
    (
        "radius_is_text",
        _set(_roi("A", dict(CIRCLE, radius_mm="5 mm"))),
        "A",
        "shape.radius_mm",
        "must be a number",
    ),
    (
        "radius_is_bool",
        _set(_roi("A", dict(CIRCLE, radius_mm=True))),
        "A",
        "shape.radius_mm",
        "must be a number",
    ),
    (
        "centre_2d",
        _set(_roi("A", dict(CIRCLE, center_mm=[1, 2]))),
        "A",
        "shape.center_mm",
        "list of 3 numbers",
    ),
    (
        "polygon_not_planar",
        _set(
            _roi(
                "A",
                {
                    "type": "polygon",
                    "points_mm": [[0, 0, 1], [10, 0, 1], [10, 10, 1], [0, 10, 4]],
                },
            )
        ),
        "A",
        "shape.points_mm",
        "not on one plane",
    ),
    (
        "polygon_collinear",
        _set(_roi("A", {"type": "polygon", "points_mm": [[0, 0, 1], [1, 1, 1], [2, 2, 1]]})),
        "A",
        "shape.points_mm",
        "collinear",
    ),
    (
        "polygon_two_points",
        _set(_roi("A", {"type": "polygon", "points_mm": [[0, 0, 1], [1, 1, 1]]})),
        "A",
        "shape.points_mm",
        "at least 3 points",
    ),
    ("bad_level", _set(_roi("A", CIRCLE, level="L9")), "A", "level", "must be"),
    ("bad_timepoint", _set(_roi("A", CIRCLE, timepoint="T7")), "A", "timepoint", "must be"),
    ("bad_kind", _set(_roi("A", CIRCLE, kind="bone")), "A", "kind", "must be"),
    ("bad_irradiated", _set(_roi("A", CIRCLE, irradiated="yes")), "A", "irradiated", "must be"),
    (
        "deeply_nested",
        '{"format": "hu-roi.roiset", "version": 1, "rois": ['
        + "[" * 100_000
        + "]" * 100_000
        + "]}",
        None,
        None,
        "(not a JSON file|too deeply nested|nest)",
    ),
]


@pytest.mark.parametrize(
    ("case", "content", "roi_id", "fld", "pattern"), BAD_FILES, ids=[c[0] for c in BAD_FILES]
)
def test_bad_roi_file_is_refused_naming_roi_and_field(
    tmp_path: Path, case: str, content, roi_id, fld, pattern
) -> None:
    path = tmp_path / f"{case}.rois.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(RoiFormatError) as ei:
        load_roiset(path)
    msg = str(ei.value)
    assert "\n" not in msg and len(msg) < 600, msg
    assert str(path) in msg, "the message names the file"
    if roi_id is not None:
        assert f"ROI {roi_id!r}" in msg, msg
    if fld is not None:
        assert f"field {fld!r}" in msg, msg
    import re

    assert re.search(pattern, msg), msg


# ---------------------------------------------------------------------------------------
# command line: an unusable ROI file stops the run with one line, exit 2, nothing written
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("phantom")
    write_ct_series(
        folder / "dicom", np.full((4, 24, 24), 40.0), pixel_spacing=(0.8, 0.8), series_uid=UID
    )
    return folder / "dicom"


def _hu_roi(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)  # HU_ROI_CACHE_DIR: the session's private cache (conftest.py)
    return subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )


@pytest.mark.parametrize(
    ("case", "roi_id", "fld"),
    [
        ("not_json", None, None),
        ("wrong_format", None, "format"),
        ("negative_radius", "A", "shape.radius_mm"),
        ("polygon_not_planar", "A", "shape.points_mm"),
        ("shape_type_not_a_string", "A", "shape.type"),
        ("deeply_nested", None, None),
    ],
)
def test_cli_measure_refuses_unusable_roi_file(
    tmp_path: Path, phantom: Path, case: str, roi_id, fld
) -> None:
    content = next(c[1] for c in BAD_FILES if c[0] == case)
    roi_file = tmp_path / f"{case}.rois.json"
    roi_file.write_text(content)  # type: ignore[arg-type]
    out = tmp_path / "m.csv"
    out.write_text("previous results\n")
    proc = _run_main("measure", "--dicom", str(phantom), "--rois", str(roi_file), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hu-roi measure: error: ") and str(roi_file) in lines[0]
    if roi_id:
        assert f"ROI {roi_id!r}" in lines[0]
    if fld:
        assert f"field {fld!r}" in lines[0]
    assert out.read_text() == "previous results\n", "a failed run must not touch the output"


def test_cli_measure_folder_with_one_bad_file(tmp_path: Path, phantom: Path) -> None:
    """One unusable file in an ROI folder stops the run and names that file."""
    (tmp_path / "rois").mkdir()
    (tmp_path / "rois" / "a.rois.json").write_text(_set(_roi("A", CIRCLE)))
    bad = tmp_path / "rois" / "b.rois.json"
    bad.write_text(_set(_roi("B", dict(CIRCLE, radius_mm=-1))))
    proc = _run_main("measure", "--dicom", str(phantom), "--rois", str(tmp_path / "rois"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "ROI 'B'" in lines[0], proc.stderr


# ---------------------------------------------------------------------------------------
# valid ROIs that cannot be measured: fail rows, the batch goes on
# ---------------------------------------------------------------------------------------
#: roi_id -> (shape, expected qc flag code)
UNMEASURABLE: dict[str, tuple[dict, str]] = {
    "far_in_plane": ({"type": "circle", "center_mm": [5000, 5000, 1], "radius_mm": 5}, "roi-outside-image"),
    "far_along_normal": ({"type": "circle", "center_mm": [9.2, 9.2, 500], "radius_mm": 5}, "roi-outside-image"),
    "between_two_slices": ({"type": "circle", "center_mm": [9.2, 9.2, 1.5], "radius_mm": 5}, "roi-slice-tie"),
    "tilted_polygon": (
        {"type": "polygon", "points_mm": [[0, 0, 0], [10, 0, 2], [10, 10, 2], [0, 10, 0]]},
        "roi-not-parallel",
    ),
    "smaller_than_a_voxel": ({"type": "circle", "center_mm": [9.3, 9.3, 1], "radius_mm": 1e-6}, "roi-outside-image"),
    "huge_circle": ({"type": "circle", "center_mm": C, "radius_mm": 1e6}, "roi-too-large"),
    "huge_ellipse": ({"type": "ellipse", "center_mm": C, "radii_mm": [1e308, 1e-308], "angle_deg": 1e308}, "roi-too-large"),
    "huge_polygon": (
        {"type": "polygon", "points_mm": [[-1e300, -1e300, 1], [1e300, -1e300, 1], [1e300, 1e300, 1]]},
        "roi-too-large",
    ),
    "largest_float_circle": ({"type": "circle", "center_mm": C, "radius_mm": 1e308}, "roi-too-large"),
    "largest_float_sphere": ({"type": "sphere", "center_mm": C, "radius_mm": 1e308}, "roi-too-large"),
}  # fmt: skip


def test_unmeasurable_rois_are_fail_rows(tmp_path: Path, phantom: Path) -> None:
    from hu_roi.batch import measure_batch

    rois = [_roi("ok", CIRCLE)]
    rois += [_roi(rid, shape) for rid, (shape, _) in UNMEASURABLE.items()]
    rois.append(_roi("no_series", CIRCLE, series_instance_uid="1.2.3.999"))
    f = tmp_path / "x.rois.json"
    f.write_text(_set(*rois))
    rows = {m.roi_id: m for m in measure_batch(phantom, f).measurements}
    assert list(rows) == [r["roi_id"] for r in rois], "one row per ROI, in file order"
    assert rows["ok"].qc_status == "pass" and rows["ok"].mean_hu == 40.0
    for rid, (_, code) in UNMEASURABLE.items():
        m = rows[rid]
        assert m.qc_status == "fail", (rid, m.qc_flags)
        assert m.qc_flags[0] == code, (rid, m.qc_flags, m.detail)
        assert m.n_voxels == 0 and np.isnan(m.mean_hu)
        assert "\n" not in (m.detail or "")
    assert rows["no_series"].qc_flags[0] == "series-not-found"


def test_cli_measure_fail_rows_exit_0(tmp_path: Path, phantom: Path) -> None:
    """Failed ROIs are rows, not crashes: exit 0, the CSV has every ROI."""
    f = tmp_path / "x.rois.json"
    rois = [_roi("ok", CIRCLE)]
    rois += [_roi(rid, shape) for rid, (shape, _) in UNMEASURABLE.items()]
    f.write_text(_set(*rois))
    out = tmp_path / "m.csv"
    proc = _hu_roi("measure", "--dicom", str(phantom), "--rois", str(f), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["roi_id"] for r in rows] == [r["roi_id"] for r in rois]
    assert [r["qc_status"] for r in rows] == ["pass"] + ["fail"] * len(UNMEASURABLE)


def test_errors_are_hu_roi_errors() -> None:
    """What the CLI catches: RoiFormatError is a HuRoiError and a ValueError."""
    assert issubclass(RoiFormatError, HuRoiError) and issubclass(RoiFormatError, ValueError)


# ---------------------------------------------------------------------------------------
# ROI "files" that are not ordinary small files
# ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_cli_measure_roi_file_is_a_named_pipe(tmp_path: Path, phantom: Path) -> None:
    """Reading a FIFO blocks forever: it must be refused, not read."""
    fifo = tmp_path / "pipe.rois.json"
    os.mkfifo(fifo)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hu_roi.cli", "measure", "--dicom", str(phantom), "--rois",
             str(fifo)],
            capture_output=True, text=True, timeout=20, cwd=REPO,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("hu-roi measure blocked on a named pipe given as ROI file")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(fifo) in lines[0], proc.stderr


_BIG_ROI_CHILD = """
import json, sys
from hu_roi.errors import HuRoiError
from hu_roi.roi import load_roiset
def peak_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
base = peak_mb()
try:
    load_roiset(sys.argv[1])
    err = ""
except HuRoiError as exc:
    err = str(exc)
print(json.dumps({"error": err, "growth_mb": peak_mb() - base}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_huge_roi_file_refused_before_reading(tmp_path: Path) -> None:
    """A 1 GiB (sparse) file named *.rois.json is refused without reading it into memory."""
    big = tmp_path / "huge.rois.json"
    with open(big, "wb") as fh:
        fh.write(b'{"format": "hu-roi.roiset", "version": 1, "rois": [')
        fh.truncate(1024**3)
    proc = subprocess.run(
        [sys.executable, "-c", _BIG_ROI_CHILD, str(big)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["error"], "a 1 GiB ROI file must be refused"
    assert str(big) in got["error"] and "\n" not in got["error"]
    assert got["growth_mb"] < 100, f"read {got['growth_mb']:.0f} MB of a file it refused"
