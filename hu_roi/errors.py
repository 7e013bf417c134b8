"""The exception hierarchy of hu-roi.

Every error the library raises on bad input is a :class:`HuRoiError`, which also
subclasses the builtin a caller would naturally catch (``ValueError``, ``OSError``),
so ``except ValueError`` keeps working.  Messages say what was wrong, what was
received, and what to do.
"""

from __future__ import annotations


class HuRoiError(Exception):
    """Base class of every error raised by hu-roi on bad input."""


class DicomReadError(HuRoiError, OSError):
    """A file could not be read as a usable DICOM image (truncated, garbled, not DICOM)."""


class SeriesProblemError(HuRoiError, ValueError):
    """A series has a problem that would make a measurement wrong (tilt, gap, duplicates...).

    Attributes
    ----------
    problems : tuple of str
        The problem codes (see ``hu_roi.series.PROBLEM_CODES``) that caused the refusal.
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class GeometryError(HuRoiError, ValueError):
    """Geometry is inconsistent or an ROI cannot be placed on the image grid."""


class RoiFormatError(HuRoiError, ValueError):
    """An ROI file or an ROI in it is not valid; the message names the ROI and the field."""


class RoiConflictError(HuRoiError, RuntimeError):
    """An ROI file changed on disk since it was loaded; saving would overwrite someone's work."""


class SchemaError(HuRoiError, ValueError):
    """A CSV table does not match its declared schema (missing column, bad value)."""
