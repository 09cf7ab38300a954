"""Procedural backgrounds for the synthetic slices (:mod:`seqpatch_core.data.synth`) and the smooth noise
fields and soft primitives they are drawn with.

Every function takes the generator ``rng`` as its only source of randomness and returns float32 arrays
(y, x) in display units ([0, 1], already windowed). Nothing runs on import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.fft as sfft

__all__ = ["fft_field", "lung_background", "phantom_background", "soft_ellipse", "tube_alpha"]

_F32 = np.float32


def fft_field(
    rng: np.random.Generator, shape: tuple[int, int], sigmas_px: Sequence[float], amps: Sequence[float]
) -> np.ndarray:
    """Sum of Gaussian-filtered white noise at several scales, float32 ``shape``.

    One FFT pair serves all scales (much cheaper than several large ``gaussian_filter`` calls); the
    field is periodic, which is invisible for textures. Each scale is normalised to unit standard
    deviation before being multiplied by its amplitude, so ``amps`` are standard deviations.
    """
    h, w = shape
    white = rng.standard_normal(shape, dtype=_F32)
    spec = sfft.rfft2(white)
    fy = sfft.fftfreq(h).astype(_F32)[:, None]
    fx = sfft.rfftfreq(w).astype(_F32)[None, :]
    f2 = fy * fy + fx * fx
    transfer = np.zeros_like(f2)
    for s, a in zip(sigmas_px, amps, strict=True):
        s = max(float(s), 0.3)
        # Std of unit white noise after a 2-D Gaussian of sigma s is 1 / (2 s sqrt(pi)).
        transfer += _F32(a * 2.0 * s * math.sqrt(math.pi)) * np.exp(_F32(-2.0 * math.pi**2 * s * s) * f2)
    return sfft.irfft2(spec * transfer, s=shape).astype(_F32, copy=False)


def soft_ellipse(
    shape: tuple[int, int], cy: float, cx: float, a: float, b: float, psi: float, edge_px: float
) -> np.ndarray:
    """Soft ellipse coverage in [0, 1] (float32 ``shape``), edge ramp about ``edge_px`` wide."""
    dy = (np.arange(shape[0], dtype=_F32) - _F32(cy))[:, None]
    dx = (np.arange(shape[1], dtype=_F32) - _F32(cx))[None, :]
    cp, sp = _F32(math.cos(psi)), _F32(math.sin(psi))
    u = (dx * cp + dy * sp) / _F32(a)
    v = (-dx * sp + dy * cp) / _F32(b)
    q = np.sqrt(u * u + v * v)
    # (1 - q) * min(a, b) approximates the inward distance to the boundary in px.
    return np.clip((1.0 - q) * _F32(min(a, b) / max(edge_px, 0.5)) + 0.5, 0.0, 1.0)


def phantom_background(rng: np.random.Generator, size: int, spacing_mm: float) -> tuple[np.ndarray, str]:
    """Procedural anatomy-like background: float32 (size, size) in [0, 1]."""
    shape = (size, size)
    mm = 1.0 / spacing_mm
    sig = [rng.uniform(2, 4) * mm, rng.uniform(8, 15) * mm, rng.uniform(25, 50) * mm]
    amp = [rng.uniform(0.0, 0.04), rng.uniform(0.02, 0.08), rng.uniform(0.03, 0.12)]
    texture = fft_field(rng, shape, sig, amp)
    img = _F32(rng.uniform(0.2, 0.7)) + texture
    n_org = int(rng.integers(2, 7))
    for _ in range(n_org):
        a = min(rng.uniform(15, 70) * mm, 0.5 * size)
        b = min(rng.uniform(15, 70) * mm, 0.5 * size)
        alpha = soft_ellipse(
            shape,
            rng.uniform(0, size),
            rng.uniform(0, size),
            a,
            b,
            rng.uniform(0, np.pi),
            rng.uniform(0.5, 4),
        )
        level = _F32(rng.uniform(0.05, 0.95)) + _F32(rng.uniform(0.3, 1.0)) * texture
        img += alpha * (level - img)
    body = rng.random() < 0.4
    if body:
        c = size / 2.0
        alpha = soft_ellipse(
            shape,
            c + rng.uniform(-10, 10),
            c + rng.uniform(-10, 10),
            size * rng.uniform(0.38, 0.6),
            size * rng.uniform(0.35, 0.5),
            rng.uniform(0, np.pi),
            rng.uniform(0.5, 2),
        )
        outside = _F32(rng.uniform(0.0, 0.08))
        img = alpha * img + (1.0 - alpha) * outside
    np.clip(img, 0.0, 1.0, out=img)
    return img, f"phantom(organs={n_org}{',body' if body else ''})"


def lung_background(rng: np.random.Generator, size: int, spacing_mm: float) -> tuple[np.ndarray, str]:
    """Lung-like background (float32 (size, size) in [0, 1]): dark parenchyma with fine texture,
    bright branching-vessel segments, and often a chest wall / mediastinum of soft-tissue brightness.

    Lung nodules and tumours are the commonest CT lesions; the head anatomy in the background bank has
    no lung, so this phantom supplies the dark-surround, vessel-touching, wall-abutting case.
    """
    shape = (size, size)
    mm = 1.0 / spacing_mm
    base = rng.uniform(0.03, 0.4)
    img = _F32(base) + fft_field(
        rng,
        shape,
        [rng.uniform(1, 3) * mm, rng.uniform(10, 30) * mm],
        [rng.uniform(0.01, 0.05), rng.uniform(0.02, 0.06)],
    )
    n_vessels = int(rng.integers(6, 22))
    for _ in range(n_vessels):
        val = _F32(min(0.98, base + rng.uniform(0.15, 0.6)))
        width = max(1.0, rng.uniform(1.0, 5.0) * mm)
        alpha = tube_alpha(
            size,
            rng.uniform(0, size),
            rng.uniform(0, size),
            rng.uniform(0, np.pi),
            0.0,
            width,
            rng.uniform(0, 8) * mm,
            rng.uniform(15, 50) * mm,
            rng.uniform(10, 50) * mm,
            0.0,
        )
        img += alpha * (val - img)
    wall = rng.random() < 0.6
    if wall:
        ang = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(10, 0.6 * size / mm) * mm  # from the image centre, px
        yy = np.arange(size, dtype=_F32)[:, None] - _F32(size / 2)
        xx = np.arange(size, dtype=_F32)[None, :] - _F32(size / 2)
        curv = rng.uniform(0.0, 0.004) / mm
        d = yy * _F32(math.sin(ang)) + xx * _F32(math.cos(ang)) - _F32(dist)
        across = -yy * _F32(math.cos(ang)) + xx * _F32(math.sin(ang))
        d = d + _F32(curv) * across * across  # a gently curved wall
        alpha = np.clip(d / _F32(rng.uniform(0.5, 2.0)) + 0.5, 0.0, 1.0)
        level = _F32(rng.uniform(0.55, 0.95)) + fft_field(rng, shape, [rng.uniform(2, 6) * mm], [0.03])
        img += alpha * (level - img)
    np.clip(img, 0.0, 1.0, out=img)
    return img, f"lung(vessels={n_vessels}{',wall' if wall else ''})"


def tube_alpha(
    size: int,
    cy: float,
    cx: float,
    psi: float,
    off: float,
    width: float,
    bend_a: float,
    bend_l: float,
    half_len: float,
    a0: float,
) -> np.ndarray:
    """Coverage (size, size) float32 of a slightly curved tube of ``width`` px at angle ``psi``,
    offset ``off`` px from (cy, cx), centred ``a0`` px along it, ``2 * half_len`` px long."""
    yy = np.arange(size, dtype=_F32)[:, None] - _F32(cy)
    xx = np.arange(size, dtype=_F32)[None, :] - _F32(cx)
    s, c = _F32(math.sin(psi)), _F32(math.cos(psi))
    along = xx * c + yy * s
    across = -xx * s + yy * c - _F32(off) - _F32(bend_a) * np.sin(along / _F32(bend_l))
    alpha = np.clip(_F32(width / 2 + 0.5) - np.abs(across), 0.0, 1.0)
    return alpha * np.clip(_F32(half_len) - np.abs(along - _F32(a0)), 0.0, 1.0)
