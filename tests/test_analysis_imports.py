"""The analysis depends only on CSV schemas: no DICOM, ROI or I/O code (docs/design.md).

Checked twice: statically (no import statement in the analysis sources names a forbidden
module) and dynamically (importing every analysis module in a fresh interpreter loads none
of them).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ANALYSIS = ROOT / "hu_roi" / "analysis"
FORBIDDEN = (
    "pydicom",
    "SimpleITK",
    "highdicom",
    "hu_roi.io",
    "hu_roi.roi",
    "hu_roi.rasterize",
    "hu_roi.measure",
    "hu_roi.volume",
    "hu_roi.series",
    "hu_roi.batch",
    "hu_roi.calibration",
    "napari",
)
MODULES = ("schemas", "clinical", "pain", "endpoints", "report", "cli", "stats")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("module", MODULES)
def test_no_forbidden_import_statements(module: str) -> None:
    path = ANALYSIS / f"{module}.py"
    if not path.exists():
        pytest.skip(f"{path.name} not present")
    bad = {n for n in _imports(path) for f in FORBIDDEN if n == f or n.startswith(f + ".")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_importing_the_analysis_loads_no_dicom_or_roi_code() -> None:
    code = (
        "import sys\n"
        + "".join(
            f"import hu_roi.analysis.{m}\n" for m in MODULES if (ANALYSIS / f"{m}.py").exists()
        )
        + f"bad = sorted(m for m in sys.modules for f in {FORBIDDEN!r} if m == f or m.startswith(f + '.'))\n"
        + "print(','.join(bad))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""
