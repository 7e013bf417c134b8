"""The JSON Schema of the ROI set file (hu_roi/schemas/roiset.schema.json).

Checked against every ROI file the project writes: the bundled sample set (which the demo
measures), sets written by :func:`hu_roi.roi.save_roiset` (the viewer's Save uses it) and
by ``hu-roi roi new``; and it agrees with :func:`hu_roi.roi.load_roiset` on the structural
errors a schema can express.  The schema's enumerations are the code's own lists.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from cli_helpers import run_main
from dicom_factory import write_ct_series
from test_bad_rois import BAD_FILES

from hu_roi.errors import RoiFormatError
from hu_roi.roi import (
    LESION_TYPES,
    LEVELS,
    REFERENCE_KINDS,
    SHAPE_TYPES,
    TIMEPOINTS,
    Roi,
    RoiSet,
    is_valid_kind,
    load_roiset,
    save_roiset,
    schema_path,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(schema_path().read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)  # a valid 2020-12 schema
    return jsonschema.Draft202012Validator(schema)


def _errors(validator, doc) -> list[str]:
    return [e.message for e in validator.iter_errors(doc)]


def test_schema_is_package_data() -> None:
    assert schema_path().is_file()
    assert schema_path().parent.name == "schemas" and schema_path().parent.parent.name == "hu_roi"
    assert 'hu_roi = ["schemas/*.json"]' in (REPO / "pyproject.toml").read_text()


def test_schema_lists_are_the_codes_lists(validator) -> None:
    s = validator.schema
    props = s["$defs"]["roi"]["properties"]
    assert props["level"]["enum"] == [*LEVELS, None]
    assert props["timepoint"]["enum"] == [*TIMEPOINTS, None]
    assert props["lesion_type"]["enum"] == [*LESION_TYPES, None]
    assert s["$defs"]["shape"]["properties"]["type"]["enum"] == list(SHAPE_TYPES)
    kinds = ["target", *REFERENCE_KINDS, "phantom-a1", "phantom-", "bone", "reference-bone"]
    import re

    pat = re.compile(props["kind"]["pattern"])
    assert [bool(pat.search(k)) for k in kinds] == [is_valid_kind(k) for k in kinds]
    for t, need in SHAPE_TYPES.items():
        rule = next(
            r for r in s["$defs"]["shape"]["allOf"] if r["if"]["properties"]["type"]["const"] == t
        )
        assert set(rule["then"]["required"]) == set(need)


def test_bundled_roi_files_match(validator) -> None:
    files = sorted(REPO.glob("sample_dicom/**/*.rois.json"))
    assert files, "the sample set is bundled"
    for f in files:
        doc = json.loads(f.read_text(encoding="utf-8"))
        assert _errors(validator, doc) == [], f
        load_roiset(f)  # and the loader agrees


def _all_shapes_set() -> RoiSet:
    shapes = [
        {"type": "circle", "center_mm": [1.5, -2.0, 3.0], "radius_mm": 4.0},
        {"type": "ellipse", "center_mm": [0, 0, 0], "radii_mm": [5.0, 3.0], "angle_deg": 30.0},
        {"type": "ellipse", "center_mm": [0, 0, 0], "radii_mm": [5.0, 3.0]},
        {"type": "polygon", "points_mm": [[0, 0, 1], [10, 0, 1], [10, 10, 1], [0, 10, 1]]},
        {"type": "sphere", "center_mm": [0, 0, 0], "radius_mm": 6.0},
    ]
    rois = [
        Roi.from_dict(
            {
                "roi_id": f"P01-T0-{i}",
                "patient_id": "P01",
                "timepoint": "T0",
                "series_instance_uid": "",
                "series_key": "nouid-1234",
                "study_date": "20200101",
                "level": "L1" if i % 2 else None,
                "irradiated": bool(i % 2),
                "lesion_type": "mixed",
                "kind": "target" if i % 2 else "phantom-ca100",
                "density_mg_cm3": None if i % 2 else 100.0,
                "proposed": i == 3,
                "comment": "an unknown field",
                "shape": s,
            }
        )
        for i, s in enumerate(shapes)
    ]
    return RoiSet(rois=tuple(rois), reader="R1", extra={"site": "X"})


def test_files_written_by_save_roiset_match(tmp_path, validator) -> None:
    """save_roiset is the one writer (viewer Save, hu-roi roi new, propagation)."""
    saved = save_roiset(_all_shapes_set(), tmp_path / "a.rois.json")
    saved = save_roiset(saved.without_roi("P01-T0-0"))  # a second save: two history entries
    doc = json.loads(Path(saved.path).read_text(encoding="utf-8"))
    assert len(doc["history"]) == 2
    assert _errors(validator, doc) == []


def test_files_written_by_roi_new_match(tmp_path, validator) -> None:
    dicom = tmp_path / "dicom"
    write_ct_series(dicom, np.zeros((3, 16, 16)), series_uid="1.2.826.0.1.3680043.10.1234.5")
    out = tmp_path / "new.rois.json"
    for level, row in (("L1", 4), ("L2", 8)):
        proc = run_main(
            "roi", "new", "--dicom", str(dicom), "--series", "1.2.826.0.1.3680043.10.1234.5",
            "--voxel", "1", str(row), "5", "--radius", "3", "--level", level,
            "--timepoint", "T0", "--patient-id", "TEST", "--out", str(out),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert len(doc["rois"]) == 2
    assert _errors(validator, doc) == []


#: BAD_FILES cases of test_bad_rois whose fault a JSON Schema can express.
SCHEMA_EXPRESSIBLE = [
    "top_level_list", "wrong_format", "no_format", "future_version", "rois_not_list",
    "roi_not_object", "missing_roi_id", "missing_patient_id", "missing_shape",
    "unknown_shape_type", "shape_type_not_a_string", "circle_without_radius",
    "ellipse_without_radii", "polygon_without_points", "negative_radius", "zero_radius",
    "negative_ellipse_radius", "radius_is_text", "radius_is_bool", "centre_2d",
    "polygon_two_points", "bad_level", "bad_timepoint", "bad_kind", "bad_irradiated",
]  # fmt: skip


@pytest.mark.parametrize("case", SCHEMA_EXPRESSIBLE)
def test_schema_refuses_what_the_loader_refuses(tmp_path, validator, case) -> None:
    content = next(c[1] for c in BAD_FILES if c[0] == case)
    p = tmp_path / "x.rois.json"
    p.write_text(content)  # type: ignore[arg-type]
    with pytest.raises(RoiFormatError):
        load_roiset(p)
    assert _errors(validator, json.loads(content)), f"the schema accepts {case}"
