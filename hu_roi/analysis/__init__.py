"""Trial analysis: statistics and endpoints computed from the exported CSV tables.

Depends only on the CSV schemas, never on DICOM or ROI code.  Submodules are imported
explicitly (``from hu_roi.analysis import stats``); nothing heavy is imported here.
"""
