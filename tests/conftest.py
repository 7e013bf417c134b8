"""Shared fixtures: where the real CT data of ../shared/real_ct lives (skip when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Real DICOM/NIfTI from public sources, next to the repository (never copied into it).
REAL_CT = REPO.parent / "shared" / "real_ct"
SAMPLE_DICOM = REPO / "sample_dicom"


@pytest.fixture(scope="session")
def real_ct() -> Path:
    """Path of ../shared/real_ct; the test is skipped when it is absent."""
    if not REAL_CT.is_dir():
        pytest.skip(f"real CT data not found at {REAL_CT}")
    return REAL_CT


@pytest.fixture(autouse=True, scope="session")
def _private_header_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the persistent header cache of the CLI out of the user's home (subprocesses too)."""
    import os

    os.environ["HU_ROI_CACHE_DIR"] = str(tmp_path_factory.mktemp("hu-roi-cache"))
