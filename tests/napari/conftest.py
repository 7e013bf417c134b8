"""Fixtures of the napari plugin tests: small real CT series written with pydicom.

napari's pytest plugin (``make_napari_viewer``) is registered by napari's entry point;
pytest-xvfb starts an X server, so the viewer renders for real (screenshots work).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dicom_factory import write_ct_series
from napari_helpers import (
    A_ORIGIN,
    A_SHAPE,
    A_SPACING,
    A_STEP,
    B_ORIENT,
    B_ORIGIN,
    B_SHAPE,
    B_SPACING,
    B_STEP,
    SECRET,
    hu_a,
    hu_b,
    make_widget,
)


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """``study/dicom/{T0,T2}`` with series A and B, plus a refused localizer in T0."""
    root = tmp_path / "study" / "dicom"
    tags = dict(SECRET, SeriesDescription="Spine A")
    write_ct_series(
        root / "T0",
        hu_a(),
        pixel_spacing=A_SPACING,
        origin=A_ORIGIN,
        slice_positions=np.arange(A_SHAPE[0]) * A_STEP,
        extra_tags=tags,
    )
    tags_b = dict(SECRET, SeriesDescription="Spine B", StudyDate="20210614", KVP=100)
    write_ct_series(
        root / "T2",
        hu_b(),
        pixel_spacing=B_SPACING,
        origin=B_ORIGIN,
        orientation=B_ORIENT,
        slice_positions=np.arange(B_SHAPE[0]) * B_STEP,
        extra_tags=tags_b,
    )
    scout = dict(
        SECRET, SeriesDescription="Topogram", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]
    )
    write_ct_series(root / "T0", np.zeros((1, 16, 16)), extra_tags=scout)
    return root


@pytest.fixture(autouse=True)
def _reset_plugin_state():
    """Blinded mode is process-wide (the reader reads it): reset around each test."""
    from hu_roi_napari._series import PLUGIN_STATE

    PLUGIN_STATE.blinded, PLUGIN_STATE.labels = False, None
    yield
    PLUGIN_STATE.blinded, PLUGIN_STATE.labels = False, None


@pytest.fixture
def notes(monkeypatch) -> list[str]:
    """Messages the reader shows as napari notifications (collected, not shown)."""
    import hu_roi_napari._reader as rd

    seen: list[str] = []
    monkeypatch.setattr(rd, "notify", lambda msg, warning=True: seen.append(msg))
    return seen


@pytest.fixture
def widget(make_napari_viewer):
    """(viewer, HuRoiWidget) with dialogs answered automatically."""
    viewer = make_napari_viewer()
    return viewer, make_widget(viewer)
