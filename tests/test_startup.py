"""Start-up cost of the command line: what ``hu-roi`` imports, not how long it takes.

``hu-roi --help`` must import no subcommand module (nor numpy or pydicom); a subcommand
imports its own module only; a measurement whose headers all come from the header cache
reads uncompressed slices without importing pydicom or any pixel decoder.  Timings are in
the benchmark (``scripts/bench``), not here: a busy test machine would make them flaky.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series

ROOT = Path(__file__).resolve().parents[1]

#: Modules no start-up of ``hu-roi --help`` may import.
HEAVY = ("numpy", "pydicom", "gdcm", "SimpleITK", "pandas", "scipy", "jsonschema")
#: Optional pixel decoders (pydicom imports all of them when it is imported).
DECODERS = ("pydicom", "gdcm", "jpeg_ls", "rle", "pylibjpeg", "openjpeg", "libjpeg", "PIL")


def _modules_after(args: list[str], env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    """Run ``hu-roi ARGS`` in a fresh interpreter; its exit status and ``sys.modules``."""
    code = (
        "import json, sys\n"
        "from hu_roi.cli import main\n"
        "try:\n"
        f"    rc = main({args!r})\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code\n"
        "sys.stdout.flush()\n"
        "print('\\nMODULES=' + json.dumps(sorted(sys.modules)))\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    line = proc.stdout.rsplit("MODULES=", 1)[1]
    return proc.returncode, set(json.loads(line))


def _command_modules() -> dict[str, str]:
    from hu_roi.commands import registered

    return {c.name: c.module.partition(":")[0] for c in registered()}


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_help_imports_no_command_module() -> None:
    rc, mods = _modules_after(["--help"])
    assert rc == 0
    loaded = sorted(set(_command_modules().values()) & mods)
    assert loaded == [], f"hu-roi --help imported {loaded}"
    assert not _top(mods) & set(HEAVY), sorted(_top(mods) & set(HEAVY))


def test_help_imports_nothing_heavy_per_importtime() -> None:
    """The same through the console script's module with ``-X importtime`` (every import,
    also those of the interpreter's start)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hu_roi.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {
        line.split("|")[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "hu_roi.commands" in imported  # the measurement works
    assert not imported & set(_command_modules().values())
    assert not _top(imported) & set(HEAVY)


@pytest.mark.parametrize("name", ["index", "measure", "longitudinal"])
def test_a_command_imports_its_own_module_only(name: str) -> None:
    rc, mods = _modules_after([name, "--help"])
    assert rc == 0
    own = _command_modules()[name]
    others = set(_command_modules().values()) - {own}
    assert own in mods
    assert not others & mods - {"hu_roi.indexcli"} or name == "index", sorted(others & mods)
    assert not _top(mods) & set(DECODERS), sorted(_top(mods) & set(DECODERS))


def test_help_lists_every_command_with_the_help_of_its_module() -> None:
    """The registry's help line of each command is the one its ``add_*_parser`` gives, and
    ``hu-roi --help`` shows every command."""
    from hu_roi.cli import build_parser, main
    from hu_roi.commands import registered

    full = build_parser()  # every module imported
    (sub,) = [a for a in full._actions if a.dest == "command"]
    real = {a.dest: a.help for a in sub._choices_actions}
    listed = {c.name: c.help for c in registered()}
    assert listed == real
    lazy = build_parser(["--help"])
    (lsub,) = [a for a in lazy._actions if a.dest == "command"]
    assert {a.dest: a.help for a in lsub._choices_actions} == real
    assert lazy.format_help() == full.format_help()
    with pytest.raises(SystemExit):
        main(["--help"])


def test_lazy_parser_equals_the_full_one_for_the_chosen_command() -> None:
    from hu_roi.cli import build_parser

    def sub_help(p, name):  # type: ignore[no-untyped-def]
        (sub,) = [a for a in p._actions if a.dest == "command"]
        return sub.choices[name].format_help()

    full = build_parser()
    for name in _command_modules():
        for argv in ([name, "--help"], ["-v", name], ["-q", "-v", name, "x"]):
            assert sub_help(build_parser(argv), name) == sub_help(full, name), argv


@pytest.mark.parametrize(
    "argv",
    [["--", "index"], ["nope"], ["-"], ["-v"], ["--verbose", "--quiet"], []],
)
def test_odd_command_words_fail_as_before(argv: list[str]) -> None:
    """Whatever argparse makes of the arguments, the lazy parser gives the same result
    (message and status) as the parser with every command built."""
    import contextlib
    import io

    from hu_roi.cli import build_parser

    def outcome(parser):  # type: ignore[no-untyped-def]
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                ns = parser.parse_args(argv)
            except SystemExit as exc:
                return exc.code, err.getvalue(), out.getvalue()
        return 0, getattr(ns, "command", None), out.getvalue()

    assert outcome(build_parser(argv)) == outcome(build_parser())


def _series_and_rois(tmp_path: Path) -> tuple[Path, Path]:
    d = tmp_path / "dicom"
    hu = np.full((6, 32, 32), 150.0)
    hu[:, :4, :4] = -1000.0
    paths = write_ct_series(d / "s1", hu, pixel_spacing=(0.8, 0.8))
    (d / "README.txt").write_text("not DICOM\n")  # a tree's other files: no pydicom either
    import pydicom

    uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)
    roi = {
        "roi_id": "TEST-T0-L1",
        "patient_id": "TEST",
        "timepoint": "T0",
        "series_instance_uid": uid,
        "level": "L1",
        "irradiated": False,
        "lesion_type": "none",
        "kind": "target",
        "shape": {"type": "circle", "center_mm": [12.8, 12.8, 2.0], "radius_mm": 4.0},
    }
    rois = tmp_path / "r.rois.json"
    doc = {"format": "hu-roi.roiset", "version": 1, "reader": "R1", "rois": [roi]}
    rois.write_text(json.dumps(doc))
    return d, rois


def test_measure_with_a_warm_header_cache_imports_no_decoder(tmp_path: Path) -> None:
    """Second ``hu-roi measure`` of an unchanged tree: headers from the cache, slices by the
    native reader, no pydicom (its import loads every decoder); same CSV as the first."""
    d, rois = _series_and_rois(tmp_path)
    env = dict(os.environ, HU_ROI_CACHE_DIR=str(tmp_path / "cache"))
    args = ["measure", "--dicom", str(d), "--rois", str(rois), "-q"]
    rc, first_mods = _modules_after([*args, "--out", str(tmp_path / "a.csv")], env)
    assert rc == 0
    assert "pydicom" in first_mods  # headers read: pydicom needed
    rc, mods = _modules_after([*args, "--out", str(tmp_path / "b.csv")], env)
    assert rc == 0
    assert not _top(mods) & set(DECODERS), sorted(_top(mods) & set(DECODERS))
    a, b = (tmp_path / "a.csv").read_text(), (tmp_path / "b.csv").read_text()
    assert a == b and ",pass," in a


def test_non_dicom_files_are_refused_without_pydicom(tmp_path: Path) -> None:
    """The preamble check made before importing pydicom gives pydicom's answer."""
    from hu_roi.errors import DicomReadError
    from hu_roi.io.dicom import read_header

    cases = {
        "empty": b"",
        "short": b"hello",
        "text": b"x" * 300,
        "raw-like": b"\x08\x00\x05\x00" + b"junk" * 10,  # no preamble, group 0008: pydicom
        "dicm": b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00",  # preamble: pydicom reads it
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    messages = {}
    for name in cases:
        with pytest.raises(DicomReadError) as exc:
            read_header(tmp_path / name)
        messages[name] = str(exc.value)
    no_preamble = "not a DICOM file (no DICM preamble)"
    assert messages["empty"] == messages["short"] == messages["text"] == no_preamble
    assert messages["raw-like"] != no_preamble and messages["dicm"] != no_preamble


def test_pydicom_logs_stay_off_stderr_when_imported_late(tmp_path: Path) -> None:
    """pydicom resets its logger's level when imported, which now happens after the CLI set
    up logging (here: when ``index`` reads the first header).  Its records must still not
    reach the terminal unless -v: pydicom's messages quote raw header values."""
    write_ct_series(tmp_path / "d", np.zeros((2, 16, 16)))
    code = (
        "import logging, sys\n"
        "from hu_roi.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "assert 'pydicom' in sys.modules\n"
        "logging.getLogger('pydicom').warning('PYDICOM-WARNING')\n"
        "logging.getLogger('pydicom.pixels.decoders.base').error('PYDICOM-CHILD-ERROR')\n"
        "logging.getLogger('hu_roi.x').warning('HU-ROI-WARNING')\n"
        "sys.exit(rc)\n"
    )
    args = [sys.executable, "-c", code, "index", str(tmp_path / "d"), "--no-cache", "-q"]
    quiet = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert "PYDICOM" not in quiet.stderr and "HU-ROI-WARNING" in quiet.stderr
    verbose = subprocess.run([*args, "-v"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert verbose.returncode == 0, verbose.stderr
    assert "PYDICOM-WARNING" in verbose.stderr and "PYDICOM-CHILD-ERROR" in verbose.stderr
