"""Fuzzing: mutated real DICOM bytes and mutated ROI JSON never crash hu-roi.

Property: for any mutation, :func:`~hu_roi.io.read_header`, :func:`~hu_roi.io.index_folder`,
:func:`~hu_roi.io.load_series`, :func:`~hu_roi.roi.load_roiset` and
:func:`~hu_roi.measure.measure_roi` either succeed or raise one of hu-roi's own errors
(:class:`~hu_roi.errors.HuRoiError` subclasses) -- never a bare ``ValueError``,
``KeyError``, ``OverflowError``, ``RecursionError``... that would surface as a traceback.
A loaded ROI set also survives a save/load round trip unchanged.

The base inputs are real files written by pydicom (``tests/dicom_factory.py``) and a valid
ROI set; hypothesis mutates their bytes (flips, overwrites, truncations, insertions,
deletions, mostly inside the header) or replaces JSON values by arbitrary JSON.

Budget: ``HU_ROI_FUZZ_EXAMPLES`` examples per test (default 60, deterministic, a few
seconds in all).  A long run::

    HU_ROI_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/test_fuzz.py -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hu_roi.errors import HuRoiError
from hu_roi.io import index_folder, load_series, read_header
from hu_roi.measure import measure_roi
from hu_roi.roi import RoiSet, load_roiset, save_roiset
from hu_roi.series import REFUSING_PROBLEMS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on garbage
N_EXAMPLES = int(os.environ.get("HU_ROI_FUZZ_EXAMPLES", "60"))
LONG_RUN = "HU_ROI_FUZZ_EXAMPLES" in os.environ
FUZZ = settings(
    max_examples=N_EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the working tree
    derandomize=not LONG_RUN,  # the default (CI) run is reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Problems a caller may accept; accepting them makes the fuzzer reach pixel decoding.
ACCEPT = tuple(sorted(REFUSING_PROBLEMS - {"multiframe", "not-ct", "mixed-size"}))
UID = "1.2.826.0.1.3680043.10.1234.9.4242"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory):
    """A real 3-slice series (the fuzzed file is slice 1) and a work folder."""
    root = tmp_path_factory.mktemp("fuzz")
    hu = np.arange(3 * 24 * 24, dtype=float).reshape(3, 24, 24) % 400 - 100
    paths = write_ct_series(root / "src", hu, pixel_spacing=(0.8, 0.8), series_uid=UID)
    return root, paths


# ---------------------------------------------------------------------------------------
# DICOM bytes
# ---------------------------------------------------------------------------------------
_op = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1400), st.integers(1, 255)),
    st.tuples(st.just("put"), st.integers(0, 1400), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("cut"), st.integers(0, 3000), st.just(b"")),
    st.tuples(st.just("insert"), st.integers(0, 1400), st.binary(min_size=1, max_size=32)),
    st.tuples(st.just("delete"), st.integers(0, 1400), st.integers(1, 64)),
    # little-endian 16/32-bit integers that lengths and Rows/Columns are made of
    st.tuples(
        st.just("int"),
        st.integers(0, 1400),
        st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, 65535 * 65535, 8000]),
    ),
)


def _mutate(data: bytes, ops: list) -> bytes:
    b = bytearray(data)
    for kind, pos, arg in ops:
        pos = min(pos, len(b))
        if kind == "flip" and pos < len(b):
            b[pos] ^= arg
        elif kind == "put":
            b[pos : pos + len(arg)] = arg
        elif kind == "cut":
            del b[pos:]
        elif kind == "insert":
            b[pos:pos] = arg
        elif kind == "delete":
            del b[pos : pos + arg]
        elif kind == "int":
            width = 2 if arg <= 0xFFFF else 4
            b[pos : pos + width] = int(arg).to_bytes(width, "little")
    return bytes(b)


@FUZZ
@given(ops=st.lists(_op, min_size=1, max_size=4))
def test_mutated_dicom_never_crashes(base, ops: list) -> None:
    root, paths = base
    work = root / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    for p in paths:
        shutil.copyfile(p, work / p.name)
    victim = work / paths[1].name
    victim.write_bytes(_mutate(paths[1].read_bytes(), ops))

    try:
        read_header(victim)
    except HuRoiError:
        pass
    res = index_folder(work)  # never raises for a bad file: it is skipped with a reason
    for s in res.skipped:
        assert s.reason and "\n" not in s.reason
    for info in res.series:
        try:
            vol = load_series(info, accept=ACCEPT)
        except HuRoiError:
            continue
        assert vol.hu.shape == (len(vol.slice_indices), info.rows, info.columns)
        from hu_roi.roi import Roi, Shape

        centre = vol.pixel_to_lps(0, info.rows / 2, info.columns / 2)
        roi = Roi(
            roi_id="F",
            patient_id="TEST",
            shape=Shape(type="circle", center_mm=tuple(map(float, centre)), radius_mm=4.0),
        )
        try:
            m = measure_roi(vol, roi)
        except HuRoiError:
            continue
        assert m.qc_status in ("pass", "warn", "fail")


# ---------------------------------------------------------------------------------------
# ROI JSON
# ---------------------------------------------------------------------------------------
VALID = {
    "format": "hu-roi.roiset",
    "version": 1,
    "reader": "R1",
    "rois": [
        {
            "roi_id": "P01-T0-L3",
            "patient_id": "P01",
            "timepoint": "T0",
            "series_instance_uid": UID,
            "level": "L3",
            "irradiated": True,
            "lesion_type": "osteolytic",
            "kind": "target",
            "shape": {
                "type": "ellipse",
                "center_mm": [9.2, 9.2, 1.0],
                "radii_mm": [5.0, 4.0],
                "angle_deg": 10,
            },
        },
        {
            "roi_id": "P01-T0-L4",
            "patient_id": "P01",
            "kind": "target",
            "shape": {
                "type": "polygon",
                "points_mm": [[2.0, 2.0, 2.0], [14.0, 2.0, 2.0], [14.0, 14.0, 2.0]],
            },
        },
        {
            "roi_id": "air",
            "patient_id": "P01",
            "kind": "reference-air",
            "shape": {"type": "sphere", "center_mm": [9.2, 9.2, 1.0], "radius_mm": 3.0},
        },
    ],
}

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["circle", "ellipse", "polygon", "sphere", "T0", "L3", "target"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def _paths(obj, prefix=()):  # every (path, value) in a JSON tree
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


ALL_PATHS = [p for p in _paths(VALID) if p]


def _replace(obj, path, value):
    if len(path) == 1:
        if isinstance(obj, dict) or path[0] < len(obj):
            obj[path[0]] = value
        return
    _replace(obj[path[0]], path[1:], value)


@pytest.fixture(scope="module")
def phantom_volume(base):
    root, paths = base
    res = index_folder(paths[0].parent)
    return load_series(res.series[0])


@FUZZ
@given(
    edits=st.lists(st.tuples(st.sampled_from(ALL_PATHS), _json), min_size=1, max_size=3),
    text_ops=st.lists(
        st.tuples(st.integers(0, 900), st.binary(min_size=1, max_size=4)), max_size=2
    ),
)
def test_mutated_roi_json_never_crashes(base, phantom_volume, edits: list, text_ops: list) -> None:
    root, _ = base
    doc = json.loads(json.dumps(VALID))
    for path, value in edits:
        try:
            _replace(doc, path, value)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier edit replaced the parent: fine
    data = json.dumps(doc, allow_nan=True).encode()
    for pos, chunk in text_ops:
        pos = min(pos, len(data))
        data = data[:pos] + chunk + data[pos + len(chunk) :]
    f = root / "fuzz.rois.json"
    f.write_bytes(data)
    try:
        rs = load_roiset(f)
    except HuRoiError:
        return
    for roi in rs.rois:
        try:
            m = measure_roi(phantom_volume, roi)
        except HuRoiError:
            continue
        assert m.qc_status in ("pass", "warn", "fail")
    # a set that loads also saves, and reloads to the same ROIs
    out = root / "fuzz_saved.rois.json"
    out.unlink(missing_ok=True)
    saved = save_roiset(rs, out, expected_stamp=None)
    again = load_roiset(out)
    assert isinstance(saved, RoiSet)
    assert [r.to_dict() for r in again.rois] == [r.to_dict() for r in rs.rois]
    assert Path(out).read_text(encoding="utf-8").endswith("\n")


# ---------------------------------------------------------------------------------------
# a real scanner file (GE, private tags) from ../shared/real_ct, when present
# ---------------------------------------------------------------------------------------
REAL_FILE = Path("robustness") / "nema_ct1_small_ge" / "CT_small.dcm"
_real_op = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 6300), st.integers(1, 255)),
    st.tuples(st.just("put"), st.integers(0, 6300), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("cut"), st.integers(0, 39206), st.just(b"")),
    st.tuples(st.just("delete"), st.integers(0, 6300), st.integers(1, 64)),
    st.tuples(st.just("int"), st.integers(0, 6300), st.sampled_from([0, 0xFFFF, 0xFFFFFFFF, 8000])),
)


@pytest.fixture(scope="module")
def real_file(real_ct: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    src = real_ct / REAL_FILE
    if not src.is_file():
        pytest.skip(f"{src} not found")
    return tmp_path_factory.mktemp("fuzz_real"), src.read_bytes()


@FUZZ
@given(ops=st.lists(_real_op, min_size=1, max_size=3))
def test_mutated_real_ct_never_crashes(real_file, ops: list) -> None:
    work, data = real_file
    victim = work / "CT_small.dcm"
    victim.write_bytes(_mutate(data, ops))
    res = index_folder(work)
    for s in res.skipped:
        assert s.reason and "\n" not in s.reason
    for info in res.series:
        try:
            load_series(info, accept=ACCEPT)
        except HuRoiError:
            pass
