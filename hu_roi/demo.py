"""``hu-roi demo``: the whole pipeline on the bundled sample data."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

#: The bundled synthetic cohort (see scripts/make_sample_dicom.py).
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_dicom"


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the bundled sample data")
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder")
    p.add_argument("--sample", default=str(SAMPLE_DIR), metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from hu_roi.cli import INDEX_COLUMNS, CliError, index_rows, write_csv
    from hu_roi.io import index_folder, load_series

    sample = Path(args.sample)
    dicom = sample / "dicom"
    if not dicom.is_dir():
        raise CliError(f"sample data not found at {dicom}; run scripts/make_sample_dicom.py first")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = index_folder(dicom, progress=not args.quiet)
    write_csv(out / "index.csv", INDEX_COLUMNS, index_rows(res.series))
    print(f"[1] index: {len(res.series)} series in {dicom} -> {out / 'index.csv'}")
    for s in res.series:
        flag = ";".join(s.problems) or "ok"
        print(
            f"    {s.patient_id:5} {s.study_date} {s.series_description[:28]:28} "
            f"{s.n_slices:3d} slices  {flag}"
        )
    n = 0
    for s in res.ct_series():
        vol = load_series(s)
        n += 1
        if not args.quiet:
            print(
                f"    loaded {s.patient_id} {s.study_date}: {vol.shape} {vol.hu.dtype}",
                file=sys.stderr,
            )
    print(f"[2] load: {n} measurable series loaded ({time.perf_counter() - t0:.1f} s)")
    print(f"outputs in {out.resolve()}")
    return 0
