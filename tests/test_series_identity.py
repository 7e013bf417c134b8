"""Series identity without SeriesInstanceUID (issue 11 item 1), on real DICOM files.

- the ``nouid-…`` key is a function of the files' content: the same for any spelling of
  the folder (relative, absolute, another working directory), a copy, a move or a link;
- images without UID are grouped by content, not by folder;
- ROIs with the old path-based key still resolve (``series-key-legacy``, one note per key)
  in ``hu-roi measure`` and in the viewer session;
- the patient_id rule: the ROI's patient_id is the study code, required for targets;
- end to end on the real anonymised Siemens export: ROI → measure → longitudinal.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from hu_roi.batch import measure_batch
from hu_roi.io import index_folder
from hu_roi.roi import Roi, RoiSet, save_roiset
from hu_roi.series_lookup import LEGACY_FLAG, PATIENT_ID_MISSING, resolve_series
from tests.cli_helpers import run_main
from tests.dicom_factory import write_ct_series

REPO = Path(__file__).resolve().parents[1]
SIEMENS = REPO.parent / "shared" / "real_ct" / "siemens_biograph_mct_thoracolumbar" / "dicom"

NO_UID = {"SeriesInstanceUID": ""}


def _hu(n: int = 5, value: float = 200.0) -> np.ndarray:
    hu = np.full((n, 32, 32), -1000.0)
    hu[:, 8:24, 8:24] = value
    return hu


def _write(folder: Path, n: int = 5, **kw: object) -> list[Path]:
    tags = {**NO_UID, **kw.pop("extra_tags", {})}  # type: ignore[dict-item]
    return write_ct_series(
        folder,
        _hu(n),
        slice_positions=np.arange(n) * 2.0,
        series_uid="1.2.3",  # replaced by "" below
        study_uid="1.2.826.0.1.3680043.10.1234.9.77",
        frame_of_reference_uid="1.2.826.0.1.3680043.10.1234.9.78",
        extra_tags=tags,
        **kw,  # type: ignore[arg-type]
    )


def old_path_key(path: str) -> str:
    """The key hu-roi gave a series without UID before (folder as typed), from pydicom."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ori = tuple(round(float(v), 4) for v in ds.ImageOrientationPatient)
    key = (
        os.path.dirname(path),
        str(ds.StudyDate),
        str(ds.Modality).upper(),
        str(ds.get("FrameOfReferenceUID", "")),
        int(ds.SeriesNumber) if ds.get("SeriesNumber", None) not in (None, "") else None,
        str(ds.get("SeriesDescription", "")).strip(),
        ori,
        int(ds.Rows),
        int(ds.Columns),
    )
    return "nouid-" + hashlib.sha1(repr(key).encode()).hexdigest()[:16]


def _only(root: str | Path) -> str:
    (s,) = index_folder(root).series
    assert s.series_instance_uid == "" and "empty-uid" in s.problems
    return s.series_key


# ----------------------------------------------------------------------- key = content
def test_key_same_for_every_spelling_copy_move_and_link(tmp_path, monkeypatch):
    _write(tmp_path / "data" / "ser")
    monkeypatch.chdir(tmp_path)
    keys = {
        _only("data/ser"),
        _only("./data/ser/"),
        _only(str(tmp_path / "data" / "ser")),
        _only("data/../data/ser"),
    }
    monkeypatch.chdir(tmp_path / "data")
    keys.add(_only("ser"))
    monkeypatch.chdir("/")
    keys.add(_only(os.path.relpath(tmp_path / "data" / "ser", "/")))
    # copied, moved, reached through a folder link and through file links
    shutil.copytree(tmp_path / "data" / "ser", tmp_path / "copy")
    keys.add(_only(tmp_path / "copy"))
    shutil.move(tmp_path / "copy", tmp_path / "moved")
    keys.add(_only(tmp_path / "moved"))
    (tmp_path / "link").symlink_to(tmp_path / "moved", target_is_directory=True)
    keys.add(_only(tmp_path / "link"))
    (tmp_path / "filelinks").mkdir()
    for f in (tmp_path / "moved").iterdir():
        (tmp_path / "filelinks" / f.name).symlink_to(f)
    keys.add(_only(tmp_path / "filelinks"))
    assert len(keys) == 1, keys
    assert next(iter(keys)).startswith("nouid-")


def test_key_changes_with_content(tmp_path):
    _write(tmp_path / "a")
    _write(tmp_path / "b", extra_tags={"SeriesNumber": 7})
    _write(tmp_path / "c", n=6)
    _write(tmp_path / "d", extra_tags={"PatientID": "OTHER"})
    keys = {_only(tmp_path / x) for x in "abcd"}
    assert len(keys) == 4


def test_grouped_by_content_not_by_folder(tmp_path):
    # one series split over two folders (exports do that): one series, no gap
    paths = _write(tmp_path / "src", n=6)
    for i, p in enumerate(sorted(paths, key=lambda p: pydicom.dcmread(p).InstanceNumber)):
        dest = tmp_path / "tree" / ("part1" if i < 3 else "part2")
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dest / p.name)
    (s,) = index_folder(tmp_path / "tree").series
    assert s.n_slices == 6 and s.problems == ("empty-uid",)
    assert s.series_key == _only(tmp_path / "src")
    # two series without UID in one folder stay two
    _write(tmp_path / "tree" / "part1", n=3, extra_tags={"SeriesNumber": 9})
    assert len(index_folder(tmp_path / "tree").series) == 2


def test_copy_in_two_folders_behaves_like_a_duplicated_uid(tmp_path):
    # with SOPInstanceUIDs: the copies are the same images (skipped as with a UID)
    _write(tmp_path / "tree" / "a")
    shutil.copytree(tmp_path / "tree" / "a", tmp_path / "tree" / "b")
    res = index_folder(tmp_path / "tree")
    (s,) = res.series
    assert s.n_slices == 5 and s.series_key == _only(tmp_path / "tree" / "a")
    assert sum("duplicate SOPInstanceUID" in k.reason for k in res.skipped) == 5
    # without any SOPInstanceUID (not even in the file meta): one series whose positions
    # are duplicated -- refused, as two copies of a series with a UID are
    for p in _write(tmp_path / "t2" / "a", extra_tags={"SOPInstanceUID": ""}):
        ds = pydicom.dcmread(p)
        ds.file_meta.MediaStorageSOPInstanceUID = ""
        ds.save_as(p)
    assert index_folder(tmp_path / "t2").series[0].slices[0].sop_instance_uid == ""
    shutil.copytree(tmp_path / "t2" / "a", tmp_path / "t2" / "b")
    (s2,) = index_folder(tmp_path / "t2").series
    assert s2.n_slices == 10 and "duplicate-positions" in s2.problems


# ------------------------------------------------------------------ ROIs with old keys
def _roi(
    key: str, *, z: float = 4.0, pid: str = "TEST", date: str = "20200101", xy=(15.5, 15.5), **kw
) -> Roi:
    d = {
        "roi_id": kw.pop("roi_id", "r1"),
        "patient_id": pid,
        "kind": "target",
        "level": "L1",
        "timepoint": "T0",
        "series_key": key,
        "study_date": date,
        "shape": {"type": "circle", "center_mm": [*xy, z], "radius_mm": 4.0},
    }
    d.update(kw)
    return Roi.from_dict(d)


def _measure(tmp_path: Path, dicom: str | Path, rois: list[Roi]):
    f = tmp_path / "r.rois.json"
    if f.exists():
        f.unlink()
    save_roiset(RoiSet(rois=tuple(rois), reader="R1"), f)
    return measure_batch(dicom, f).measurements


def test_old_key_resolves_by_folder_spelling(tmp_path, monkeypatch, caplog):
    paths = _write(tmp_path / "data" / "ser")
    monkeypatch.chdir(tmp_path)
    typed = os.path.join("data", "ser", paths[0].name)
    old = old_path_key(typed)  # what `hu-roi index data/ser` gave before
    new = _only("data/ser")
    assert old != new
    ref = _measure(tmp_path, "data/ser", [_roi(new)])[0]
    assert ref.qc_status == "pass" and ref.mean_hu == 200.0
    caplog.set_level(logging.WARNING)
    for dicom in ("data/ser", str(tmp_path / "data" / "ser")):
        caplog.clear()
        rows = _measure(tmp_path, dicom, [_roi(old, roi_id="a"), _roi(old, roi_id="b", z=6.0)])
        for m in rows:
            assert LEGACY_FLAG in m.qc_flags and m.qc_status == "pass", m
            assert m.series_key == new and m.mean_hu == ref.mean_hu
            assert old in m.detail
        notes = [r for r in caplog.records if old in r.getMessage()]
        assert len(notes) == 1  # once per key, not per ROI


def test_old_key_from_another_cwd_resolves_by_content(tmp_path, monkeypatch):
    _write(tmp_path / "data" / "ser")
    # typed from a working directory that no longer exists, then the folder was moved
    old = "nouid-" + hashlib.sha1(b"anything path-based").hexdigest()[:16]
    shutil.move(tmp_path / "data", tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    (m,) = _measure(tmp_path, "moved", [_roi(old)])
    assert m.qc_status == "pass" and LEGACY_FLAG in m.qc_flags and m.mean_hu == 200.0
    # an ROI outside the stack, or of another date, is not resolved
    (out,) = _measure(tmp_path, "moved", [_roi(old, z=40.0)])
    assert out.qc_flags[0] == "series-not-found"
    (other,) = _measure(tmp_path, "moved", [_roi(old, date="20210101")])
    assert other.qc_flags[0] == "series-not-found"
    # two candidates containing the ROI: no guess
    _write(tmp_path / "moved" / "second", extra_tags={"SeriesNumber": 2})
    (amb,) = _measure(tmp_path, "moved", [_roi(old)])
    assert amb.qc_flags[0] == "series-not-found"


def test_viewer_session_resolves_old_keys(tmp_path, monkeypatch):
    pytest.importorskip("napari")
    from hu_roi_napari._session import Session

    paths = _write(tmp_path / "data" / "ser")
    monkeypatch.chdir(tmp_path)
    old = old_path_key(os.path.join("data", "ser", paths[0].name))
    f = tmp_path / "v.rois.json"
    save_roiset(RoiSet(rois=(_roi(old),), reader="R1"), f)
    s = Session()
    s.open_folder(tmp_path / "data" / "ser", roi_file=f)
    (info,) = s.index.series
    assert [r.roi_id for r in s.rois_of(info)] == ["r1"]
    assert resolve_series(_roi(old), s.index.series).info is info


# --------------------------------------------------------------------- patient_id rule
def test_patient_id_rule(tmp_path):
    _write(tmp_path / "anon", extra_tags={"PatientID": ""})
    key = _only(tmp_path / "anon")
    rows = _measure(
        tmp_path,
        tmp_path / "anon",
        [
            _roi(key, roi_id="coded", pid="S07"),
            _roi(key, roi_id="nobody", pid=""),
            _roi(key, roi_id="air", pid="", kind="reference-air", level=None, xy=(3.5, 3.5)),
        ],
    )
    coded, nobody, air = rows
    assert coded.patient_id == "S07" and coded.qc_status == "pass"
    assert nobody.qc_status == "fail" and nobody.qc_flags[0] == PATIENT_ID_MISSING
    assert "patient_id" in nobody.detail and "study code" in nobody.detail
    assert air.qc_status != "fail" and air.n_voxels > 0
    # an ROI without patient_id on a series with one: filled from DICOM
    _write(tmp_path / "named")
    (filled,) = _measure(tmp_path, tmp_path / "named", [_roi(_only(tmp_path / "named"), pid="")])
    assert filled.patient_id == "TEST" and filled.qc_status == "pass"
    # no key at all: the study-coded ROI finds the only series without DICOM PatientID
    (by_code,) = _measure(tmp_path, tmp_path / "anon", [_roi("", pid="S07")])
    assert by_code.qc_status == "pass" and by_code.series_key == key


# ------------------------------------------------------------- real Siemens end to end
def _siemens_roi_file(path: Path, key: str) -> None:
    # T12 body (see tests/test_batch.py): slice 8, row 330, column 250
    c = [-249.51171875 + 250.3 * 0.9765625, -437.51171875 + 330.2 * 0.9765625, -804.5 + 16.0]
    rois = tuple(
        Roi.from_dict(
            {
                "roi_id": f"S01-T0-{lvl}",
                "patient_id": "S01",
                "timepoint": "T0",
                "kind": "target",
                "level": lvl,
                "series_key": key,
                "study_date": "20221208",
                "shape": {"type": "circle", "center_mm": [c[0], c[1], c[2] + dz], "radius_mm": 8},
            }
        )
        for lvl, dz in (("T12", 0.0), ("T11", 8.0))
    )
    save_roiset(RoiSet(rois=rois, reader="R1"), path)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.realct
def test_real_siemens_roi_measure_longitudinal_any_spelling(tmp_path, monkeypatch):
    if not SIEMENS.is_dir():
        pytest.skip(f"real CT data not found at {SIEMENS}")
    # a copy made of links to the files, and a link to the folder
    links = tmp_path / "links"
    links.mkdir()
    for f in sorted(SIEMENS.iterdir()):
        (links / f.name).symlink_to(f)
    (tmp_path / "dirlink").symlink_to(SIEMENS, target_is_directory=True)
    key = _only(SIEMENS)
    roi_file = tmp_path / "siemens.rois.json"
    _siemens_roi_file(roi_file, key)
    runs = [
        (REPO, os.path.relpath(SIEMENS, REPO)),
        (REPO, str(SIEMENS)),
        (tmp_path, os.path.relpath(SIEMENS, tmp_path)),
        (SIEMENS.parent, "dicom"),
        (tmp_path, "links"),
        (tmp_path, "dirlink"),
    ]
    seen: set[tuple] = set()
    for i, (cwd, dicom) in enumerate(runs):
        monkeypatch.chdir(cwd)
        out = tmp_path / f"m{i}.csv"
        r = run_main(
            "measure",
            "--dicom",
            dicom,
            "--rois",
            str(roi_file),
            "--out",
            str(out),
            "--quiet",
            *(["--no-cache"] if i % 2 else []),
        )
        assert r.returncode == 0, r.stderr
        rows = _rows(out)
        assert [m["qc_status"] for m in rows] == ["warn", "warn"], rows  # contrast-agent
        assert {m["series_key"] for m in rows} == {key}
        assert {m["patient_id"] for m in rows} == {"S01"}
        seen.add(tuple((m["roi_id"], m["mean_hu"], m["n_voxels"]) for m in rows))
        lon = tmp_path / f"l{i}.csv"
        r = run_main("longitudinal", str(out), "--out", str(lon))
        assert r.returncode == 0, r.stderr
        table = _rows(lon)
        assert {(t["patient_id"], t["level"]) for t in table} == {("S01", "T12"), ("S01", "T11")}
        assert all(100 < float(t["hu_T0"]) < 350 for t in table), table
    assert len(seen) == 1, seen  # the same values whatever the spelling


@pytest.mark.realct
def test_real_siemens_target_without_study_code_is_a_named_fail(tmp_path):
    if not SIEMENS.is_dir():
        pytest.skip(f"real CT data not found at {SIEMENS}")
    key = _only(SIEMENS)
    roi = _roi(key, pid="", date="20221208")
    (m,) = _measure(tmp_path, SIEMENS, [roi])
    assert m.qc_status == "fail" and m.qc_flags[0] == PATIENT_ID_MISSING


# ------------------------------------------------ one orientation tolerance (item 9)
@pytest.mark.parametrize("dot", [0.0, 0.5e-3, 0.9e-3, 1.5e-3, 3e-3, 8e-3])
def test_index_and_measure_one_verdict_on_orientation(tmp_path, dot):
    from hu_roi.errors import GeometryError
    from hu_roi.series import ORIENTATION_TOL
    from hu_roi.volume import Volume

    y = (dot, float(np.sqrt(1 - dot * dot)), 0.0)  # unit, |X·Y| = dot
    write_ct_series(tmp_path / "s", _hu(), orientation=(1.0, 0.0, 0.0, *y))
    res = index_folder(tmp_path / "s")
    indexed = bool(res.series)
    roi = Roi.from_dict(
        {
            "roi_id": "r",
            "patient_id": "TEST",
            "kind": "target",
            "level": "L1",
            "timepoint": "T0",
            "shape": {"type": "circle", "center_mm": [15.5, 15.5, 2.0], "radius_mm": 4.0},
        }
    )
    (m,) = _measure(tmp_path, tmp_path / "s", [roi])
    try:
        Volume(np.zeros((1, 2, 2)), [1.0, 0, 0, *y], (1.0, 1.0), [[0.0, 0, 0]])
        volume_ok = True
    except GeometryError:
        volume_ok = False
    expected = dot <= ORIENTATION_TOL
    assert indexed == volume_ok == expected
    if expected:
        assert m.qc_status == "pass" and m.mean_hu == 200.0
    else:
        assert m.qc_status == "fail", m
        assert all("not two orthonormal vectors" in k.reason for k in res.skipped)
        assert len(res.skipped) == 5 and "tolerance" in res.skipped[0].reason
