"""hu-roi: bone density (Hounsfield units) of vertebral bodies in CT.

The headless core.  It never imports napari, Qt, magicgui or vispy.

Main entry points
-----------------
- :func:`hu_roi.io.index_folder` — header-only scan of a DICOM tree into series.
- :func:`hu_roi.io.load_series` — HU volume (all or only some slices) of a series.
- :class:`hu_roi.volume.Volume` — HU array + LPS geometry.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
