"""The I/O layer: the only part of hu-roi that imports pydicom or SimpleITK.

- :func:`index_folder` — header-only scan of a DICOM tree into :class:`~hu_roi.series.SeriesInfo`.
- :func:`load_series` — the HU :class:`~hu_roi.volume.Volume` of a series (all or some slices).

pydicom itself is imported only when a file needs it (a header not in the header cache, a
compressed or unusual file): importing it loads every pixel decoder it knows.
"""

import logging

from hu_roi.io.dicom import IndexResult, SkippedFile, index_folder, read_header
from hu_roi.io.load import check_loadable, load_series, slice_indices_at


def pydicom_logger() -> logging.Logger:
    """pydicom's logger, pydicom imported first (it sets its logger's level when imported,
    so a level set before would be lost)."""
    import pydicom  # noqa: F401

    return logging.getLogger("pydicom")


__all__ = [
    "IndexResult",
    "SkippedFile",
    "check_loadable",
    "index_folder",
    "load_series",
    "pydicom_logger",
    "read_header",
    "slice_indices_at",
]
