"""The voxel rule against an independent brute-force reference.

Reference: LPS coordinates of *every* voxel centre of the full volume computed directly
from DICOM's formula ``IPP + c·ΔC·X + r·ΔR·Y`` with numpy, and the rule of docs/roi_format.md
applied to them (nearest slice for 2D shapes, inside-or-on test; sphere distance test).
Polygons are tested against matplotlib's ``Path.contains_points`` (a separate
implementation), with vertices placed off the pixel grid so boundary handling is moot.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from hu_roi.errors import GeometryError, RoiFormatError
from hu_roi.rasterize import RoiPlacementError, mask_on_slice, rasterize_roi, slices_needed
from hu_roi.roi import Roi, Shape
from hu_roi.series import SeriesInfo, SliceRef
from hu_roi.volume import Volume

ORIENTATIONS = {
    "axial": (1, 0, 0, 0, 1, 0),
    "axial-flipY": (1, 0, 0, 0, -1, 0),
    "axial-ffs": (-1, 0, 0, 0, 1, 0),
    "sagittal": (0, 1, 0, 0, 0, -1),
    "coronal": (1, 0, 0, 0, 0, -1),
    "oblique": (
        math.cos(0.3),
        math.sin(0.3),
        0.0,
        -math.sin(0.3) * math.cos(0.2),
        math.cos(0.3) * math.cos(0.2),
        math.sin(0.2),
    ),
}


def make_volume(
    orientation=(1, 0, 0, 0, 1, 0),
    spacing=(0.7, 1.3),
    shape=(9, 40, 36),
    slice_step=2.5,
    origin=(-20.0, -30.0, 100.0),
    descending=False,
    tilt_mm_per_slice=0.0,
    seed=0,
):
    ori = np.asarray(orientation, dtype=float).reshape(2, 3)
    n = np.cross(ori[0], ori[1])
    steps = np.arange(shape[0]) * slice_step
    if descending:
        steps = steps[::-1]
    origins = (
        np.asarray(origin)
        + steps[:, None] * n
        + (np.arange(shape[0])[:, None] * tilt_mm_per_slice * ori[1])
    )
    rng = np.random.default_rng(seed)
    hu = rng.integers(-200, 800, size=shape).astype(np.int16)
    return Volume(hu=hu, orientation=ori, pixel_spacing_mm=spacing, slice_origins_lps_mm=origins)


def all_voxel_lps(vol: Volume) -> np.ndarray:
    """LPS of every voxel centre, shape (slices, rows, cols, 3) — the reference grid."""
    ns, nr, nc = vol.hu.shape
    dr, dc = vol.pixel_spacing_mm
    X, Y = vol.orientation
    r = np.arange(nr)[None, :, None, None]
    c = np.arange(nc)[None, None, :, None]
    o = vol.slice_origins_lps_mm[:, None, None, :]
    return o + c * dc * X + r * dr * Y


def reference_mask(vol: Volume, roi: Roi) -> np.ndarray:
    P = all_voxel_lps(vol)
    n = vol.normal
    X, Y = vol.orientation
    s = roi.shape
    eps = 1e-6
    if s.type == "sphere":
        return np.linalg.norm(P - np.asarray(s.center_mm), axis=-1) <= s.radius_mm + eps
    # 2D: the slice whose centre (any voxel centre of the slice: they share the plane) is
    # nearest to the plane
    plane = (
        (np.asarray(s.center_mm) @ n)
        if s.center_mm is not None
        else float(np.mean(np.asarray(s.points_mm) @ n))
    )
    d = np.abs(vol.slice_origins_lps_mm @ n - plane)
    k = int(np.argmin(d))
    m = np.zeros(vol.hu.shape, dtype=bool)
    Pk = P[k]
    if s.type == "circle":
        q = Pk - np.asarray(s.center_mm)
        q = q - (q @ n)[..., None] * n
        m[k] = np.linalg.norm(q, axis=-1) <= s.radius_mm + eps
    elif s.type == "ellipse":
        t = math.radians(s.angle_deg)
        e1 = math.cos(t) * X + math.sin(t) * Y
        e2 = -math.sin(t) * X + math.cos(t) * Y
        q = Pk - np.asarray(s.center_mm)
        a, b = q @ e1, q @ e2
        m[k] = (a / s.radii_mm[0]) ** 2 + (b / s.radii_mm[1]) ** 2 <= 1 + 1e-9
    else:
        pts = np.asarray(s.points_mm)
        path = MplPath(np.column_stack([pts @ X, pts @ Y]))
        uv = np.column_stack([(Pk @ X).ravel(), (Pk @ Y).ravel()])
        m[k] = path.contains_points(uv).reshape(Pk.shape[:2])
    return m


def roi_of(shape: dict, rid="R") -> Roi:
    return Roi.from_dict({"roi_id": rid, "patient_id": "P", "kind": "target", "shape": shape})


def centre_of(vol: Volume, k: float, r: float, c: float) -> np.ndarray:
    """LPS of fractional (slice k, row r, col c); k interpolated between slice origins."""
    k0 = int(math.floor(k))
    o = vol.slice_origins_lps_mm[k0] + (k - k0) * (
        vol.slice_origins_lps_mm[min(k0 + 1, vol.shape[0] - 1)] - vol.slice_origins_lps_mm[k0]
    )
    dr, dc = vol.pixel_spacing_mm
    return o + c * dc * vol.orientation[0] + r * dr * vol.orientation[1]


SHAPES = ["circle", "ellipse", "rotated-ellipse", "polygon", "sphere"]


def shape_for(kind: str, vol: Volume) -> dict:
    C = centre_of(vol, 4.3, 19.4, 17.2)
    if kind == "circle":
        return {"type": "circle", "center_mm": C.tolist(), "radius_mm": 7.3}
    if kind == "ellipse":
        return {"type": "ellipse", "center_mm": C.tolist(), "radii_mm": [9.1, 5.2]}
    if kind == "rotated-ellipse":
        return {
            "type": "ellipse",
            "center_mm": C.tolist(),
            "radii_mm": [9.1, 4.2],
            "angle_deg": 33.0,
        }
    if kind == "polygon":
        X, Y = vol.orientation
        offs = [(-8.3, -6.1), (9.7, -4.9), (5.1, 7.3), (-2.2, 3.3), (-7.7, 8.9)]
        pts = [(C + a * X + b * Y).tolist() for a, b in offs]
        return {"type": "polygon", "points_mm": pts}
    return {"type": "sphere", "center_mm": C.tolist(), "radius_mm": 6.4}


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize(
    "geom",
    [
        dict(orientation=ORIENTATIONS["axial"]),
        dict(orientation=ORIENTATIONS["axial-flipY"], spacing=(1.1, 0.6)),
        dict(orientation=ORIENTATIONS["axial-ffs"], descending=True),
        dict(orientation=ORIENTATIONS["sagittal"], spacing=(0.9, 0.5)),
        dict(orientation=ORIENTATIONS["coronal"], slice_step=1.7),
        dict(orientation=ORIENTATIONS["oblique"], spacing=(0.8, 1.2)),
        dict(orientation=ORIENTATIONS["axial"], tilt_mm_per_slice=0.6),
    ],
    ids=[
        "axial",
        "flipY-aniso",
        "ffs-descending",
        "sagittal",
        "coronal",
        "oblique",
        "tilted-stack",
    ],
)
def test_rule_matches_brute_force(kind, geom):
    vol = make_volume(**geom)
    roi = roi_of(shape_for(kind, vol))
    got = rasterize_roi(vol, roi).to_dense(vol.shape)
    ref = reference_mask(vol, roi)
    assert ref.sum() > 10
    np.testing.assert_array_equal(got, ref)


def test_values_and_partial_volume_equal_full():
    vol = make_volume(orientation=ORIENTATIONS["oblique"])
    for kind in SHAPES:
        roi = roi_of(shape_for(kind, vol))
        full = rasterize_roi(vol, roi)
        ref = reference_mask(vol, roi)
        np.testing.assert_array_equal(np.sort(full.values(vol)), np.sort(vol.hu[ref].astype(float)))
        # partial volume with just the touched slices, in the full series' numbering
        ks = sorted({p.k for p in full.parts})
        # plus one neighbour so the loaded stack has a spacing (no SeriesInfo here)
        ks = sorted(set(ks) | {ks[-1] + 1 if ks[-1] + 1 < vol.shape[0] else ks[0] - 1})
        part = Volume(
            hu=vol.hu[ks],
            orientation=vol.orientation,
            pixel_spacing_mm=vol.pixel_spacing_mm,
            slice_origins_lps_mm=vol.slice_origins_lps_mm[ks],
            slice_indices=ks,
        )
        pm = rasterize_roi(part, roi)
        assert pm.slice_indices == full.slice_indices
        np.testing.assert_array_equal(np.sort(pm.values(part)), np.sort(full.values(vol)))


def test_boundary_voxels_are_inside():
    # circle of radius exactly 3 pixels on a 1 mm grid: the 4 axis points at distance 3 count
    vol = make_volume(spacing=(1.0, 1.0), origin=(0.0, 0.0, 0.0), slice_step=1.0)
    roi = roi_of({"type": "circle", "center_mm": [10.0, 10.0, 3.0], "radius_mm": 3.0})
    m = rasterize_roi(vol, roi).to_dense(vol.shape)
    # count lattice points with x²+y² ≤ 9 (Gauss circle problem, r=3): 29
    assert m.sum() == 29
    assert m[3, 10, 13] and m[3, 13, 10] and m[3, 7, 10]
    # square polygon with vertices on pixel centres: edges and corners included
    sq = roi_of({"type": "polygon", "points_mm": [[5, 5, 3], [9, 5, 3], [9, 8, 3], [5, 8, 3]]})
    assert rasterize_roi(vol, sq).n_voxels == 5 * 4


def test_tie_between_two_slices_is_an_error():
    vol = make_volume(origin=(0.0, 0.0, 0.0), slice_step=2.0)
    roi = roi_of({"type": "circle", "center_mm": [10.0, 10.0, 3.0], "radius_mm": 3.0})
    with pytest.raises(RoiPlacementError) as ei:
        rasterize_roi(vol, roi)
    assert ei.value.code == "roi-slice-tie"
    assert isinstance(ei.value, GeometryError)
    # just off the tie: fine, lands on the nearer slice (z=4 -> index 2)
    roi2 = roi_of({"type": "circle", "center_mm": [10.0, 10.0, 3.01], "radius_mm": 3.0})
    assert rasterize_roi(vol, roi2).slice_indices == (2,)


def test_polygon_not_parallel_is_an_error():
    vol = make_volume(origin=(0.0, 0.0, 0.0), slice_step=2.0)
    roi = roi_of(
        {"type": "polygon", "points_mm": [[5, 5, 4], [15, 5, 4], [15, 15, 5.0], [5, 15, 5.0]]}
    )
    with pytest.raises(RoiPlacementError) as ei:
        rasterize_roi(vol, roi)
    assert ei.value.code == "roi-not-parallel"


def test_outside_stack_and_partly_outside():
    vol = make_volume(origin=(0.0, 0.0, 0.0), slice_step=2.0)  # z = 0..16
    far = roi_of({"type": "circle", "center_mm": [10.0, 10.0, 40.0], "radius_mm": 3.0})
    with pytest.raises(RoiPlacementError) as ei:
        rasterize_roi(vol, far)
    assert ei.value.code == "roi-outside-image"
    edge = roi_of({"type": "circle", "center_mm": [0.0, 10.0, 4.0], "radius_mm": 3.0})
    rm = rasterize_roi(vol, edge)
    assert rm.n_outside > 0 and rm.n_voxels > 0
    ref = reference_mask(vol, edge)
    np.testing.assert_array_equal(rm.to_dense(vol.shape), ref)
    inside = roi_of({"type": "circle", "center_mm": [10.0, 10.0, 4.0], "radius_mm": 3.0})
    assert rasterize_roi(vol, inside).n_outside == 0
    sph = roi_of({"type": "sphere", "center_mm": [10.0, 10.0, 16.0], "radius_mm": 4.0})
    assert rasterize_roi(vol, sph).beyond_stack
    sph_in = roi_of({"type": "sphere", "center_mm": [10.0, 10.0, 8.0], "radius_mm": 4.0})
    assert not rasterize_roi(vol, sph_in).beyond_stack


def _info_for(vol: Volume) -> SeriesInfo:
    return SeriesInfo(
        series_key="K",
        series_instance_uid="1.2",
        study_instance_uid="",
        patient_id="P",
        study_date="",
        modality="CT",
        manufacturer="",
        model="",
        kvp=120.0,
        kernel="",
        slice_thickness_mm=2.5,
        contrast_agent="",
        series_description="",
        series_number=1,
        acquisition_number=1,
        frame_of_reference_uid="",
        rows=vol.shape[1],
        columns=vol.shape[2],
        pixel_spacing_mm=vol.pixel_spacing_mm,
        orientation=tuple(vol.orientation.ravel()),
        slice_spacing_mm=float(np.median(np.abs(np.diff(vol.slice_positions_mm)))),
        slices=tuple(SliceRef(f"f{i}", tuple(o)) for i, o in enumerate(vol.slice_origins_lps_mm)),
        transfer_syntax="",
        rescale_slope=1.0,
        rescale_intercept=-1024.0,
        rescale_type="HU",
        bits_stored=16,
        pixel_representation=1,
        image_type=(),
        patient_position="HFS",
        folder="",
    )


@pytest.mark.parametrize("kind", SHAPES)
def test_slices_needed_from_header_only(kind):
    vol = make_volume(orientation=ORIENTATIONS["sagittal"])
    info = _info_for(vol)
    roi = roi_of(shape_for(kind, vol))
    need = slices_needed(roi, info)
    ref = reference_mask(vol, roi)
    assert need == sorted(int(k) for k in np.nonzero(ref.any(axis=(1, 2)))[0])
    # a partial volume with info: rasterize uses the series' numbering
    part = Volume(
        hu=vol.hu[need],
        orientation=vol.orientation,
        pixel_spacing_mm=vol.pixel_spacing_mm,
        slice_origins_lps_mm=vol.slice_origins_lps_mm[need],
        slice_indices=need,
        info=info,
    )
    pm = rasterize_roi(part, roi)
    assert list(pm.slice_indices) == need
    np.testing.assert_array_equal(np.sort(pm.values(part)), np.sort(vol.hu[ref].astype(float)))
    # a partial volume lacking the slice: named error
    other = [i for i in range(vol.shape[0]) if i not in need][:1]
    miss = Volume(
        hu=vol.hu[other],
        orientation=vol.orientation,
        pixel_spacing_mm=vol.pixel_spacing_mm,
        slice_origins_lps_mm=vol.slice_origins_lps_mm[other],
        slice_indices=other,
        info=info,
    )
    with pytest.raises(RoiPlacementError) as ei:
        rasterize_roi(miss, roi)
    assert ei.value.code == "slice-not-loaded"


def test_mask_on_slice_for_display():
    vol = make_volume()
    roi = roi_of(shape_for("rotated-ellipse", vol))
    ref = reference_mask(vol, roi)
    k = int(np.nonzero(ref.any(axis=(1, 2)))[0][0])
    np.testing.assert_array_equal(mask_on_slice(vol, roi, k), ref[k])
    assert not mask_on_slice(vol, roi, (k + 1) % vol.shape[0]).any()


def test_masks_are_bounding_box_sized():
    vol = make_volume(shape=(3, 400, 400), spacing=(1.0, 1.0))
    roi = roi_of(
        {"type": "circle", "center_mm": (centre_of(vol, 1, 200, 200)).tolist(), "radius_mm": 5}
    )
    rm = rasterize_roi(vol, roi)
    assert all(p.mask.shape[0] <= 11 and p.mask.shape[1] <= 11 for p in rm.parts)


def test_shape_dataclass_is_2d():
    assert Shape(type="circle", center_mm=(0, 0, 0), radius_mm=1).is_2d
    assert not Shape(type="sphere", center_mm=(0, 0, 0), radius_mm=1).is_2d


@pytest.mark.parametrize("seed", range(24))
def test_random_geometry_matches_brute_force(seed):
    """Random orientation, anisotropic spacing, slice order and shape vs the reference."""
    rng = np.random.default_rng(1000 + seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    orientation = tuple(q[:, 0]) + tuple(q[:, 1])
    vol = make_volume(
        orientation=orientation,
        spacing=tuple(rng.uniform(0.4, 1.5, 2)),
        slice_step=float(rng.uniform(0.8, 3.0)),
        descending=bool(seed % 2),
        tilt_mm_per_slice=float(rng.uniform(-0.5, 0.5)) if seed % 3 == 0 else 0.0,
        seed=seed,
    )
    frac = rng.choice([rng.uniform(0.05, 0.45), rng.uniform(0.55, 0.95)])
    C = centre_of(vol, 3 + frac, rng.uniform(12, 26), rng.uniform(12, 22))
    X, Y = vol.orientation
    kind = SHAPES[seed % len(SHAPES)]
    if kind == "circle":
        shape = {"type": "circle", "center_mm": C.tolist(), "radius_mm": rng.uniform(2, 9)}
    elif kind in ("ellipse", "rotated-ellipse"):
        shape = {
            "type": "ellipse",
            "center_mm": C.tolist(),
            "radii_mm": rng.uniform(2, 9, 2).tolist(),
            "angle_deg": rng.uniform(-180, 180),
        }
    elif kind == "polygon":
        ang = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 9)))
        rad = rng.uniform(2, 9, ang.size)
        pts = [
            (C + r * np.cos(a) * X + r * np.sin(a) * Y).tolist()
            for a, r in zip(ang, rad, strict=True)
        ]
        shape = {"type": "polygon", "points_mm": pts}
    else:
        shape = {"type": "sphere", "center_mm": C.tolist(), "radius_mm": rng.uniform(2, 7)}
    try:
        roi = roi_of(shape)
    except RoiFormatError:  # a degenerate random polygon: nothing to compare
        pytest.skip("degenerate random polygon")
    np.testing.assert_array_equal(
        rasterize_roi(vol, roi).to_dense(vol.shape), reference_mask(vol, roi)
    )


def test_absurd_coordinates_are_named_errors_or_outside():
    vol = make_volume(origin=(0.0, 0.0, 0.0), slice_step=2.0)
    far = roi_of({"type": "circle", "center_mm": [1e300, -1e300, 4.0], "radius_mm": 3.0})
    rm = rasterize_roi(vol, far)
    assert rm.n_voxels == 0 and rm.n_outside > 0
    for shape in (
        {"type": "sphere", "center_mm": [10.0, 10.0, 4.0], "radius_mm": 1e308},
        {"type": "ellipse", "center_mm": [10.0, 10.0, 4.0], "radii_mm": [1e308, 1e-308]},
        {
            "type": "polygon",
            "points_mm": [[-1e300, -1e300, 4], [1e300, -1e300, 4], [1e300, 1e300, 4]],
        },
    ):
        with pytest.raises(RoiPlacementError) as ei:
            rasterize_roi(vol, roi_of(shape))
        assert ei.value.code == "roi-too-large"
