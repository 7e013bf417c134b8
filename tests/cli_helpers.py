"""Helpers of the CLI tests (imported by test modules; the tests folder is on sys.path)."""

from __future__ import annotations

import contextlib
import io
import subprocess


def run_main(*args: str) -> subprocess.CompletedProcess:
    """``hu-roi ARGS`` in this process (fast; for the many small checks).  A traceback
    would surface here as an exception and fail the test."""
    from hu_roi.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())
