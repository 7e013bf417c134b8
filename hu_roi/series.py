"""Header-level description of a CT series (no pixels, no pydicom).

:class:`SeriesInfo` is what ``hu-roi index`` produces for every series it finds and what
the loader needs to read pixels.  It is a frozen dataclass; the I/O layer
(:mod:`hu_roi.io.dicom`) builds it from DICOM headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

#: Problem codes a series can carry, with what each means.  Codes marked as *refusing*
#: make :func:`hu_roi.io.load_series` refuse the series unless the caller accepts them.
PROBLEM_CODES: dict[str, str] = {
    "not-ct": "Modality is not CT, or the pixel values are not Hounsfield units",
    "localizer": "Scout/localizer image (ImageType LOCALIZER or a single projection image)",
    "empty-uid": "SeriesInstanceUID is empty or missing; grouped by content (no path)",
    "missing-slices": "A gap between slice positions larger than 1.5x the usual spacing",
    "non-uniform-spacing": "Slice spacing varies by more than 1% (but no gap)",
    "duplicate-positions": "Two or more images share one slice position",
    "gantry-tilt": "Slice stacking direction is not along the image normal",
    "multiframe": "Enhanced/multi-frame image object (NumberOfFrames > 1)",
    "mixed-orientation": "Images of the series have different ImageOrientationPatient",
    "no-rescale": "RescaleSlope/RescaleIntercept missing: stored values taken as HU",
    "mixed-size": "Images of the series have different Rows/Columns/PixelSpacing",
    "single-slice": "Only one image: slice spacing unknown",
}

#: Problems that make a measurement wrong: loading is refused unless accepted.
REFUSING_PROBLEMS: frozenset[str] = frozenset(
    {
        "not-ct",
        "localizer",
        "missing-slices",
        "duplicate-positions",
        "gantry-tilt",
        "multiframe",
        "mixed-orientation",
        "mixed-size",
    }
)


#: Refusing problems that ``hu-roi measure`` accepts by default: the voxel rule uses each
#: slice's own position, so ROIs on such a series still get the right voxels (rows carry
#: a ``series-<problem>`` warning).  ``load_series`` still refuses them unless accepted.
MEASURE_ACCEPTS: tuple[str, ...] = ("missing-slices", "gantry-tilt")


#: Largest deviation of ImageOrientationPatient from two orthonormal vectors: of each
#: vector's length from 1 and of their dot product from 0 (≈ 0.06° from a right angle;
#: at 250 mm from the first pixel a quarter of a 1 mm pixel).  The one tolerance of the
#: index (a file beyond it is skipped) and of every Volume (refused), so both give one
#: verdict.  Real scanners write the values to 1e-6 or better.
ORIENTATION_TOL = 1e-3


def orientation_problem(orientation: Sequence[float] | np.ndarray) -> str:
    """Why six direction cosines are not two orthonormal vectors ("" when they are).

    Parameters
    ----------
    orientation : sequence of 6 float
        ImageOrientationPatient: X (row direction) then Y (column direction).

    Returns
    -------
    str
        ``""`` within :data:`ORIENTATION_TOL`; else a short reason naming the deviation.
    """
    o = np.asarray(orientation, dtype=float).reshape(-1)
    if o.shape != (6,) or not np.all(np.isfinite(o)):
        return "not six finite numbers"
    x, y = o[:3], o[3:]
    for name, v in (("X", x), ("Y", y)):
        dev = abs(float(np.linalg.norm(v)) - 1.0)
        if not dev <= ORIENTATION_TOL:
            return f"|{name}| differs from 1 by {dev:.2g} (tolerance {ORIENTATION_TOL:g})"
    dot = abs(float(x @ y))
    if not dot <= ORIENTATION_TOL:
        return f"X and Y not orthogonal: |X·Y| = {dot:.2g} (tolerance {ORIENTATION_TOL:g})"
    return ""


@dataclass(frozen=True)
class SliceRef:
    """One image of a series, as the index saw it.

    Attributes
    ----------
    path : str
        File path.
    position_lps_mm : tuple of 3 float
        ImagePositionPatient (LPS, mm).
    sop_instance_uid : str
        SOPInstanceUID (may be empty).
    instance_number : int or None
        InstanceNumber, informative only (never used for ordering).
    frame : int
        Frame number inside a multi-frame file (0 for single-frame files).
    """

    path: str
    position_lps_mm: tuple[float, float, float]
    sop_instance_uid: str = ""
    instance_number: int | None = None
    frame: int = 0


@dataclass(frozen=True)
class SeriesInfo:
    """Header facts of one series, slices sorted by position along the slice normal.

    Attributes
    ----------
    series_key : str
        Stable identifier: the SeriesInstanceUID when present, otherwise a documented
        content key of the images (see :func:`hu_roi.io.dicom.content_series_key`).
    series_instance_uid : str
        SeriesInstanceUID, ``""`` when empty or missing.
    slices : tuple of SliceRef
        The images, sorted by position along ``normal`` (ascending).
    orientation : tuple of 6 float
        ImageOrientationPatient of the first image: X (row direction) then Y.
    pixel_spacing_mm : tuple of 2 float
        (ΔR, ΔC) = PixelSpacing: spacing between rows, between columns (mm).
    slice_spacing_mm : float
        Median distance between consecutive slice positions (mm); NaN for one slice.
    problems : tuple of str
        Problem codes from :data:`PROBLEM_CODES`.
    """

    series_key: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    study_date: str
    modality: str
    manufacturer: str
    model: str
    kvp: float | None
    kernel: str
    slice_thickness_mm: float | None
    contrast_agent: str
    series_description: str
    series_number: int | None
    acquisition_number: int | None
    frame_of_reference_uid: str
    rows: int
    columns: int
    pixel_spacing_mm: tuple[float, float]
    orientation: tuple[float, float, float, float, float, float]
    slice_spacing_mm: float
    slices: tuple[SliceRef, ...]
    transfer_syntax: str
    rescale_slope: float | None
    rescale_intercept: float | None
    rescale_type: str
    bits_stored: int
    pixel_representation: int
    image_type: tuple[str, ...]
    patient_position: str
    folder: str
    problems: tuple[str, ...] = ()
    study_time: str = ""
    gantry_tilt_deg: float | None = None
    number_of_frames: int = 1
    #: Direct identifiers, kept for the user who asks for them; never exported by default.
    patient_name: str = field(default="", repr=False)
    patient_birth_date: str = field(default="", repr=False)

    @property
    def n_slices(self) -> int:
        """Number of images (slices) in the series."""
        return len(self.slices)

    # cached_property writes to the instance __dict__, which a frozen dataclass allows;
    # the arrays are read-only because every caller shares them.
    @cached_property
    def normal(self) -> np.ndarray:
        """Unit slice normal X × Y, shape (3,), read-only."""
        x = np.asarray(self.orientation[:3], dtype=float)
        y = np.asarray(self.orientation[3:], dtype=float)
        n = np.cross(x, y)
        n /= np.linalg.norm(n)
        n.flags.writeable = False
        return n

    @cached_property
    def positions_along_normal_mm(self) -> np.ndarray:
        """Slice positions projected on the normal (mm), shape (n_slices,), ascending, read-only."""
        p = np.array([s.position_lps_mm for s in self.slices], dtype=float).reshape(-1, 3)
        along = p @ self.normal
        along.flags.writeable = False
        return along

    @property
    def refusing_problems(self) -> tuple[str, ...]:
        """The problems of this series that make loading refuse by default."""
        return tuple(p for p in self.problems if p in REFUSING_PROBLEMS)

    @property
    def measure_refuses(self) -> tuple[str, ...]:
        """The problems for which ``hu-roi measure`` (without ``--accept``) refuses this
        series: :attr:`refusing_problems` minus :data:`MEASURE_ACCEPTS`."""
        return tuple(p for p in self.refusing_problems if p not in MEASURE_ACCEPTS)

    def __repr__(self) -> str:
        # short: the slice list of a 300-image series would fill the terminal
        kvp = "" if self.kvp is None else f", kvp={self.kvp:g}"
        return (
            f"SeriesInfo(series_key={self.series_key!r}, modality={self.modality!r}, "
            f"series_description={self.series_description!r}, "
            f"n_slices={self.n_slices}, rows={self.rows}, columns={self.columns}{kvp}, "
            f"problems={self.problems!r})"
        )
