"""Random lesion shapes for the synthetic slices (:mod:`seqpatch_core.data.synth`).

Each builder draws its parameters from ``rng``, then returns (mask_fn, extent_px): ``mask_fn(dy, dx)``
gives a bool mask on offset grids around the nominal centre (:func:`bbox_slices`), ``extent_px`` bounds
the shape's radius. Kinds: smoothed-noise blobs, Fourier-modulated ellipses (optionally spiculated)
and unions of ellipse lobes. Nothing runs on import.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

from seqpatch_core.data.phantoms import fft_field
from seqpatch_core.data.recipe import LESIONS

__all__ = ["MaskFn", "bbox_slices", "draw_shape", "largest_filled"]

_F32 = np.float32

MaskFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def bbox_slices(
    cy: float, cx: float, half: float, shape: tuple[int, int]
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Crop of the image around (cy, cx) of half-size ``half`` clipped to ``shape``.

    Returns the (y, x) slices and float32 offset grids dy (h, 1), dx (1, w) from the centre.
    """
    y0 = max(int(math.floor(cy - half)), 0)
    y1 = min(int(math.ceil(cy + half)) + 1, shape[0])
    x0 = max(int(math.floor(cx - half)), 0)
    x1 = min(int(math.ceil(cx + half)) + 1, shape[1])
    dy = (np.arange(y0, y1, dtype=_F32) - _F32(cy))[:, None]
    dx = (np.arange(x0, x1, dtype=_F32) - _F32(cx))[None, :]
    return (slice(y0, y1), slice(x0, x1)), dy, dx


def _wrap_angle(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def _ellipse_radius(theta: np.ndarray, a: float, b: float, psi: float) -> np.ndarray:
    """Radius r(theta) of an ellipse with semi-axes a, b rotated by psi."""
    c = np.cos(theta - _F32(psi))
    s = np.sin(theta - _F32(psi))
    return _F32(a * b) / np.sqrt((b * c) ** 2 + (a * s) ** 2)


def _harmonics(rng: np.random.Generator, total: float) -> list[tuple[int, float, float]]:
    """Low-frequency radial Fourier harmonics k = 2..6 with sum of |a_k| <= total."""
    ks = np.arange(2, 7)
    amps = rng.uniform(0.0, 1.0, size=ks.size) / ks**0.8
    amps *= total * rng.uniform(0.3, 1.0) / amps.sum()
    phases = rng.uniform(0.0, 2 * np.pi, size=ks.size)
    return [(int(k), float(a), float(p)) for k, a, p in zip(ks, amps, phases, strict=True)]


def _shape_fourier(rng: np.random.Generator, r0: float, spikes: bool = False) -> tuple[MaskFn, float]:
    """Ellipse with random axes and rotation, radius modulated by harmonics; optionally spiculated."""
    e = rng.uniform(1.0, 1.4)
    a, b, psi = r0 * e, r0 / e, rng.uniform(0, np.pi)
    harm = _harmonics(rng, 0.15 if spikes else 0.45)
    extent = max(a, b) * (1.0 + sum(h[1] for h in harm))
    spike_par: list[tuple[float, float, float]] = []
    if spikes:
        for _ in range(int(rng.integers(5, 16))):
            length = max(3.0, r0 * rng.uniform(0.3, 1.0))
            base_w = rng.uniform(1.5, 4.0)  # spike width at its base, px
            spike_par.append((rng.uniform(0, 2 * np.pi), length, base_w / (2.0 * max(b, 1.0))))
        extent += max(p[1] for p in spike_par)

    def fn(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        theta = np.arctan2(dy, dx)
        rho = np.sqrt(dy * dy + dx * dx)
        mod = np.ones_like(theta)
        for k, ak, ph in harm:
            mod += _F32(ak) * np.cos(_F32(k) * theta + _F32(ph))
        r = _ellipse_radius(theta, a, b, psi) * mod
        for th, length, half_w in spike_par:
            # Triangular angular profile -> a spike that tapers to a point.
            r += _F32(length) * np.clip(1.0 - np.abs(_wrap_angle(theta - _F32(th))) / _F32(half_w), 0, None)
        return rho < r

    return fn, extent


def _shape_noise(rng: np.random.Generator, r0: float) -> tuple[MaskFn, float]:
    """Thresholded smoothed noise inside a soft elliptical envelope."""
    e = rng.uniform(1.0, 1.3)
    a, b, psi = r0 * e, r0 / e, rng.uniform(0, np.pi)
    amp = rng.uniform(0.3, 0.7)
    corr = max(1.0, r0 * rng.uniform(0.25, 0.5))
    extent = max(a, b) * 1.6
    cp, sp = _F32(math.cos(psi)), _F32(math.sin(psi))

    def fn(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        u = (dx * cp + dy * sp) / _F32(a)
        v = (-dx * sp + dy * cp) / _F32(b)
        q2 = u * u + v * v
        noise = fft_field(rng, (dy.shape[0], dx.shape[1]), [corr], [1.0])
        return ((1.0 - q2) + _F32(amp) * noise > 0) & (q2 < 1.6**2)

    return fn, extent


def _shape_lobes(rng: np.random.Generator, r0: float) -> tuple[MaskFn, float]:
    """Union of 2-4 overlapping rotated ellipses."""
    lobes = [(0.0, 0.0, r0 * rng.uniform(0.6, 1.0), r0 * rng.uniform(0.5, 0.9), rng.uniform(0, np.pi))]
    for _ in range(int(rng.integers(1, 4))):
        d, ang = r0 * rng.uniform(0.3, 0.8), rng.uniform(0, 2 * np.pi)
        lobes.append(
            (
                d * math.sin(ang),
                d * math.cos(ang),
                r0 * rng.uniform(0.4, 0.8),
                r0 * rng.uniform(0.3, 0.7),
                rng.uniform(0, np.pi),
            )
        )
    extent = max(math.hypot(oy, ox) + max(ra, rb) for oy, ox, ra, rb, _ in lobes)

    def fn(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
        out = np.zeros((dy.shape[0], dx.shape[1]), dtype=bool)
        for oy, ox, ra, rb, psi in lobes:
            cp, sp = math.cos(psi), math.sin(psi)
            yy, xx = dy - _F32(oy), dx - _F32(ox)
            u = (xx * _F32(cp) + yy * _F32(sp)) / _F32(ra)
            v = (-xx * _F32(sp) + yy * _F32(cp)) / _F32(rb)
            out |= u * u + v * v < 1.0
        return out

    return fn, extent


def draw_shape(
    rng: np.random.Generator, r0: float, kind_p: tuple[float, float, float, float] = LESIONS.shape_p
) -> tuple[str, MaskFn, float]:
    """A random shape of nominal radius ``r0`` px: (kind, mask_fn, extent_px); ``kind_p``: the
    probabilities of noise, fourier, lobes, spiculated (a recipe's ``shape_p``)."""
    kind = rng.choice(["noise", "fourier", "lobes", "spiculated"], p=list(kind_p))
    if kind == "noise":
        fn, ext = _shape_noise(rng, r0)
    elif kind == "lobes":
        fn, ext = _shape_lobes(rng, r0)
    else:
        fn, ext = _shape_fourier(rng, r0, spikes=kind == "spiculated")
    return str(kind), fn, ext


def largest_filled(mask: np.ndarray) -> np.ndarray:
    """Largest 8-connected component of ``mask`` with its holes filled (bool, same shape)."""
    lab, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == int(np.argmax(sizes))
    return ndi.binary_fill_holes(mask)
