"""napari shape ↔ core Shape conversion (no Qt): round trips and the voxel rule agree.

Reference: docs/design.md's pixel formula ``IPP + c·ΔC·X + r·ΔR·Y`` applied by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from hu_roi_napari._geometry import layer_transform, napari_to_shape, shape_to_napari, vertex_to_lps

from hu_roi.roi import Shape
from hu_roi.series import SeriesInfo, SliceRef


def _info(
    orientation=(1, 0, 0, 0, 1, 0), spacing=(0.8, 0.6), step=2.5, n=6, origin=(-10, -12, 100)
):
    o = np.asarray(orientation, float).reshape(2, 3)
    normal = np.cross(o[0], o[1])
    slices = tuple(
        SliceRef(f"f{k}", tuple(float(v) for v in np.asarray(origin) + k * step * normal))
        for k in range(n)
    )
    return SeriesInfo(
        series_key="s",
        series_instance_uid="1.2",
        study_instance_uid="1",
        patient_id="P",
        study_date="20200101",
        modality="CT",
        manufacturer="",
        model="",
        kvp=120.0,
        kernel="",
        slice_thickness_mm=step,
        contrast_agent="",
        series_description="",
        series_number=1,
        acquisition_number=None,
        frame_of_reference_uid="",
        rows=40,
        columns=48,
        pixel_spacing_mm=spacing,
        orientation=tuple(float(v) for v in orientation),
        slice_spacing_mm=step,
        slices=slices,
        transfer_syntax="",
        rescale_slope=1.0,
        rescale_intercept=-1024.0,
        rescale_type="HU",
        bits_stored=16,
        pixel_representation=0,
        image_type=(),
        patient_position="HFS",
        folder="",
    )


ORIENTATIONS = [(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, 0, -1), (0, 1, 0, 0, 0, -1), (-1, 0, 0, 0, 1, 0)]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_vertex_to_lps_is_design_formula(orientation):
    info = _info(orientation)
    o = np.asarray(orientation, float).reshape(2, 3)
    k, r, c = 3, 7.5, 11.25
    expected = np.asarray(info.slices[k].position_lps_mm) + c * 0.6 * o[0] + r * 0.8 * o[1]
    np.testing.assert_allclose(vertex_to_lps(info, [[k, r, c]])[0], expected, atol=1e-12)
    # the layer matrix maps layer-order indices to world (z, y, x) = reversed LPS
    tr = layer_transform(info)
    world = tr.matrix @ np.append(tr.to_layer([[k, r, c]])[0], 1.0)
    np.testing.assert_allclose(world[:3], expected[::-1], atol=1e-9)
    np.testing.assert_allclose(tr.from_layer(tr.to_layer([[k, r, c]])), [[k, r, c]])


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize(
    "shape",
    [
        Shape(
            type="ellipse",
            center_mm=(0.0, 0.0, 0.0),
            radii_mm=(7.0, 4.0),
            angle_deg=30.0,
            has_angle=True,
        ),
        Shape(type="ellipse", center_mm=(0.0, 0.0, 0.0), radii_mm=(3.0, 6.0)),
        Shape(type="circle", center_mm=(0.0, 0.0, 0.0), radius_mm=5.0),
        Shape(type="sphere", center_mm=(0.0, 0.0, 0.0), radius_mm=5.0),
    ],
)
def test_round_trip_on_a_slice(orientation, shape):
    """core shape → napari corners → core shape gives the same shape (centre on slice k)."""
    info = _info(orientation)
    k = 2
    # put the centre on slice k, inside the image
    centre = vertex_to_lps(info, [[k, 18.3, 22.7]])[0]
    from dataclasses import replace

    shape = replace(shape, center_mm=tuple(centre))
    st, verts = shape_to_napari(info, shape, k)
    back = napari_to_shape(info, st, verts, geometry="sphere" if shape.type == "sphere" else "")
    assert back.type == shape.type
    np.testing.assert_allclose(back.center_mm, shape.center_mm, atol=1e-9)
    if shape.type == "ellipse":
        np.testing.assert_allclose(back.radii_mm, shape.radii_mm, atol=1e-9)
        assert back.angle_deg == pytest.approx(shape.angle_deg, abs=1e-9)
    else:
        assert back.radius_mm == pytest.approx(shape.radius_mm, abs=1e-9)


def test_polygon_and_off_slice_shapes():
    info = _info()
    verts = np.array([[1, 2, 2], [1, 2, 10], [1, 9, 6]], float)
    poly = napari_to_shape(info, "polygon", verts)
    np.testing.assert_allclose(poly.points_mm, vertex_to_lps(info, verts))
    with pytest.raises(ValueError, match="one slice"):
        napari_to_shape(info, "polygon", np.array([[1, 2, 2], [2, 2, 10], [1, 9, 6]], float))
    with pytest.raises(ValueError, match="not an area"):
        napari_to_shape(info, "path", verts)
    # a line is a vertebral height: its two points in LPS, across slices too
    line = napari_to_shape(info, "line", np.array([[0, 2, 2], [2, 9, 6]], float))
    assert line.type == "line"
    np.testing.assert_allclose(line.points_mm, vertex_to_lps(info, [[0, 2, 2], [2, 9, 6]]))
    half = napari_to_shape(info, "line", np.array([[0.5, 2, 2], [1.5, 2, 2]], float))
    mid = 0.5 * (vertex_to_lps(info, [[0, 2, 2]]) + vertex_to_lps(info, [[1, 2, 2]]))
    np.testing.assert_allclose(half.points_mm[0], mid[0])
    # and back: the same data indices
    from hu_roi_napari._geometry import shape_to_napari

    st, back = shape_to_napari(info, half, 0)
    assert st == "line"
    np.testing.assert_allclose(back, [[0.5, 2, 2], [1.5, 2, 2]], atol=1e-9)
