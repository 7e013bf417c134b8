"""``hu-roi measure --scheduler`` against a real dask.distributed cluster.

A ``distributed.LocalCluster`` of 2 worker processes (one thread each, as the docs
recommend) listens on TCP; ``hu-roi measure`` runs as its own process, connects by
address and sends each series to a worker, which opens the DICOM files by the same paths
(here: the same machine, as a shared file system would give on a real cluster).  The CSV
must equal the one measured in process.  Bounded in time: the cluster has 90 s to start,
each command 240 s.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series

ROOT = Path(__file__).resolve().parents[1]
N_SERIES = 6


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    distributed = pytest.importorskip("distributed")
    import logging

    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit="1GB",
            silence_logs=logging.ERROR,
        ) as c,
        distributed.Client(c) as client,
    ):
        client.wait_for_workers(2, timeout=90)
        yield c


def _study(tmp_path: Path) -> tuple[Path, Path]:
    """N_SERIES small series (different HU each) and one ROI file with 2 ROIs per series
    (one ROI per series is off the image: a fail row must travel back too)."""
    import pydicom

    d = tmp_path / "dicom"
    rois = []
    for k in range(N_SERIES):
        hu = np.full((5, 24, 24), 100.0 + 10 * k)
        hu[:, :, 12:] += 50.0
        paths = write_ct_series(
            d / f"s{k}", hu, pixel_spacing=(0.9, 0.9), extra_tags={"PatientID": f"P{k}"}
        )
        uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
        for j, centre in enumerate(([5.0, 10.0, 2.0], [500.0, 10.0, 2.0])):
            rois.append(
                {
                    "roi_id": f"P{k}-T0-L{j + 1}",
                    "patient_id": f"P{k}",
                    "timepoint": "T0",
                    "series_instance_uid": uid,
                    "level": f"L{j + 1}",
                    "irradiated": False,
                    "lesion_type": "none",
                    "kind": "target",
                    "shape": {"type": "circle", "center_mm": centre, "radius_mm": 4.0},
                }
            )
    f = tmp_path / "r.rois.json"
    f.write_text(json.dumps({"format": "hu-roi.roiset", "version": 1, "reader": "R1",
                             "rois": rois}))  # fmt: skip
    return d, f


def _measure(tmp_path: Path, d: Path, rois: Path, out: str, *extra: str) -> str:
    env = dict(os.environ, HU_ROI_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", "measure", "--dicom", str(d), "--rois",
         str(rois), "--out", str(tmp_path / out), "-q", *extra],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return (tmp_path / out).read_text()


def test_measure_on_a_two_worker_cluster_equals_the_local_run(
    cluster: object, tmp_path: Path
) -> None:
    import distributed

    d, rois = _study(tmp_path)
    local = _measure(tmp_path, d, rois, "local.csv")
    address = cluster.scheduler_address  # type: ignore[attr-defined]
    assert address.startswith("tcp://")
    remote = _measure(tmp_path, d, rois, "remote.csv", "--scheduler", address)
    assert remote == local
    rows = list(csv.DictReader(io.StringIO(local)))
    assert len(rows) == 2 * N_SERIES
    assert [r["qc_status"] for r in rows].count("fail") == N_SERIES
    means = sorted(float(r["mean_hu"]) for r in rows if r["qc_status"] != "fail")
    assert means == sorted(100.0 + 10 * k for k in range(N_SERIES))
    # Both workers measured series (each runs one task at a time).
    with distributed.Client(address) as client:
        done = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert len(done) == 2 and sum(done.values()) >= N_SERIES, done
    assert all(n > 0 for n in done.values()), done
    meta = json.loads((tmp_path / "remote.csv.meta.json").read_text())
    assert address in json.dumps(meta)


def test_unreachable_scheduler_is_one_error_line(tmp_path: Path) -> None:
    """A cluster that is gone: exit 2, one error line, nothing written (bounded wait)."""
    import socket

    d, rois = _study(tmp_path)
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HU_ROI_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "hu_roi.cli", "measure", "--dicom", str(d), "--rois",
         str(rois), "--out", str(tmp_path / "m.csv"), "--scheduler",
         f"tcp://127.0.0.1:{port}"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hu-roi measure: error:"), proc.stderr
    assert not (tmp_path / "m.csv").exists()
