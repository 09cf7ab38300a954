"""Seeded generator of synthetic training slices with ground truth.

Each sample is one 2-D slice *as displayed* (already windowed to [0, 1]) on an isotropic grid of
``spacing_mm`` per pixel, containing one labelled target lesion near the image centre and a click
(the target's mass centre). The generator deliberately produces the hard cases the sequential patch
network is meant for: low contrast (a few percent of the window), blurry (partial-volume) boundaries,
irregular / multi-lobed / spiculated shapes, rim-enhancing lesions with a dark necrotic core, and
neighbours of similar intensity that touch the target (blobs, vessel-like tubes, a large "organ" of
equal intensity: the leak case). Only the target is labelled.

Backgrounds are either real anatomy (:class:`~seqpatch_core.data.backgrounds.BackgroundBank`, raw HU / MR
units windowed at sample time with a random window) or procedural phantoms
(:mod:`seqpatch_core.data.phantoms`: smooth multi-scale fields plus organ-like blobs, or lung). Target and
neighbour shapes come from :mod:`seqpatch_core.data.shapes`; this module places and renders them.

Seed streams (keep them disjoint so that the benchmark never overlaps training):

* training, one stream per data-loader worker:
  ``np.random.default_rng(np.random.SeedSequence([seed, 0, worker_id]))`` (:func:`training_rng`),
  with the bank's ``"train"`` split (slices whose relative z-position in their volume is < 0.8,
  measured over the span of tissue-bearing slices);
* synthetic benchmark: ``np.random.default_rng(np.random.SeedSequence([seed, 7]))``
  (:func:`benchmark_set`), with the bank's ``"val"`` split (relative z >= 0.8: anatomy training
  never saw).

Arrays are (y, x) in the slice; volumes read from disk are (z, y, x) and only axial array slices
(index z) are used. Nothing runs on import.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from seqpatch_core.base.metrics import mask_click
from seqpatch_core.data.backgrounds import BackgroundBank
from seqpatch_core.data.phantoms import fft_field, lung_background, phantom_background, tube_alpha
from seqpatch_core.data.recipe import LESIONS, Recipe
from seqpatch_core.data.shapes import bbox_slices, draw_shape, largest_filled

logger = logging.getLogger(__name__)

__all__ = [
    "SynthSlice",
    "benchmark_set",
    "inner_click",
    "jitter_click",
    "make_slice",
    "move_click",
    "training_rng",
]

_F32 = np.float32


# --------------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------------
@dataclass
class SynthSlice:
    """One synthetic training sample.

    Attributes:
        image: float32 (H, W) in [0, 1], the slice as displayed (already windowed), pixel size
            ``spacing_mm`` in both directions.
        label: uint8 (H, W), 1 on the target object only (one connected component, no holes).
        click: (y, x) float pixel coordinates: the target's mass centre, or the nearest pixel inside
            the target when the mass centre falls outside it.
        spacing_mm: isotropic pixel size in mm.
        kind: short human-readable description (background source, shape kind, ...) for debugging.
    """

    image: np.ndarray
    label: np.ndarray
    click: tuple[float, float]
    spacing_mm: float
    kind: str


def training_rng(seed: int, worker_id: int = 0) -> np.random.Generator:
    """The training seed stream of one data-loader worker: ``SeedSequence([seed, 0, worker_id])``."""
    return np.random.default_rng(np.random.SeedSequence([seed, 0, worker_id]))


# --------------------------------------------------------------------------------------------------
# Small numeric helpers
# --------------------------------------------------------------------------------------------------
def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


# --------------------------------------------------------------------------------------------------
# Lesion rendering
# --------------------------------------------------------------------------------------------------
def _boundary_point(label: np.ndarray, cy: float, cx: float, ang: float) -> tuple[float, float, float]:
    """Walk from (cy, cx) along direction ``ang`` to the last label pixel; returns (y, x, distance)."""
    dy, dx = math.sin(ang), math.cos(ang)
    h, w = label.shape
    t = 0.0
    last = 0.0
    while True:
        t += 0.5
        y, x = int(round(cy + t * dy)), int(round(cx + t * dx))
        if not (0 <= y < h and 0 <= x < w):
            break
        if label[y, x]:
            last = t
        elif t > last + 3.0:
            break
    return cy + last * dy, cx + last * dx, last


def _composite(img: np.ndarray, sl: tuple[slice, slice], alpha: np.ndarray, value: np.ndarray | float) -> None:
    """In place: img[sl] = (1 - alpha) * img[sl] + alpha * value (partial-volume mixing)."""
    region = img[sl]
    region += alpha * (value - region)


def _soft_alpha(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Partial-volume coverage: Gaussian-blurred binary mask, float32."""
    return ndi.gaussian_filter(mask.astype(_F32), sigma, truncate=3.0)


def _draw_radius_px(rng: np.random.Generator, recipe: Recipe, size: int, spacing_mm: float) -> float:
    """The target's nominal radius in px of a ``size`` slice at ``spacing_mm`` (the recipe's size rule)."""
    lo_mm, hi_mm = recipe.radius_limits_mm(size, spacing_mm)
    main = recipe.radius_main_p >= 1.0 or rng.random() < recipe.radius_main_p
    lo, hi = recipe.radius_main_mm if main else recipe.radius_wide_mm
    if recipe.radius_fit_to_grid:
        lo, hi = max(lo, lo_mm), min(hi, hi_mm)
        lo = min(lo, hi)
    px = 1.0 / spacing_mm  # as make_slice's px, so that LESIONS gives the same radii to the bit
    return float(np.clip(_log_uniform(rng, lo, hi) * px, recipe.min_radius_px, recipe.fit_frac * size))


def _check_radius_range(radius_mm: tuple[float, float], size: int, spacing_mm: float, recipe: Recipe) -> None:
    lo, hi = radius_mm
    if not 0 < lo <= hi:
        raise ValueError(f"radius_mm must be (lo, hi) with 0 < lo <= hi, got {radius_mm}")
    if hi / spacing_mm > recipe.fit_frac * size:
        raise ValueError(
            f"radius {hi} mm is {hi / spacing_mm:.0f} px on a {spacing_mm} mm grid, more than "
            f"{recipe.fit_frac} x size = {recipe.fit_frac * size:.0f} px: use size >= "
            f"{math.ceil(hi / spacing_mm / recipe.fit_frac)} or a coarser spacing"
        )


def make_slice(
    rng: np.random.Generator,
    size: int = 192,
    spacing_mm: float = 1.0,
    backgrounds: BackgroundBank | None = None,
    *,
    radius_mm: tuple[float, float] | None = None,
    recipe: Recipe = LESIONS,
) -> SynthSlice:
    """One synthetic slice with a labelled target lesion near the centre.

    Args:
        rng: the only source of randomness (same generator state -> identical sample).
        size: H = W of the output in pixels.
        spacing_mm: isotropic pixel size of the output grid in mm; lesion sizes are drawn in mm.
        backgrounds: real anatomy to draw from (70 % of samples); ``None`` -> procedural phantoms only.
        radius_mm: (lo, hi) in mm: the target's nominal radius is drawn log-uniform in it (the
            shape's lobes and harmonics make the label's equivalent radius sqrt(area / pi) differ
            from it by a few tens of percent). ``None``: the recipe's size rule. ``hi`` must fit
            the slice (``hi / spacing_mm <= recipe.fit_frac * size``), else ValueError.
        recipe: the constants (:mod:`seqpatch_core.data.recipe`); the default ``LESIONS`` is the
            evaluation sets' recipe.

    Returns:
        A :class:`SynthSlice` (image float32 (size, size) in [0, 1], label uint8 0/1, click (y, x)).
    """
    shape = (size, size)
    px = 1.0 / spacing_mm  # pixels per mm
    if radius_mm is not None:
        _check_radius_range(radius_mm, size, spacing_mm, recipe)

    # ---- background ----
    if backgrounds is not None and len(backgrounds) > 0 and rng.random() >= recipe.bank_prob_phantom:
        img, _, bg_kind = backgrounds._sample(rng, size, spacing_mm)
    elif rng.random() < recipe.lung_prob:
        img, bg_kind = lung_background(rng, size, spacing_mm)
    else:
        img, bg_kind = phantom_background(rng, size, spacing_mm)

    # ---- target shape ----
    if radius_mm is None:
        r0 = _draw_radius_px(rng, recipe, size, spacing_mm)
    else:
        r0 = float(np.clip(_log_uniform(rng, *radius_mm) * px, recipe.min_radius_px, recipe.fit_frac * size))
    shape_kind, mask_fn, extent = draw_shape(rng, r0, recipe.shape_p)
    ang, dist = rng.uniform(0, 2 * np.pi), recipe.centre_jitter_px * math.sqrt(rng.uniform())
    cy, cx = (size - 1) / 2 + dist * math.sin(ang), (size - 1) / 2 + dist * math.cos(ang)
    blur = rng.uniform(*recipe.blur_px)
    sl, dy, dx = bbox_slices(cy, cx, extent + 3 * blur + 3, shape)
    m = largest_filled(mask_fn(dy, dx))
    if not m.any():  # degenerate draw (tiny shape missing every pixel centre): fall back to a disc
        m = dy * dy + dx * dx <= max(r0, 1.5) ** 2
    label = np.zeros(shape, dtype=np.uint8)
    label[sl] = m

    # ---- intensities ----
    bg_mean = float(img[sl][m].mean())
    low = rng.random() < recipe.contrast_low_p
    mag = _log_uniform(rng, *(recipe.contrast_low if low else recipe.contrast_wide))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if not 0.02 <= bg_mean + sign * mag <= 0.98:
        sign = -sign
        if not 0.02 <= bg_mean + sign * mag <= 0.98:  # too strong either way: use the roomier side
            sign = 1.0 if bg_mean < 0.5 else -1.0
            mag = max(0.03, (0.98 - bg_mean) if sign > 0 else (bg_mean - 0.02))
    if bg_kind.startswith("lung") and rng.random() < recipe.nodule_p:
        # a solid nodule in aerated lung: soft tissue, much brighter than the parenchyma
        sign, mag = 1.0, min(rng.uniform(*recipe.nodule_mag), 0.98 - bg_mean)
    delta = sign * mag
    value = bg_mean + delta
    parts = [bg_kind, f"{shape_kind} r={r0 / px:.1f}mm", f"d={delta:+.3f}", f"blur={blur:.1f}"]

    # Neighbours are drawn before the target so that the target lies on top of them. They are placed
    # by walking out from the click, which (unlike the nominal centre) is always inside the label.
    click = _click_of(label, sl)
    if rng.random() < recipe.leak_p:
        parts.append(_add_leak_organ(rng, img, label, click[0], click[1], value, delta))
    if rng.random() < recipe.neighbour_p:
        parts.append(
            _add_distractors(rng, img, label, click[0], click[1], r0, bg_mean, delta, blur, px, recipe)
        )

    # Lesion layer: value + correlated texture (+ optional enhancing rim / necrotic core).
    hh, ww = m.shape
    tex_amp = recipe.texture_amp * rng.uniform() ** 1.5
    layer = _F32(value) + fft_field(rng, (hh, ww), [rng.uniform(0.7, 3.0) * px], [tex_amp])
    if rng.random() < recipe.rim_p and r0 >= 4:
        depth = ndi.distance_transform_edt(m)
        core = _soft_alpha(depth > rng.uniform(0.3, 0.6) * depth.max(), 1.0)
        rim_val = bg_mean + (abs(delta) if rng.random() < 0.7 else -abs(delta))
        core_val = bg_mean - np.sign(rim_val - bg_mean) * abs(delta) * rng.uniform(0.0, 1.0)
        layer += _F32(rim_val - value) + core * _F32(core_val - rim_val)
        parts.append("ring")
    alpha = _soft_alpha(m, blur)
    if recipe.inner_vessel_p > 0 and r0 >= recipe.inner_vessel_min_radius_px and rng.random() < recipe.inner_vessel_p:
        parts.append(_add_inner_vessels(rng, layer, sl, size, cy, cx, r0, delta, px, recipe))
    _composite(img, sl, alpha, layer)

    # ---- acquisition-like degradations ----
    noise_sd = rng.uniform(0.0, recipe.noise_sd_max)
    img += rng.standard_normal(shape, dtype=_F32) * _F32(noise_sd)
    # Smooth multiplicative bias field (+-10 %): random low-order polynomial, cheap and smooth.
    t = np.linspace(-1.0, 1.0, size, dtype=_F32)
    c = rng.uniform(-1, 1, size=5).astype(_F32)
    ty, tx = t[:, None], t[None, :]
    bias = c[0] * ty + c[1] * tx + c[2] * ty * tx + c[3] * ty * ty + c[4] * tx * tx
    bias *= _F32(rng.uniform(0.0, recipe.bias_max) / max(float(np.abs(bias).max()), 1e-6))
    img *= 1.0 + bias
    np.clip(img, 0.0, 1.0, out=img)
    parts.append(f"noise={noise_sd:.3f}")

    return SynthSlice(
        image=img.astype(_F32, copy=False),
        label=label,
        click=click,
        spacing_mm=float(spacing_mm),
        kind=" ".join(parts),
    )


def _click_of(label: np.ndarray, sl: tuple[slice, slice]) -> tuple[float, float]:
    """Mass centre of ``label`` (searched within crop ``sl``); nearest inside pixel if it falls outside
    (:func:`~seqpatch_core.base.metrics.mask_click`, in the full label's pixels)."""
    cy, cx = mask_click(label[sl])
    return cy + sl[0].start, cx + sl[1].start


def _add_leak_organ(
    rng: np.random.Generator,
    img: np.ndarray,
    label: np.ndarray,
    cy: float,
    cx: float,
    value: float,
    delta: float,
) -> str:
    """A large region of the target's intensity touching the target (half-plane or big ellipse)."""
    size = img.shape[0]
    ang = rng.uniform(0, 2 * np.pi)
    by, bx, _ = _boundary_point(label, cy, cx, ang)
    gap = rng.uniform(-1.0, 1.5)  # px beyond the boundary point: slight overlap to slight gap
    organ_val = value + rng.uniform(-0.15, 0.15) * abs(delta)
    yy = np.arange(size, dtype=_F32)[:, None]
    xx = np.arange(size, dtype=_F32)[None, :]
    ny, nx = _F32(math.sin(ang)), _F32(math.cos(ang))
    edge = rng.uniform(0.5, 2.0)
    if rng.random() < 0.5:
        # Half-plane whose boundary is tangent to the target at the boundary point.
        dist = (yy - _F32(by)) * ny + (xx - _F32(bx)) * nx - _F32(gap)
        alpha = np.clip(dist / _F32(edge) + 0.5, 0.0, 1.0)
        kind = "leak-plane"
    else:
        rad = rng.uniform(0.25, 0.5) * size
        oy, ox = by + (rad + gap) * math.sin(ang), bx + (rad + gap) * math.cos(ang)
        dist = _F32(rad) - np.sqrt((yy - _F32(oy)) ** 2 + (xx - _F32(ox)) ** 2)
        alpha = np.clip(dist / _F32(edge) + 0.5, 0.0, 1.0)
        kind = "leak-ellipse"
    # Mild texture so the organ is not a flat cut-out.
    layer = _F32(organ_val) + fft_field(rng, img.shape, [rng.uniform(1.0, 4.0)], [rng.uniform(0.0, 0.04)])
    img += alpha * (layer - img)
    return kind


def _add_inner_vessels(
    rng: np.random.Generator,
    layer: np.ndarray,
    sl: tuple[slice, slice],
    size: int,
    cy: float,
    cx: float,
    r0: float,
    delta: float,
    px: float,
    recipe: Recipe,
) -> str:
    """Vessels inside the target (an organ's: a liver's portal branches), in place on its ``layer``.

    1..max_inner_vessels curved tubes through the interior around the nominal centre (cy, cx) (full
    slice px), ``inner_vessel_width_mm`` wide, differing from the target by
    ``inner_vessel_contrast`` x |delta| of either sign. ``layer`` (the target's crop ``sl``) is
    composited under the target's coverage afterwards, so vessels show only inside it; the label is
    unchanged (they are part of the object).
    """
    n = int(rng.integers(1, recipe.max_inner_vessels + 1))
    for _ in range(n):
        psi, off = rng.uniform(0, np.pi), rng.uniform(-0.6, 0.6) * r0
        width = max(1.0, rng.uniform(*recipe.inner_vessel_width_mm) * px)
        bend_a, bend_l = rng.uniform(0, 0.3) * r0, rng.uniform(0.5, 1.5) * r0 + 1.0
        half_len, a0 = rng.uniform(0.5, 1.5) * r0, rng.uniform(-0.5, 0.5) * r0
        alpha = tube_alpha(size, cy, cx, psi, off, width, bend_a, bend_l, half_len, a0)[sl]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        layer += alpha * _F32(sign * rng.uniform(*recipe.inner_vessel_contrast) * abs(delta))
    return f"vessels-in({n})"


def _add_distractors(
    rng: np.random.Generator,
    img: np.ndarray,
    label: np.ndarray,
    cy: float,
    cx: float,
    r0: float,
    bg_mean: float,
    delta: float,
    blur: float,
    px: float,
    recipe: Recipe,
) -> str:
    """1..max_neighbours blobs / vessel-like tubes of intensity similar to the target, some touching it."""
    size = img.shape[0]
    n = int(rng.integers(1, recipe.max_neighbours + 1))
    kinds: list[str] = []
    for _ in range(n):
        val = _F32(bg_mean + delta * rng.uniform(0.7, 1.3))
        r = rng.random()
        if r < 0.35:  # vessel: thin (slightly curved) tube passing near the object
            psi = rng.uniform(0, np.pi)
            off = rng.uniform(0.5, 1.2) * r0 + rng.uniform(0, 6) * px
            off *= 1 if rng.random() < 0.5 else -1
            width = max(1.5, rng.uniform(1.5, 6.0) * px)
            bend_a, bend_l = rng.uniform(0, 0.3) * r0, rng.uniform(20, 60) * px
            # Finite segment (30-120 mm) with soft ends: full-image lines look artificial.
            half_len, a0 = rng.uniform(15, 60) * px, rng.uniform(-1.0, 1.0) * r0
            alpha = tube_alpha(size, cy, cx, psi, off, width, bend_a, bend_l, half_len, a0)
            img += alpha * (val - img)
            kinds.append("vessel")
            continue
        rd = r0 * rng.uniform(0.3, 1.1)
        _, fn, ext = draw_shape(rng, max(rd, 1.5), recipe.shape_p)
        ang = rng.uniform(0, 2 * np.pi)
        if r < 0.75:  # touching: centre just beyond the target boundary so the masks touch / overlap
            by, bx, _ = _boundary_point(label, cy, cx, ang)
            d = rd * rng.uniform(0.6, 1.0)
            kinds.append("touch")
        else:  # nearby, not necessarily touching
            by, bx = cy, cx
            d = r0 * rng.uniform(1.5, 3.0) + rd
            kinds.append("blob")
        oy, ox = by + d * math.sin(ang), bx + d * math.cos(ang)
        sb = rng.uniform(0.3, 1.5) * blur
        bsl, dy, dx = bbox_slices(oy, ox, ext + 3 * sb + 3, img.shape)
        if dy.size == 0 or dx.size == 0:
            continue
        msk = fn(dy, dx)
        if msk.any():
            _composite(img, bsl, _soft_alpha(msk, sb), val)
    return "distr(" + ",".join(kinds) + ")"


# --------------------------------------------------------------------------------------------------
# Clicks and benchmark
# --------------------------------------------------------------------------------------------------
def jitter_click(
    click: tuple[float, float], label: np.ndarray, rng: np.random.Generator, max_frac: float = 0.3
) -> tuple[float, float]:
    """Move ``click`` (y, x) by up to ``max_frac`` x the object's equivalent radius sqrt(area / pi).

    Direction uniform, distance uniform in [0, max]; the result stays inside ``label`` (checked at the
    rounded pixel). After 10 failed tries the original click is returned.
    """
    area = float(np.count_nonzero(label))
    rmax = max_frac * math.sqrt(area / math.pi)
    h, w = label.shape
    for _ in range(10):
        ang, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, rmax)
        y, x = click[0] + d * math.sin(ang), click[1] + d * math.cos(ang)
        iy, ix = int(round(y)), int(round(x))
        if 0 <= iy < h and 0 <= ix < w and label[iy, ix]:
            return float(y), float(x)
    return (float(click[0]), float(click[1]))


def inner_click(
    click: tuple[float, float], label: np.ndarray, rng: np.random.Generator, frac: float = 0.5
) -> tuple[float, float]:
    """A click in the object's inner part: from ``click`` (y, x, inside ``label``) along a random
    direction, up to ``frac`` of the way to the boundary (:func:`_boundary_point`'s walk), the distance
    drawn as frac x sqrt(U) so that clicks spread evenly over that area. The result stays inside
    ``label`` (rounded pixel); after 10 failed tries the original click is returned."""
    h, w = label.shape
    for _ in range(10):
        ang = rng.uniform(0, 2 * np.pi)
        _, _, reach = _boundary_point(label, click[0], click[1], ang)
        d = frac * math.sqrt(rng.uniform()) * reach
        y, x = click[0] + d * math.sin(ang), click[1] + d * math.cos(ang)
        iy, ix = int(round(y)), int(round(x))
        if 0 <= iy < h and 0 <= ix < w and label[iy, ix]:
            return float(y), float(x)
    return (float(click[0]), float(click[1]))


def move_click(
    click: tuple[float, float], label: np.ndarray, rng: np.random.Generator, recipe: Recipe = LESIONS
) -> tuple[float, float]:
    """The training click of a slice: with ``recipe.click_move_p``, ``click`` moved by the recipe's
    rule (``"jitter"``: :func:`jitter_click`; ``"inner"``: :func:`inner_click`), ``click_frac`` its
    reach; otherwise ``click`` (the mass centre) itself."""
    if rng.random() >= recipe.click_move_p:
        return (float(click[0]), float(click[1]))
    if recipe.click_rule == "inner":
        return inner_click(click, label, rng, recipe.click_frac)
    if recipe.click_rule == "jitter":
        return jitter_click(click, label, rng, recipe.click_frac)
    raise ValueError(f"unknown click rule {recipe.click_rule!r}")


def benchmark_set(
    n: int,
    seed: int,
    backgrounds: BackgroundBank | None,
    spacing_mm: float = 1.0,
    size: int = 192,
    *,
    radius_mm: tuple[float, float] | None = None,
) -> list[SynthSlice]:
    """``n`` held-out synthetic slices from seed stream ``SeedSequence([seed, 7])`` (never used by
    training) and the bank's ``"val"`` split (anatomy training never saw).

    ``radius_mm`` (lo, hi): nominal target radii drawn log-uniform in that range (see
    :func:`make_slice`; e.g. ``radius_mm=(40, 80), spacing_mm=2.0`` for large objects). ``None`` keeps
    the default set, whose values the golden tests pin."""
    if radius_mm is not None:
        _check_radius_range(radius_mm, size, spacing_mm, LESIONS)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    bank = backgrounds.with_split("val") if backgrounds is not None else None
    if bank is not None and len(bank) == 0:
        logger.warning("background bank has no 'val' slices: benchmark uses procedural phantoms only")
    return [make_slice(rng, size=size, spacing_mm=spacing_mm, backgrounds=bank, radius_mm=radius_mm) for _ in range(n)]
