"""Baseline of the whole-process figure: a SimpleITK script that measures ROIs.

``python bench/sitk_measure.py DICOM_ROOT ROIS.json [ROIS.json ...]``: for every series
folder under DICOM_ROOT, SimpleITK (GDCM) loads the whole series as int16 and each ROI of
that series (matched by SeriesInstanceUID) is masked on its slice; one line per ROI with
its mean HU goes to stdout.  What a user would write without hu-roi; it starts, imports
and reads like ``hu-roi measure`` does, so the two are timed the same way (whole process).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def main(argv: list[str]) -> int:
    root, roi_files = Path(argv[0]), argv[1:]
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    rois: dict[str, list[dict]] = {}
    for f in roi_files:
        for roi in json.loads(Path(f).read_text())["rois"]:
            rois.setdefault(roi["series_instance_uid"], []).append(roi)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        reader = sitk.ImageSeriesReader()
        for uid in reader.GetGDCMSeriesIDs(str(folder)):
            if uid not in rois:
                continue
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
            reader.SetOutputPixelType(sitk.sitkInt16)
            img = reader.Execute()
            arr = sitk.GetArrayViewFromImage(img)
            sp = img.GetSpacing()
            yy, xx = np.ogrid[: arr.shape[1], : arr.shape[2]]
            for roi in rois[uid]:
                sh = roi["shape"]
                i, j, k = img.TransformPhysicalPointToIndex(sh["center_mm"])
                rx, ry = sh.get("radii_mm", [sh.get("radius_mm")] * 2)
                mask = ((xx - i) * sp[0] / rx) ** 2 + ((yy - j) * sp[1] / ry) ** 2 <= 1
                print(f"{roi['roi_id']},{float(arr[k][mask].mean()):.3f}")
            del img, arr
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
