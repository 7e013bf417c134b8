"""The I/O layer: the only part of hu-roi that imports pydicom or SimpleITK.

- :func:`index_folder` — header-only scan of a DICOM tree into :class:`~hu_roi.series.SeriesInfo`.
- :func:`load_series` — the HU :class:`~hu_roi.volume.Volume` of a series (all or some slices).
"""

from hu_roi.io.dicom import IndexResult, SkippedFile, index_folder, read_header
from hu_roi.io.load import check_loadable, load_series, slice_indices_at

__all__ = [
    "IndexResult",
    "SkippedFile",
    "check_loadable",
    "index_folder",
    "load_series",
    "read_header",
    "slice_indices_at",
]
