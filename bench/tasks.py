"""One benchmark task per subprocess: ``python -m bench.tasks '{"task": ..., ...}'``.

Prints one JSON line: ``seconds`` (wall time of the measured part only), ``base_mb``
(resident memory after imports and untimed preparation), ``peak_mb`` (VmHWM, the peak
resident memory of the task process; worker processes are not included) and task-specific fields.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _status_mb(key: str) -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    """Peak RSS of this process image.

    VmHWM (Linux) rather than ru_maxrss: after a vfork+exec, ru_maxrss starts from the
    parent's resident set size, which would hide the task's own peak.
    """
    hwm = _status_mb("VmHWM")
    if hwm == hwm:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_CPU: dict[str, float] = {}


def _cpu() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def _start() -> float:
    _CPU["start"] = _cpu()
    return time.perf_counter()


def _stop(t: float) -> float:
    """Wall seconds since ``t``; also records CPU seconds since the last ``_start``."""
    dt = time.perf_counter() - t
    _CPU["seconds"] = _cpu() - _CPU["start"]
    return dt


def _files(folder: str) -> list[str]:
    out = []
    for d, _, names in os.walk(folder, followlinks=True):
        out += [os.path.join(d, n) for n in sorted(names) if not n.startswith(".")]
    return sorted(out)


def _info(folder: str):  # type: ignore[no-untyped-def]
    from hu_roi.io import index_folder

    (info,) = index_folder(folder).series
    return info


# ---------------------------------------------------------------------------------------
def raw_read(a: dict[str, Any]) -> dict[str, Any]:
    """Floor: read every file's bytes (buffer memory reused)."""
    files = _files(a["folder"])
    base = _rss_mb()
    t = _start()
    n = 0
    for f in files:
        with open(f, "rb") as fh:
            n += len(fh.read())
    return {"seconds": _stop(t), "base_mb": base, "bytes": n}


def raw_into(a: dict[str, Any]) -> dict[str, Any]:
    """Floor for producing a volume: read each file's pixel bytes into one fresh array."""
    import numpy as np

    files = _files(a["folder"])
    rows = cols = a["size"]
    nb = rows * cols * 2
    base = _rss_mb()
    t = _start()
    out = np.empty((len(files), rows, cols), dtype=np.int16)
    for k, f in enumerate(files):
        with open(f, "rb", buffering=0) as fh:
            fh.seek(os.fstat(fh.fileno()).st_size - nb)
            fh.readinto(memoryview(out[k]).cast("B"))
    return {"seconds": _stop(t), "base_mb": base}


def hu_load(a: dict[str, Any]) -> dict[str, Any]:
    """hu-roi: load_series of an indexed series (index untimed unless index=True)."""
    from hu_roi.io import index_folder, load_series

    base = _rss_mb()
    if a.get("index"):
        t0 = _start()
        (info,) = index_folder(a["folder"]).series
    else:
        (info,) = index_folder(a["folder"]).series
        base = _rss_mb()
        t0 = _start()
    vol = load_series(info, workers=a.get("workers"), accept=("missing-slices",))
    seconds = _stop(t0)
    return {
        "seconds": seconds,
        "base_mb": base,
        "dtype": str(vol.hu.dtype),
        "checksum": int(vol.hu.sum(dtype="int64")),
    }


def sitk_load(a: dict[str, Any]) -> dict[str, Any]:
    """SimpleITK ImageSeriesReader (GDCM) on the files sorted by GDCM (sorting untimed)."""
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(a["folder"])
    reader.SetFileNames(names)
    if a.get("int16"):
        reader.SetOutputPixelType(sitk.sitkInt16)
    base = _rss_mb()
    t = _start()
    img = reader.Execute()
    arr = sitk.GetArrayViewFromImage(img)
    dt = _stop(t)
    return {
        "seconds": dt,
        "base_mb": base,
        "dtype": str(arr.dtype),
        "checksum": int(arr.sum(dtype="int64")),
    }


def pydicom_load(a: dict[str, Any]) -> dict[str, Any]:
    """Plain pydicom: read all, sort by position, rescale each slice to int16, stack."""
    import numpy as np
    import pydicom

    files = _files(a["folder"])
    plugin = a.get("plugin", "")
    base = _rss_mb()
    t = _start()
    dss = [pydicom.dcmread(f) for f in files]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    slices = []
    for d in dss:
        if plugin:
            d.pixel_array_options(decoding_plugin=plugin)
        s, i = int(d.RescaleSlope), int(d.RescaleIntercept)
        slices.append((d.pixel_array.astype(np.int32) * s + i).astype(np.int16))
    vol = np.stack(slices)
    dt = _stop(t)
    return {"seconds": dt, "base_mb": base, "checksum": int(vol.sum(dtype="int64"))}


def index(a: dict[str, Any]) -> dict[str, Any]:
    """index_folder of a tree, with no cache, a fresh cache, or the existing cache."""
    from hu_roi.io import index_folder
    from hu_roi.io.cache import HeaderCache

    db = a.get("cache")
    if db and a.get("fresh"):
        for suffix in ("", "-wal", "-shm"):
            Path(db + suffix).unlink(missing_ok=True)
    base = _rss_mb()
    t = _start()
    cache = HeaderCache(db) if db else None
    res = index_folder(a["folder"], cache=cache, workers=a.get("workers", 1))
    if cache is not None:
        cache.close()
    dt = _stop(t)
    return {
        "seconds": dt,
        "base_mb": base,
        "n_series": len(res.series),
        "n_files": res.n_files,
        "hits": getattr(cache, "hits", 0),
    }


def batch(a: dict[str, Any]) -> dict[str, Any]:
    """hu-roi measure (hu_roi.batch.measure_batch), optionally with the header cache."""
    from hu_roi.batch import measure_batch

    cache = None
    if a.get("cache"):
        from hu_roi.io.cache import HeaderCache

        cache = HeaderCache(a["cache"])
    base = _rss_mb()
    t = _start()
    res = measure_batch(a["root"], a["rois"], workers=a.get("workers", 1), cache=cache)
    dt = _stop(t)
    status: dict[str, int] = {}
    for m in res.measurements:
        status[m.qc_status] = status.get(m.qc_status, 0) + 1
    means = [round(float(m.mean_hu), 3) for m in res.measurements if m.qc_status != "fail"]
    return {"seconds": dt, "base_mb": base, "status": status, "means": means[:3]}


def _roi_docs(paths: list[str]) -> list[dict[str, Any]]:
    return [json.loads(Path(p).read_text()) for p in paths]


def batch_sitk(a: dict[str, Any]) -> dict[str, Any]:
    """Baseline: per series, SimpleITK loads the whole series, then each ROI is masked."""
    import numpy as np
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    docs = _roi_docs(a["rois"])
    folders = sorted(str(p) for p in Path(a["root"]).iterdir() if not p.name.startswith("."))
    base = _rss_mb()
    t = _start()
    means = []
    for folder, doc in zip(folders, docs, strict=True):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(folder))
        reader.SetOutputPixelType(sitk.sitkInt16)
        img = reader.Execute()
        arr = sitk.GetArrayViewFromImage(img)
        sp = img.GetSpacing()
        for roi in doc["rois"]:
            sh = roi["shape"]
            i, j, k = img.TransformPhysicalPointToIndex(sh["center_mm"])
            rx, ry = sh.get("radii_mm", [sh.get("radius_mm")] * 2)
            yy, xx = np.ogrid[: arr.shape[1], : arr.shape[2]]
            mask = ((xx - i) * sp[0] / rx) ** 2 + ((yy - j) * sp[1] / ry) ** 2 <= 1
            means.append(float(arr[k][mask].mean()))
        del img, arr
    return {"seconds": _stop(t), "base_mb": base, "means": means[:3]}


def batch_floor(a: dict[str, Any]) -> dict[str, Any]:
    """Floor: read the bytes of only the slices the ROIs touch (found untimed)."""
    from hu_roi.io import index_folder, slice_indices_at

    docs = _roi_docs(a["rois"])
    series = {s.series_instance_uid: s for s in index_folder(a["root"]).series}
    paths = set()
    for doc in docs:
        for roi in doc["rois"]:
            info = series[roi["series_instance_uid"]]
            z = float(
                sum(c * n for c, n in zip(roi["shape"]["center_mm"], info.normal, strict=True))
            )
            for i in slice_indices_at(info, [z]):
                paths.add(info.slices[i].path)
    base = _rss_mb()
    t = _start()
    for p in sorted(paths):
        with open(p, "rb") as fh:
            fh.read()
    return {"seconds": _stop(t), "base_mb": base, "n_slices": len(paths)}


def napari_open(a: dict[str, Any]) -> dict[str, Any]:
    """napari: open a folder and its 300-slice series with the plugin until the slice is drawn.

    Timed (``seconds``): ``Session.open_folder`` (header cache in ``cache_dir``, warm) +
    ``open_series`` + ``viewer.screenshot`` (a real render under Xvfb), in a fresh viewer,
    so napari's one-time set-up of its first layers (unit registry, shaders, font atlas)
    is included.  Then ``scroll`` slices are shown one by one, each drawn, and a second
    folder ``next`` is opened the same way (``next_s``: napari warm).
    ``eager=True``: the same steps with the layer data loaded whole first (load_series of
    every slice) instead of the lazy array -- the comparison.
    """
    import napari
    import numpy as np

    from hu_roi.io import load_series

    os.environ["HU_ROI_CACHE_DIR"] = a["cache_dir"]
    from hu_roi_napari._series import SeriesHandle
    from hu_roi_napari._session import Session

    if a.get("eager"):

        def whole(self, perm=(0, 1, 2)):  # type: ignore[no-untyped-def]
            hu = load_series(self.info, accept=self.accept).hu.astype(np.float32)
            return hu.transpose(perm)

        SeriesHandle.lazy_array = whole  # type: ignore[method-assign]
    viewer = napari.Viewer(show=True)
    viewer.screenshot(canvas_only=True, flash=False)  # window and GL context: untimed

    def open_and_draw(path: str) -> tuple[Any, Any, Any]:
        session = Session(viewer)
        session.open_folder(path)
        (info,) = session.index.series  # type: ignore[union-attr]
        handle = session.open_series(info.series_key)
        shot = viewer.screenshot(canvas_only=True, flash=False)
        return session, handle, shot

    base = _rss_mb()
    t = _start()
    session, handle, shot = open_and_draw(a["folder"])
    first = _stop(t)
    loaded_first = len(handle._cache)
    n = handle.info.n_slices
    steps = [int(k) for k in np.linspace(0, n - 1, a.get("scroll", 20))]
    t = time.perf_counter()
    for k in steps:
        session.show_slice(k)
        viewer.screenshot(canvas_only=True, flash=False)
    per_slice = (time.perf_counter() - t) / len(steps)
    loaded_scroll = len(handle._cache)
    t = time.perf_counter()
    open_and_draw(a["next"])
    nxt = time.perf_counter() - t
    return {
        "seconds": first,
        "base_mb": base,
        "next_s": nxt,
        "n_slices": n,
        "loaded_first": loaded_first,
        "scroll_s": per_slice,
        "loaded_after_scroll": loaded_scroll,
        "shot_std": float(np.std(shot[..., :3])),
    }


def process(a: dict[str, Any]) -> dict[str, Any]:
    """A whole process, timed from outside: ``cmd`` run ``runs`` times back to back
    (the fastest counts), with ``env`` added to the environment.

    ``seconds``: wall time from start to exit (interpreter start, imports, work, exit);
    ``cpu_s``: its user + system CPU time; ``child_peak_mb``: its peak resident memory.
    """
    import subprocess

    env = dict(os.environ, **a.get("env", {}))
    for name in a.get("unset", []):
        env.pop(name, None)
    best: tuple[float, float] | None = None
    for _ in range(a.get("runs", 1)):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        p = subprocess.run(a["cmd"], env=env, cwd=a.get("cwd"), capture_output=True, text=True)
        dt = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != a.get("returncode", 0):
            raise RuntimeError(f"{a['cmd'][:3]}... exit {p.returncode}: {p.stderr[-2000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = (dt, cpu) if best is None else (min(best[0], dt), min(best[1], cpu))
    assert best is not None
    _CPU["seconds"] = best[1]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "seconds": best[0],
        "base_mb": _rss_mb(),
        "child_peak_mb": peak,
        "lines": len(p.stdout.splitlines()),
    }


def batch_dask(a: dict[str, Any]) -> dict[str, Any]:
    """hu-roi measure (measure_batch) on a distributed.LocalCluster of ``workers`` worker
    processes (one thread each), header cache warm.

    The cluster is started and every worker has imported hu-roi (one small task each)
    before the clock starts: on a real cluster both happen once per job, not per batch.
    """
    import distributed

    from hu_roi.batch import measure_batch
    from hu_roi.io.cache import HeaderCache

    with (
        distributed.LocalCluster(
            n_workers=a["workers"],
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit="2GB",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(a["workers"], timeout=120)
        client.run(lambda: __import__("hu_roi.batch") and __import__("hu_roi.io.load"))
        cache = HeaderCache(a["cache"])
        base = _rss_mb()
        t = _start()
        res = measure_batch(a["root"], a["rois"], scheduler=client, cache=cache)
        dt = _stop(t)
        cache.close()
    status: dict[str, int] = {}
    for m in res.measurements:
        status[m.qc_status] = status.get(m.qc_status, 0) + 1
    means = [round(float(m.mean_hu), 3) for m in res.measurements if m.qc_status != "fail"]
    return {"seconds": dt, "base_mb": base, "status": status, "means": means}


TASKS = {
    f.__name__: f
    for f in (
        raw_read,
        raw_into,
        hu_load,
        sitk_load,
        pydicom_load,
        index,
        batch,
        batch_sitk,
        batch_floor,
        napari_open,
        process,
        batch_dask,
    )
}


def main() -> None:
    args = json.loads(sys.argv[1])
    out = TASKS[args["task"]](args)
    out["peak_mb"] = _peak_mb()
    out["cpu_s"] = _CPU.get("seconds", float("nan"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
