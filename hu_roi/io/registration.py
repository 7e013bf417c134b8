"""Rigid registration of two CT volumes with SimpleITK (used by ``hu-roi propagate``).

This is the only module of hu-roi that calls SimpleITK's registration.  It works on
:class:`~hu_roi.volume.Volume` objects (HU, LPS geometry) and returns plain numbers, so
the core (:mod:`hu_roi.propagate`) never sees a SimpleITK object.

The method (docs/propagation.md):

* both volumes become SimpleITK images with the volume's own origin, spacing and direction
  (:func:`to_sitk`; the same geometry SimpleITK's ``ImageSeriesReader`` gives);
* the *fixed* image (baseline) is cropped to the region box (the ROIs plus a margin), the
  *moving* image (follow-up) to the same box widened by ``search_mm`` (and by the offset
  of the second start below); only the voxels of the crops are copied; HU are clipped to
  [−1000, 2000];
* a rigid :class:`SimpleITK.Euler3DTransform` maps fixed (baseline) points to moving
  (follow-up) points, ``p' = R·(p − c) + c + t`` with ``c`` the centre of the region;
* Mattes mutual information (:data:`MI_BINS` bins, random sampling with a fixed seed,
  gradients at the sampled points), regular-step gradient descent with physical-shift
  scales, on three levels: :data:`COARSE_LEVELS` (shrink 4 and 2 after Gaussian
  smoothing of 2 and 1 mm, sampling 25 % and 12.5 %), then full resolution (3 %, at most
  :data:`MAX_SAMPLES` voxels);
* two starts, rotation 0: the scanner coordinates (identity), and the centres of the two
  series' image boxes aligned (a follow-up whose field of view moved with the patient,
  e.g. another table position).  Both run the coarse levels; the one whose result
  correlates best (Pearson r of HU over the region) goes on to full resolution: mutual
  information alone cannot tell a vertebra from its neighbour, which looks alike one
  level off;
* afterwards the normalised cross-correlation (Pearson r) of the baseline and the
  registered follow-up is measured in a cube around each ROI centre
  (:func:`neighbourhood_ncc`), the quality check of :mod:`hu_roi.propagate`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from hu_roi.errors import GeometryError
from hu_roi.volume import Volume

log = logging.getLogger(__name__)

__all__ = [
    "MI_BINS",
    "SAMPLING",
    "RigidResult",
    "to_sitk",
    "register_rigid",
    "neighbourhood_ncc",
    "overlap_fraction",
]

#: Histogram bins of Mattes mutual information.
MI_BINS = 50
#: Fraction of the fixed region's voxels sampled per iteration (random, fixed seed).
SAMPLING = 0.25
#: The coarse levels: (shrink factor, Gaussian sigma in mm, sampled fraction of voxels).
COARSE_LEVELS = ((4, 2.0, SAMPLING), (2, 1.0, SAMPLING / 2))
#: Most voxels sampled per iteration on the full-resolution level.
MAX_SAMPLES = 50_000
#: Seed of the metric's random sampling (the result is reproducible).
SEED = 20260101
#: HU below which voxels are clipped before registering (air, table padding).
CLIP_LOW_HU = -1000.0
#: HU above which voxels are clipped (metal, contrast streaks).
CLIP_HIGH_HU = 2000.0


@dataclass(frozen=True)
class RigidResult:
    """A rigid transform from baseline (fixed) LPS mm to follow-up (moving) LPS mm.

    Attributes
    ----------
    rotation_rad : tuple of 3 float
        Euler angles about x, y, z (radians), SimpleITK's Euler3DTransform order (ZXY).
    translation_mm : tuple of 3 float
        Translation (mm, LPS).
    center_mm : tuple of 3 float
        Centre of rotation (mm, LPS).
    matrix : numpy.ndarray, shape (3, 3)
        The rotation matrix R.
    metric_value : float
        Final Mattes mutual information (SimpleITK's sign: more negative is better).
    iterations : int
        Gradient-descent iterations at the last level.
    stop : str
        The optimizer's stopping condition.
    seconds : float
        Wall time of the registration.
    """

    rotation_rad: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    center_mm: tuple[float, float, float]
    matrix: np.ndarray
    metric_value: float
    iterations: int
    stop: str
    seconds: float

    def apply(self, points_lps_mm: np.ndarray) -> np.ndarray:
        """Map baseline points (..., 3) to follow-up points (LPS mm)."""
        p = np.asarray(points_lps_mm, dtype=float)
        c = np.asarray(self.center_mm)
        return (p - c) @ self.matrix.T + c + np.asarray(self.translation_mm)

    @property
    def rotation_deg(self) -> float:
        """Total rotation angle of R (degrees)."""
        cos = (float(np.trace(self.matrix)) - 1.0) / 2.0
        return math.degrees(math.acos(min(1.0, max(-1.0, cos))))


def _grid(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SimpleITK's grid of a volume: origin (3), spacing (x, y, z), direction (3×3,
    columns X, Y, normal), size (x, y, z) -- without touching the pixels.

    Raises
    ------
    GeometryError
        The loaded slices are not evenly spaced along the normal (a partial load, missing
        slices, gantry tilt): SimpleITK's image grid cannot describe them.
    """
    a = volume.affine  # raises GeometryError for uneven slices
    step = a[:3, 0]
    if volume.shape[0] > 1 and abs(float(np.dot(step, volume.normal))) < 0.999 * float(
        np.linalg.norm(step)
    ):
        raise GeometryError("slices are not stacked along the slice normal (gantry tilt)")
    dz = float(np.linalg.norm(step)) if volume.shape[0] > 1 else float(volume.spacing_xyz_mm[2])
    if not (math.isfinite(dz) and dz > 0):
        dz = 1.0
    spacing = np.array([volume.pixel_spacing_mm[1], volume.pixel_spacing_mm[0], dz])
    n, rows, cols = volume.shape
    return (
        np.asarray(volume.slice_origins_lps_mm[0], dtype=float),
        spacing,
        volume.direction,
        np.array([cols, rows, n]),
    )


def to_sitk(
    volume: Volume, lo_mm: np.ndarray | None = None, hi_mm: np.ndarray | None = None
) -> sitk.Image | None:
    """A float32 SimpleITK image of ``volume`` (or of its part inside the LPS box
    [lo, hi]) with its LPS origin, spacing and direction.

    Only the voxels of the box are copied.  Returns None when the box misses the image.

    Raises
    ------
    GeometryError
        See :func:`_grid`.
    """
    origin, spacing, direction, size = _grid(volume)
    start = np.zeros(3, dtype=int)
    stop = size.copy()
    if lo_mm is not None and hi_mm is not None:
        corners = np.array(
            [
                [x, y, z]
                for x in (lo_mm[0], hi_mm[0])
                for y in (lo_mm[1], hi_mm[1])
                for z in (lo_mm[2], hi_mm[2])
            ]
        )
        idx = ((corners - origin) @ direction) / spacing  # continuous (x, y, z) indices
        start = np.maximum(np.floor(idx.min(axis=0)).astype(int), 0)
        stop = np.minimum(np.ceil(idx.max(axis=0)).astype(int) + 1, size)
        if np.any(stop - start < 1):
            return None
    block = volume.hu[start[2] : stop[2], start[1] : stop[1], start[0] : stop[0]]
    img = sitk.GetImageFromArray(np.asarray(block, dtype=np.float32))
    img.SetOrigin(tuple(float(v) for v in origin + direction @ (start * spacing)))
    img.SetSpacing(tuple(float(v) for v in spacing))
    img.SetDirection(tuple(float(v) for v in direction.ravel()))
    return img


def _prepare(img: sitk.Image) -> sitk.Image:
    return sitk.Clamp(img, sitk.sitkFloat32, CLIP_LOW_HU, CLIP_HIGH_HU)


def overlap_fraction(fixed: Volume, moving: Volume, lo_mm: np.ndarray, hi_mm: np.ndarray) -> float:
    """Fraction of the baseline region [lo, hi] (LPS mm, clipped to the baseline image)
    that lies inside the follow-up image before registration: the larger of the fractions
    at the two starts of :func:`register_rigid` (scanner coordinates; centres of the image
    boxes aligned)."""
    fo, fs, fd, fsize = _grid(fixed)
    idx = ((np.array([lo_mm, hi_mm]) - fo) @ fd) / fs
    a = np.maximum(idx.min(axis=0), 0)
    b = np.minimum(idx.max(axis=0), fsize - 1)
    if np.any(b < a):
        return 0.0
    # a coarse grid of the region (at most 16 points per axis)
    axes = [np.linspace(a[i], b[i], 16) for i in range(3)]
    gi, gj, gk = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([gi.ravel(), gj.ravel(), gk.ravel()], axis=1)
    phys = fo + (pts * fs) @ fd.T
    mo, ms, md, msize = _grid(moving)
    best = 0.0
    for shift in (np.zeros(3), _extent_centre(moving) - _extent_centre(fixed)):
        cont = ((phys + shift - mo) @ md) / ms
        inside = np.all((cont >= -0.5) & (cont <= msize - 0.5), axis=1)
        best = max(best, float(inside.mean()))
    return best


def register_rigid(
    fixed: Volume,
    moving: Volume,
    *,
    region_lo_mm: Sequence[float],
    region_hi_mm: Sequence[float],
    search_mm: float = 25.0,
    max_iterations: int = 200,
) -> RigidResult:
    """Rigidly register ``moving`` (follow-up) to ``fixed`` (baseline) in a region.

    Parameters
    ----------
    fixed, moving : Volume
        Baseline and follow-up volumes (HU, LPS geometry, evenly spaced slices).
    region_lo_mm, region_hi_mm : sequence of 3 float
        Corners of the box (LPS mm) of the baseline that drives the registration.
    search_mm : float
        Half-width (mm) of the coarse translation search, and the extra margin of the
        follow-up crop.
    max_iterations : int
        Iterations per resolution level.

    Returns
    -------
    RigidResult

    Raises
    ------
    GeometryError
        The region misses one of the images, or an image grid cannot be built.
    """
    import time

    t0 = time.perf_counter()
    lo = np.asarray(region_lo_mm, dtype=float)
    hi = np.asarray(region_hi_mm, dtype=float)
    # two starts: the scanner coordinates (identity), and the two series' centres aligned
    # (a follow-up whose field of view moved with the patient); the better one is kept
    starts = [np.zeros(3)]
    geo = _extent_centre(moving) - _extent_centre(fixed)
    if float(np.linalg.norm(geo)) > 5.0:
        starts.append(geo)
    f = to_sitk(fixed, lo, hi)
    m = to_sitk(moving, lo + np.minimum(geo, 0) - search_mm, hi + np.maximum(geo, 0) + search_mm)
    if f is None or m is None:
        raise GeometryError("the region around the ROIs lies outside one of the two series")
    if min(f.GetSize()) < 4 or min(m.GetSize()) < 4:
        raise GeometryError(
            f"the region around the ROIs is too thin to register (baseline {f.GetSize()} "
            f"voxels, follow-up {m.GetSize()} voxels; at least 4 along each axis)"
        )
    f = _prepare(f)
    m = _prepare(m)
    centre = tuple(float(v) for v in (lo + hi) / 2.0)
    # each start on the two coarse levels; the better one (by correlation) then on the
    # full-resolution level.  The coarse pyramid is made once for both starts.
    pyramid = [
        (_shrunk(f, factor, sigma), _shrunk(m, factor, sigma), fraction)
        for factor, sigma, fraction in COARSE_LEVELS
    ]
    best: tuple[float, sitk.Euler3DTransform] | None = None
    f_small = sitk.Shrink(f, [2, 2, 2]) if min(f.GetSize()) >= 8 else f
    for start in starts:
        tx = sitk.Euler3DTransform()
        tx.SetCenter(centre)
        tx.SetTranslation(tuple(float(v) for v in start))
        try:
            for f_l, m_l, fraction in pyramid:
                reg = _method(max_iterations, fraction)
                reg.SetInitialTransform(tx, inPlace=True)
                reg.Execute(f_l, m_l)
        except RuntimeError as exc:  # ITK: "All samples map outside moving image buffer"
            log.debug("start %s failed: %s", start.tolist(), str(exc).splitlines()[-1:])
            continue
        score, _inside = _ncc(f_small, m, tx)
        log.debug("start %s: NCC %.4f, parameters %s", start.tolist(), score, tx.GetParameters())
        score = score if math.isfinite(score) else -math.inf
        if best is None or score > best[0]:
            best = (score, tx)
    if best is None:
        raise GeometryError(
            "the series do not overlap enough to register (from the scanner coordinates "
            "and with the centres of the two images aligned)"
        )
    tx = best[1]
    n_vox = float(np.prod(f.GetSize()))
    reg = _method(max_iterations, min(SAMPLING / 8, MAX_SAMPLES / n_vox))
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(f, m)
    params = tx.GetParameters()
    return RigidResult(
        rotation_rad=(float(params[0]), float(params[1]), float(params[2])),
        translation_mm=(float(params[3]), float(params[4]), float(params[5])),
        center_mm=centre,  # type: ignore[arg-type]
        matrix=np.array(tx.GetMatrix()).reshape(3, 3),
        metric_value=float(reg.GetMetricValue()),
        iterations=int(reg.GetOptimizerIteration()),
        stop=str(reg.GetOptimizerStopConditionDescription()),
        seconds=time.perf_counter() - t0,
    )


def _method(max_iterations: int, fraction: float) -> sitk.ImageRegistrationMethod:
    """Mattes MI and regular-step gradient descent on one level, sampling ``fraction`` of
    the fixed image's voxels (random, fixed seed)."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=MI_BINS)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(fraction, SEED)
    # gradients at the sampled points only, not a gradient image of the whole crop
    reg.MetricUseMovingImageGradientFilterOff()
    reg.MetricUseFixedImageGradientFilterOff()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=max_iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    return reg


def _shrunk(img: sitk.Image, factor: int, sigma_mm: float) -> sitk.Image:
    """``img`` smoothed (Gaussian, ``sigma_mm``) and subsampled by ``factor`` per axis
    (at least 4 voxels kept per axis)."""
    if sigma_mm > 0:
        img = sitk.SmoothingRecursiveGaussian(img, sigma_mm)
    factors = [max(1, min(factor, n // 4)) for n in img.GetSize()]
    return sitk.Shrink(img, factors)


def _extent_centre(vol: Volume) -> np.ndarray:
    """Centre (LPS mm) of the box of a volume's voxel centres."""
    n, rows, cols = vol.shape
    mid_r, mid_c = np.asarray((rows - 1) / 2), np.asarray((cols - 1) / 2)
    first = vol.pixel_to_lps(0, mid_r, mid_c)
    last = vol.pixel_to_lps(n - 1, mid_r, mid_c)
    return (np.asarray(first) + np.asarray(last)) / 2.0


def _ncc(f: sitk.Image, m: sitk.Image, tx: sitk.Transform) -> tuple[float, float]:
    """Pearson r of ``f`` and ``m`` resampled onto ``f`` through ``tx`` (voxels mapping
    inside ``m`` only), and the fraction of ``f``'s voxels that map inside."""
    sentinel = -1.0e6
    warped = sitk.Resample(m, f, tx, sitk.sitkLinear, sentinel, sitk.sitkFloat32)
    a = sitk.GetArrayViewFromImage(f).astype(np.float64).ravel()
    b = sitk.GetArrayViewFromImage(warped).astype(np.float64).ravel()
    ok = b > sentinel / 2
    inside = float(ok.mean()) if ok.size else 0.0
    if ok.sum() < 50:
        return math.nan, inside
    a = np.clip(a[ok], CLIP_LOW_HU, CLIP_HIGH_HU)
    b = np.clip(b[ok], CLIP_LOW_HU, CLIP_HIGH_HU)
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return math.nan, inside
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb)), inside


def neighbourhood_ncc(
    fixed: Volume,
    moving: Volume,
    result: RigidResult,
    centre_mm: Sequence[float] | np.ndarray,
    half_mm: float,
) -> tuple[float, float]:
    """Pearson correlation of the baseline and the registered follow-up around a point.

    Parameters
    ----------
    fixed, moving : Volume
        Baseline and follow-up.
    result : RigidResult
        The registration (baseline → follow-up).
    centre_mm : sequence of 3 float
        Centre of the cube (baseline LPS mm).
    half_mm : float
        Half the edge of the cube (mm).

    Returns
    -------
    (ncc, inside) : (float, float)
        The correlation over the baseline voxels of the cube whose mapped position lies
        inside the follow-up image (NaN when fewer than 50 such voxels or no contrast), and
        the fraction of the cube's voxels that do.
    """
    c = np.asarray(centre_mm, dtype=float)
    f = to_sitk(fixed, c - half_mm, c + half_mm)
    if f is None:
        return math.nan, 0.0
    # the follow-up around where the cube maps (its corners' box, 2 voxels wider)
    cube = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * half_mm + c
    mapped = result.apply(cube)
    pad = 2.0 * float(np.max(_grid(moving)[1]))
    m = to_sitk(moving, mapped.min(axis=0) - pad, mapped.max(axis=0) + pad)
    if m is None:
        return math.nan, 0.0
    tx = sitk.Euler3DTransform()
    tx.SetCenter(result.center_mm)
    tx.SetParameters((*result.rotation_rad, *result.translation_mm))
    return _ncc(f, m, tx)
