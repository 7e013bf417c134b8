"""Benchmark of ``hu-roi propagate``: the registration time for a 512² × 300 follow-up.

Data (written once under ``DATA/propagate``, outside the repository): the synthetic
patient of ``tests/test_propagate.py`` scaled ×2 (body 25 × 19 cm, vertebral bodies
⌀ 64 mm), 512 × 512 × 300 voxels of 0.7 × 0.7 × 1 mm, as a baseline and as a follow-up
moved by a known rigid transform (rotation 2°, −3°, 6°; translation 14, −10, 16 mm) with
the noise redrawn.  Timed in this process: loading both series, the registration
(:func:`hu_roi.io.registration.register_rigid` around one ROI, 40 mm margin) and the
correlation check; the error of the mapped ROI centre against the known transform is
reported too.

Run alone: ``.venv/bin/python -m bench.propagate [--data DIR]``; ``bench.run`` calls
:func:`bench_propagate` for ``--only propagate``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

SIZE = 512
N_SLICES = 300
SPACING = (0.7, 0.7)  # mm (rows, columns)
DZ = 1.0  # mm
SCALE = 2.0  # the test phantom is scaled by this
ROT_DEG = (2.0, -3.0, 6.0)
TRANS_MM = (14.0, -10.0, 16.0)
ROI_MM = np.array([0.0, 30.0, 0.5])  # centre of the scaled middle vertebra (slice 150)
ORIGIN = (-SIZE * SPACING[1] / 2 + 0.35, -SIZE * SPACING[0] / 2 + 0.35, -149.5)


def _volume(
    origin: np.ndarray, rot_deg: tuple[float, ...], trans: tuple[float, ...], seed: int
) -> np.ndarray:
    from test_propagate import _rotation, phantom_hu

    rot = _rotation(rot_deg)
    centre = np.array([0.0, 15.0, 0.0]) * SCALE
    out = np.empty((N_SLICES, SIZE, SIZE), dtype=np.float32)
    rng = np.random.default_rng(seed)
    r, c = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    for k in range(N_SLICES):
        q = np.stack(
            [
                origin[0] + c * SPACING[1],
                origin[1] + r * SPACING[0],
                np.full(r.shape, origin[2] + k * DZ),
            ],
            axis=-1,
        )
        p = (q - centre - np.asarray(trans)) @ rot + centre
        out[k] = np.round(phantom_hu(p / SCALE) + rng.normal(0, 12, r.shape)).clip(-1024, 3000)
    return out


def make_pair(root: Path, log: Any = print) -> tuple[Path, Path]:
    """Baseline and follow-up series under ``root/propagate`` (written once)."""
    from dicom_factory import write_ct_series

    base, follow = root / "propagate" / "t0", root / "propagate" / "t2"
    step = np.array([SPACING[1], SPACING[0], DZ])
    fov = np.asarray(ORIGIN) + np.round(np.asarray(TRANS_MM) / step) * step
    for folder, origin, rot, trans, seed in (
        (base, np.asarray(ORIGIN), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 1),
        (follow, fov, ROT_DEG, TRANS_MM, 2),
    ):
        if (folder / ".done").is_file():
            continue
        log(f"  writing {folder} ({N_SLICES} x {SIZE}^2)")
        write_ct_series(
            folder,
            _volume(origin, rot, trans, seed),
            pixel_spacing=SPACING,
            slice_positions=np.arange(N_SLICES) * DZ,
            origin=tuple(origin),
            extra_tags={"PatientID": "BENCHPROP"},
        )
        (folder / ".done").write_text("{}")
    return base, follow


def measure(root: Path) -> dict[str, float]:
    """Seconds of loading, registering and checking; error (mm) at the ROI centre."""
    from test_propagate import _rotation

    from hu_roi.io import index_folder, load_series
    from hu_roi.io.registration import neighbourhood_ncc, register_rigid

    base_dir, follow_dir = make_pair(root)
    t = time.perf_counter()
    base = load_series(index_folder(base_dir).series[0])
    follow = load_series(index_folder(follow_dir).series[0])
    t_load = time.perf_counter() - t
    margin = 40.0 + 16.0  # ROI radius and the default margin
    t = time.perf_counter()
    cpu = time.process_time()
    res = register_rigid(base, follow, region_lo_mm=ROI_MM - margin, region_hi_mm=ROI_MM + margin)
    t_reg = time.perf_counter() - t
    cpu_reg = time.process_time() - cpu
    t = time.perf_counter()
    ncc, _inside = neighbourhood_ncc(base, follow, res, ROI_MM, 20.0)
    t_ncc = time.perf_counter() - t
    centre = np.array([0.0, 15.0, 0.0]) * SCALE
    truth = _rotation(ROT_DEG) @ (ROI_MM - centre) + centre + np.asarray(TRANS_MM)
    err = float(np.linalg.norm(res.apply(ROI_MM) - truth))
    return {
        "load_s": t_load,
        "register_s": t_reg,
        "register_cpu_s": cpu_reg,
        "ncc_s": t_ncc,
        "ncc": ncc,
        "error_mm": err,
    }


def bench_propagate(rep: Any, root: Path, repeats: int) -> None:
    """Section of ``bench.run``'s report (one run: the registration takes seconds)."""
    print("generating/reusing the propagation pair", flush=True)
    m = measure(root)
    rep.section(
        f"Propagation: registration of a {SIZE}² × {N_SLICES} follow-up (hu-roi propagate)",
        ["step", "wall s", "note"],
    )
    rep.row("load baseline + follow-up", m["load_s"], "hu_roi.io.load_series, 2 × 150 MB")
    rep.row(
        "rigid registration",
        m["register_s"],
        f"CPU {m['register_cpu_s']:.1f} s; 3 levels, 2 starts",
    )
    rep.row("correlation check", m["ncc_s"], f"NCC {m['ncc']:.3f}")
    rep.check(
        "propagation: registration of a 512² × 300 follow-up < 60 s, error < 1 voxel",
        m["register_s"] < 60 and m["error_mm"] < 0.7,
        f"{m['register_s']:.1f} s, error {m['error_mm']:.2f} mm at the ROI centre",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.propagate", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "hu-roi-bench"))
    args = ap.parse_args(argv)
    m = measure(Path(args.data).resolve())
    for k, v in m.items():
        print(f"{k}: {v:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
