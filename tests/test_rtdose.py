"""RT Dose grids (issue 15, item 7, the reading and sampling part): RTDOSE files written
with pydicom with known dose patterns -- uniform blocks, a linear gradient (trilinear
interpolation reproduces it exactly), a multi-frame grid with both forms of
GridFrameOffsetVector and DoseGridScaling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RTDoseStorage, generate_uid

from hu_roi.io.rtdose import DoseError, read_rtdose


def write_rtdose(
    path: Path,
    dose_gy: np.ndarray,
    *,
    origin=(0.0, 0.0, 0.0),
    spacing=(2.0, 2.0),
    offsets=None,
    scaling: float = 1e-4,
    units: str = "GY",
    orientation=(1.0, 0, 0, 0, 1.0, 0),
) -> Path:
    """An RT Dose Storage file of ``dose_gy`` (frames, rows, columns), stored as uint32
    ``round(dose / scaling)``."""
    nf, rows, cols = dose_gy.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTDoseStorage
    meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTDoseStorage, uid, "RTDOSE"
    ds.FrameOfReferenceUID = "1.2.3.4"
    ds.ImagePositionPatient = list(origin)
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(spacing)
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, nf
    ds.GridFrameOffsetVector = list(np.arange(nf) * 3.0 if offsets is None else offsets)
    ds.FrameIncrementPointer = 0x3004000C
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit, ds.PixelRepresentation = 31, 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = units, "PHYSICAL", "PLAN"
    ds.DoseGridScaling = scaling
    ds.PixelData = np.rint(dose_gy / scaling).astype(np.uint32).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_uniform_blocks_and_outside(tmp_path: Path) -> None:
    d = np.zeros((4, 10, 12))
    d[:, :, :6] = 30.0  # patient right half (x < 10 mm) 30 Gy, left half 2 Gy
    d[:, :, 6:] = 2.0
    g = read_rtdose(write_rtdose(tmp_path / "d.dcm", d))
    assert g.sample(np.array([4.0, 6.0, 3.0])) == pytest.approx(30.0)
    assert g.sample(np.array([20.0, 6.0, 6.0])) == pytest.approx(2.0)
    assert g.sample(np.array([11.0, 6.0, 6.0])) == pytest.approx(16.0)  # between columns 5, 6
    assert np.isnan(g.sample(np.array([4.0, 6.0, 9.5])))  # beyond the last frame
    assert np.isnan(g.sample(np.array([-1.0, 6.0, 3.0])))


def test_gradient_is_reproduced_by_trilinear_sampling(tmp_path: Path) -> None:
    f, r, c = np.indices((5, 8, 9)).astype(float)
    x, y, z = 10 + 2 * c, -5 + 2.5 * r, 40 + 3 * f
    d = 0.5 * x + 0.2 * y + 0.3 * z + 1.0  # linear in LPS: trilinear is exact
    g = read_rtdose(
        write_rtdose(tmp_path / "d.dcm", d, origin=(10, -5, 40), spacing=(2.5, 2.0), scaling=1e-5)
    )
    rng = np.random.default_rng(1)
    pts = np.column_stack(
        [rng.uniform(10, 26, 50), rng.uniform(-5, 12.5, 50), rng.uniform(40, 52, 50)]
    )
    want = 0.5 * pts[:, 0] + 0.2 * pts[:, 1] + 0.3 * pts[:, 2] + 1.0
    assert np.allclose(g.sample(pts), want, atol=1e-4)


@pytest.mark.parametrize("absolute", [False, True])
def test_multiframe_offsets_both_forms_and_uneven(tmp_path: Path, absolute: bool) -> None:
    offs = np.array([0.0, 2.0, 5.0, 9.0])  # uneven frames
    d = np.broadcast_to((10.0 * np.arange(1, 5))[:, None, None], (4, 6, 6)).copy()
    offsets = offs + 100.0 if absolute else offs
    g = read_rtdose(write_rtdose(tmp_path / "d.dcm", d, origin=(0, 0, 100), offsets=offsets))
    assert g.sample(np.array([2.0, 2.0, 105.0])) == pytest.approx(30.0)
    assert g.sample(np.array([2.0, 2.0, 107.0])) == pytest.approx(35.0)  # halfway 5..9 mm
    assert g.sample(np.array([2.0, 2.0, 101.0])) == pytest.approx(15.0)


def test_decreasing_offsets_are_sorted(tmp_path: Path) -> None:
    d = np.stack([np.full((4, 4), v) for v in (3.0, 2.0, 1.0)])
    g = read_rtdose(write_rtdose(tmp_path / "d.dcm", d, origin=(0, 0, 0), offsets=[0, -3, -6]))
    assert g.sample(np.array([1.0, 1.0, -6.0])) == pytest.approx(1.0)
    assert g.sample(np.array([1.0, 1.0, -1.5])) == pytest.approx(2.5)


def test_bad_rtdose_is_refused(tmp_path: Path) -> None:
    d = np.ones((2, 4, 4))
    with pytest.raises(DoseError, match="DoseUnits"):
        read_rtdose(write_rtdose(tmp_path / "a.dcm", d, units="RELATIVE"))
    with pytest.raises(DoseError, match="neither 0 nor"):
        read_rtdose(write_rtdose(tmp_path / "b.dcm", d, offsets=[7.0, 10.0]))
    with pytest.raises(DoseError, match="repeats"):
        read_rtdose(write_rtdose(tmp_path / "c.dcm", d, offsets=[0.0, 0.0]))
    (tmp_path / "e.dcm").write_bytes(b"x" * 200)
    with pytest.raises(DoseError, match="cannot read"):
        read_rtdose(tmp_path / "e.dcm")
