"""Batched synthetic training slices on a torch device: :mod:`seqpatch_core.data.synth` redrawn for speed.

:func:`seqpatch_core.data.synth.make_slice` draws one slice at a time in numpy on one CPU core; a GPU
trains faster than a machine's cores can feed it that way. :class:`DeviceSynth` draws a whole batch
at once with torch on the training device: procedural backgrounds, target shapes, neighbours that
touch the target, texture, partial-volume blur, noise, bias field, the click and its jitter, the flip
and the intensity augmentation. The CPU only picks real-anatomy backgrounds from the bank (a crop and
a window per slice) and copies them over.

The slices follow the same recipe as ``synth.make_slice``: the constants (radii, contrasts, blur, leak
organs, neighbours, rims, inner vessels, noise, bias, the click rule) are read from one
:class:`~seqpatch_core.data.recipe.Recipe`, with these simplifications, chosen so that every step is a
tensor operation on the whole batch:

* shapes (Fourier ellipses, spiculated, ellipse lobes, thresholded noise) are drawn on the whole
  slice; the label is the shape's component nearest the centre with its holes filled, found by
  geodesic reconstruction (repeated 3x3 max-pooling) instead of ``scipy.ndimage.label``;
* blurs are Gaussian transfer functions in the Fourier domain (periodic, which a lesion near the
  centre never sees);
* a rim lesion's necrotic core is where a blur of the label (sigma r0 / 3) exceeds 0.75-0.9, not a
  distance transform; neighbours are Fourier ellipses or tubes.

Frame: arrays are (n, y, x); clicks are (y, x) pixels, as in ``synth``. One torch generator seeded per
call on the device and one numpy generator (the backgrounds) make a call reproducible on one device;
the streams differ from ``synth``'s and between devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from seqpatch_core.data.recipe import LESIONS, Recipe

__all__ = ["DeviceSlices", "DeviceSynth"]

# Loop bounds of the shape and phantom primitives (shapes.py's and phantoms.py's counts), not recipe knobs.
_MAX_SPIKES, _MAX_LOBES, _MAX_VESSELS, _MAX_ORGANS = 15, 4, 21, 6


def _c(t: torch.Tensor) -> torch.Tensor:
    """(n,) -> (n, 1, 1), to broadcast a per-slice value over (n, H, W)."""
    return t[:, None, None]


@dataclass
class DeviceSlices:
    """A batch of generated slices.

    Attributes:
        images: (n, H, W) float32 in [0, 1], on the generator's device.
        labels: (n, H, W), 1 on the target object (bool from :meth:`DeviceSynth.slices`, float32 from
            :meth:`DeviceSynth.batch`), on the device.
        clicks: (n, 2) (y, x) pixels: float32 on the device from ``slices`` (the target's mass centre),
            float64 on the CPU from ``batch`` (the ray geometry's side).
        lung: (n,) bool, the slices drawn on a lung-like background (``slices`` only).
    """

    images: torch.Tensor
    labels: torch.Tensor
    clicks: torch.Tensor
    lung: torch.Tensor | None = None


class DeviceSynth:
    """Synthetic slices, ``n`` at a time, on ``device``.

    Args:
        device: where the slices are drawn (and returned).
        size: H = W of a slice in pixels.
        bank: real anatomy (:class:`~seqpatch_core.data.backgrounds.BackgroundBank`) for
            1 - ``recipe.bank_prob_phantom`` of the backgrounds, picked on the CPU; ``None``:
            procedural backgrounds only.
        recipe: the constants (:mod:`seqpatch_core.data.recipe`), as ``synth.make_slice``'s.
    """

    def __init__(self, device: str | torch.device = "cpu", size: int = 192, bank=None, recipe: Recipe = LESIONS):
        self.device, self.size, self.bank, self.recipe = torch.device(device), size, bank, recipe
        ar = torch.arange(size, dtype=torch.float32, device=self.device)
        self.yy, self.xx = ar[None, :, None], ar[None, None, :]
        fy, fx = torch.fft.fftfreq(size, device=self.device), torch.fft.rfftfreq(size, device=self.device)
        self.f2 = (fy[:, None] ** 2 + fx[None, :] ** 2).float()
        self.g = torch.Generator(device=self.device)

    # ---------------------------------------------------------------- random draws, (n,) or (n, k)
    def _u(self, n: int, lo: float | torch.Tensor, hi: float | torch.Tensor, k: int | None = None) -> torch.Tensor:
        shape = (n,) if k is None else (n, k)
        r = torch.rand(shape, generator=self.g, device=self.device)
        return lo + (hi - lo) * r

    def _logu(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return torch.exp(self._u(n, math.log(lo), math.log(hi)))

    def _coin(self, n: int, p: float | torch.Tensor) -> torch.Tensor:
        return torch.rand(n, generator=self.g, device=self.device) < p

    def _int(self, n: int, lo: int, hi: int) -> torch.Tensor:
        """Integers in [lo, hi)."""
        return torch.randint(lo, hi, (n,), generator=self.g, device=self.device)

    # ---------------------------------------------------------------- fields and primitives
    def _field(self, sigmas: torch.Tensor, amps: torch.Tensor) -> torch.Tensor:
        """Gaussian-filtered white noise, (n, H, W); ``sigmas``, ``amps`` (n, S): one scale per column,
        each of standard deviation ``amps`` (``phantoms.fft_field`` batched)."""
        n = sigmas.shape[0]
        white = torch.randn((n, self.size, self.size), generator=self.g, device=self.device)
        s = sigmas.clamp_min(0.3)[:, :, None, None]
        transfer = amps[:, :, None, None] * 2 * s * math.sqrt(math.pi) * torch.exp(-2 * math.pi**2 * s * s * self.f2)
        return torch.fft.irfft2(torch.fft.rfft2(white) * transfer.sum(1), s=(self.size, self.size))

    def _blur(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Gaussian blur of (n, H, W) with a per-slice ``sigma`` (n,) px."""
        transfer = torch.exp(-2 * math.pi**2 * _c(sigma) ** 2 * self.f2)
        return torch.fft.irfft2(torch.fft.rfft2(x) * transfer, s=(self.size, self.size))

    def _polar(self, cy: torch.Tensor, cx: torch.Tensor, psi: torch.Tensor | None = None):
        """Offsets from (cy, cx) (n,): dy, dx, and with ``psi`` the rotated frame (u along psi, v across)."""
        dy, dx = self.yy - _c(cy), self.xx - _c(cx)
        if psi is None:
            return dy, dx
        cp, sp = _c(torch.cos(psi)), _c(torch.sin(psi))
        return dx * cp + dy * sp, -dx * sp + dy * cp

    def _soft_ellipse(self, cy, cx, a, b, psi, edge) -> torch.Tensor:
        u, v = self._polar(cy, cx, psi)
        q = torch.sqrt((u / _c(a)) ** 2 + (v / _c(b)) ** 2)
        return ((1 - q) * _c(torch.minimum(a, b) / edge.clamp_min(0.5)) + 0.5).clamp(0, 1)

    def _tube(self, cy, cx, psi, off, width, bend_a, bend_l, half_len, a0) -> torch.Tensor:
        along, across = self._polar(cy, cx, psi)
        across = across - _c(off) - _c(bend_a) * torch.sin(along / _c(bend_l))
        alpha = (_c(width / 2 + 0.5) - across.abs()).clamp(0, 1)
        return alpha * (_c(half_len) - (along - _c(a0)).abs()).clamp(0, 1)

    # ---------------------------------------------------------------- backgrounds
    def _phantom(self, n: int, mm: float) -> torch.Tensor:
        sig = torch.stack([self._u(n, 2, 4), self._u(n, 8, 15), self._u(n, 25, 50)], 1) * mm
        amp = torch.stack([self._u(n, 0, 0.04), self._u(n, 0.02, 0.08), self._u(n, 0.03, 0.12)], 1)
        texture = self._field(sig, amp)
        img = _c(self._u(n, 0.2, 0.7)) + texture
        n_org = self._int(n, 2, _MAX_ORGANS + 1)
        s = float(self.size)
        for k in range(_MAX_ORGANS):
            a = torch.clamp(self._u(n, 15, 70) * mm, max=0.5 * s)
            b = torch.clamp(self._u(n, 15, 70) * mm, max=0.5 * s)
            alpha = self._soft_ellipse(self._u(n, 0, s), self._u(n, 0, s), a, b, self._u(n, 0, math.pi),
                                       self._u(n, 0.5, 4))  # fmt: skip
            level = _c(self._u(n, 0.05, 0.95)) + _c(self._u(n, 0.3, 1.0)) * texture
            img = img + _c((k < n_org).float()) * alpha * (level - img)
        body = self._coin(n, 0.4)
        alpha = self._soft_ellipse(s / 2 + self._u(n, -10, 10), s / 2 + self._u(n, -10, 10), s * self._u(n, 0.38, 0.6),
                                   s * self._u(n, 0.35, 0.5), self._u(n, 0, math.pi), self._u(n, 0.5, 2))  # fmt: skip
        outside = _c(self._u(n, 0.0, 0.08))
        img = torch.where(_c(body), alpha * img + (1 - alpha) * outside, img)
        return img.clamp(0, 1)

    def _lung(self, n: int, mm: float) -> torch.Tensor:
        base = self._u(n, 0.03, 0.4)
        sig = torch.stack([self._u(n, 1, 3), self._u(n, 10, 30)], 1) * mm
        amp = torch.stack([self._u(n, 0.01, 0.05), self._u(n, 0.02, 0.06)], 1)
        img = _c(base) + self._field(sig, amp)
        n_ves = self._int(n, 6, _MAX_VESSELS + 1)
        s, zero = float(self.size), torch.zeros(n, device=self.device)
        for k in range(_MAX_VESSELS):
            val = torch.clamp(base + self._u(n, 0.15, 0.6), max=0.98)
            width = torch.clamp(self._u(n, 1.0, 5.0) * mm, min=1.0)
            bend_a, bend_l, half_len = self._u(n, 0, 8) * mm, self._u(n, 15, 50) * mm, self._u(n, 10, 50) * mm
            alpha = self._tube(self._u(n, 0, s), self._u(n, 0, s), self._u(n, 0, math.pi), zero, width,
                               bend_a, bend_l, half_len, zero)  # fmt: skip
            img = img + _c((k < n_ves).float()) * alpha * (_c(val) - img)
        wall = self._coin(n, 0.6)
        ang = self._u(n, 0, 2 * math.pi)
        dist = self._u(n, 10, 0.6 * s / mm) * mm
        along, across = self._polar(torch.full((n,), s / 2, device=self.device),
                                    torch.full((n,), s / 2, device=self.device), ang)  # fmt: skip
        d = along - _c(dist) + _c(self._u(n, 0.0, 0.004) / mm) * across * across
        alpha = (d / _c(self._u(n, 0.5, 2.0)) + 0.5).clamp(0, 1)
        level = _c(self._u(n, 0.55, 0.95)) + self._field(
            self._u(n, 2, 6, 1) * mm, torch.full((n, 1), 0.03, device=self.device)
        )
        img = img + _c(wall.float()) * alpha * (level - img)
        return img.clamp(0, 1)

    def _backgrounds(self, n: int, spacing_mm: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, H, W) backgrounds in [0, 1] and (n,) bool: lung-like. Bank slices come from the CPU."""
        mm = 1.0 / spacing_mm
        use_bank = np.zeros(n, bool)
        if self.bank is not None and len(self.bank):
            use_bank = rng.random(n) >= self.recipe.bank_prob_phantom
        lung = ~use_bank & (rng.random(n) < self.recipe.lung_prob)
        img = torch.empty((n, self.size, self.size), device=self.device)
        if use_bank.any():
            crops = [self.bank._sample(rng, self.size, spacing_mm)[0] for _ in range(int(use_bank.sum()))]
            img[torch.from_numpy(use_bank).to(self.device)] = torch.from_numpy(np.stack(crops)).to(self.device)
        for which, draw in ((lung, self._lung), (~use_bank & ~lung, self._phantom)):
            if which.any():
                img[torch.from_numpy(which).to(self.device)] = draw(int(which.sum()), mm)
        return img, torch.from_numpy(lung).to(self.device)

    # ---------------------------------------------------------------- shapes
    def _fourier(self, r0, cy, cx, spikes: torch.Tensor) -> torch.Tensor:
        """Ellipses with radial harmonics k = 2..6, optionally spiculated (bool (n,) mask)."""
        n = r0.shape[0]
        e = self._u(n, 1.0, 1.4)
        a, b, psi = r0 * e, r0 / e, self._u(n, 0, math.pi)
        ks = torch.arange(2, 7, device=self.device, dtype=torch.float32)
        amps = self._u(n, 0.0, 1.0, 5) / ks**0.8
        total = torch.where(spikes, 0.15, 0.45) * self._u(n, 0.3, 1.0)
        amps = amps * (total / amps.sum(1))[:, None]
        phases = self._u(n, 0.0, 2 * math.pi, 5)
        dy, dx = self._polar(cy, cx)
        theta, rho = torch.atan2(dy, dx), torch.sqrt(dy * dy + dx * dx)
        t = theta - _c(psi)
        r = _c(a * b) / torch.sqrt((_c(b) * torch.cos(t)) ** 2 + (_c(a) * torch.sin(t)) ** 2)
        mod = torch.ones_like(theta)
        for j in range(5):
            mod = mod + _c(amps[:, j]) * torch.cos(ks[j] * theta + _c(phases[:, j]))
        r = r * mod
        if bool(spikes.any()):
            count = self._int(n, 5, 16)
            for k in range(_MAX_SPIKES):
                on = spikes & (k < count)
                length = torch.clamp(r0 * self._u(n, 0.3, 1.0), min=3.0) * on
                half_w = self._u(n, 1.5, 4.0) / (2 * torch.clamp(b, min=1.0))
                d = torch.remainder(theta - _c(self._u(n, 0, 2 * math.pi)) + math.pi, 2 * math.pi) - math.pi
                r = r + _c(length) * (1 - d.abs() / _c(half_w)).clamp_min(0)
        return rho < r

    def _lobes(self, r0, cy, cx) -> torch.Tensor:
        """Unions of 2-4 rotated ellipses."""
        n = r0.shape[0]
        count = self._int(n, 2, _MAX_LOBES + 1)
        out = torch.zeros((n, self.size, self.size), dtype=torch.bool, device=self.device)
        for k in range(_MAX_LOBES):
            d, ang = r0 * self._u(n, 0.3, 0.8) * (k > 0), self._u(n, 0, 2 * math.pi)
            ra = r0 * (self._u(n, 0.6, 1.0) if k == 0 else self._u(n, 0.4, 0.8))
            rb = r0 * (self._u(n, 0.5, 0.9) if k == 0 else self._u(n, 0.3, 0.7))
            u, v = self._polar(cy + d * torch.sin(ang), cx + d * torch.cos(ang), self._u(n, 0, math.pi))
            out |= ((u / _c(ra)) ** 2 + (v / _c(rb)) ** 2 < 1) & _c(k < count)
        return out

    def _noise_shape(self, r0, cy, cx) -> torch.Tensor:
        """Smoothed noise thresholded inside a soft elliptical envelope."""
        n = r0.shape[0]
        e = self._u(n, 1.0, 1.3)
        u, v = self._polar(cy, cx, self._u(n, 0, math.pi))
        q2 = (u / _c(r0 * e)) ** 2 + (v / _c(r0 / e)) ** 2
        corr = torch.clamp(r0 * self._u(n, 0.25, 0.5), min=1.0)
        noise = self._field(corr[:, None], torch.ones((n, 1), device=self.device))
        return ((1 - q2) + _c(self._u(n, 0.3, 0.7)) * noise > 0) & (q2 < 1.6**2)

    def _shapes(self, r0, cy, cx) -> torch.Tensor:
        """One target shape per slice, (n, H, W) bool, kinds drawn with synth's probabilities."""
        n = r0.shape[0]
        p = torch.tensor(self.recipe.shape_p, device=self.device)
        kind = torch.multinomial(p.expand(n, -1), 1, generator=self.g)[:, 0]
        out = torch.zeros((n, self.size, self.size), dtype=torch.bool, device=self.device)
        star = (kind == 1) | (kind == 3)
        for which, draw in (
            (kind == 0, lambda i: self._noise_shape(r0[i], cy[i], cx[i])),
            (star, lambda i: self._fourier(r0[i], cy[i], cx[i], (kind == 3)[i])),
            (kind == 2, lambda i: self._lobes(r0[i], cy[i], cx[i])),
        ):
            if bool(which.any()):
                out[which] = draw(which)
        return out

    def _reconstruct(self, seed: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
        """Pixels of ``within`` 8-connected to ``seed`` (both (n, H, W) bool): repeated 3x3 dilation
        (two shifted ORs per axis, several times cheaper than ``max_pool2d`` on a CPU) inside ``within``."""
        rec = seed & within
        for i in range(4 * self.size):
            d = rec.clone()
            d[:, 1:] |= rec[:, :-1]
            d[:, :-1] |= rec[:, 1:]
            e = d.clone()
            e[:, :, 1:] |= d[:, :, :-1]
            e[:, :, :-1] |= d[:, :, 1:]
            e &= within
            if i % 8 == 7 and torch.equal(e, rec):
                break
            rec = e
        return rec

    def _component_filled(self, mask: torch.Tensor, cy, cx, r0) -> torch.Tensor:
        """The component of ``mask`` nearest (cy, cx) with its holes filled; a disc where ``mask`` is empty."""
        dy, dx = self._polar(cy, cx)
        d2 = dy * dy + dx * dx
        mask = torch.where(_c(mask.flatten(1).any(1)), mask, d2 <= _c(torch.clamp(r0, min=1.5) ** 2))
        nearest = torch.where(mask, d2, torch.inf).flatten(1).argmin(1)
        seed = torch.zeros_like(mask).flatten(1)
        seed[torch.arange(mask.shape[0], device=self.device), nearest] = True
        comp = self._reconstruct(seed.view_as(mask), mask)
        reach = torch.where(comp, d2, 0).flatten(1).amax(1)
        edge = torch.zeros_like(comp)
        edge[:, [0, -1], :] = True
        edge[:, :, [0, -1]] = True
        # what lies beyond the object's farthest pixel, or on the slice's edge, is outside it
        outside = self._reconstruct(~comp & ((d2 > _c(reach)) | edge), ~comp)
        return ~outside

    # ---------------------------------------------------------------- placement helpers
    def _boundary(self, label: torch.Tensor, cy, cx, ang) -> tuple[torch.Tensor, torch.Tensor]:
        """Walking from (cy, cx) along ``ang`` (n,): the last label pixel before a gap over 3 px (synth's walk)."""
        n, s = label.shape[0], self.size
        t = torch.arange(0, 1.5 * s, 0.5, device=self.device)
        y = torch.round(cy[:, None] + t * torch.sin(ang)[:, None]).long()
        x = torch.round(cx[:, None] + t * torch.cos(ang)[:, None]).long()
        valid = (y >= 0) & (y < s) & (x >= 0) & (x < s)
        flat = (y.clamp(0, s - 1) * s + x.clamp(0, s - 1)) + torch.arange(n, device=self.device)[:, None] * s * s
        inside = label.flatten()[flat] & valid
        ahead = F.pad(inside.float(), (0, 7)).unfold(1, 7, 1)[:, : t.numel()].sum(-1)  # inside in [j, j + 3 px]
        stop = (ahead == 0).float()
        stop[:, 0] = 0
        j = torch.where(stop.any(1), stop.argmax(1), t.numel() - 1)
        last = t[j - 1]
        return cy + last * torch.sin(ang), cx + last * torch.cos(ang)

    def _click(self, label: torch.Tensor) -> torch.Tensor:
        """(n, 2) (y, x): mass centre, or the nearest label pixel when it falls outside (``metrics.mask_click``)."""
        area = label.flatten(1).sum(1).clamp_min(1)
        lf = label.float()
        cy, cx = (lf * self.yy).flatten(1).sum(1) / area, (lf * self.xx).flatten(1).sum(1) / area
        iy, ix = cy.round().long().clamp(0, self.size - 1), cx.round().long().clamp(0, self.size - 1)
        hit = label[torch.arange(label.shape[0], device=self.device), iy, ix]
        dy, dx = self._polar(cy, cx)
        k = torch.where(label, dy * dy + dx * dx, torch.inf).flatten(1).argmin(1)
        ny, nx = (k // self.size).float(), (k % self.size).float()
        return torch.stack([torch.where(hit, cy, ny), torch.where(hit, cx, nx)], 1)

    # ---------------------------------------------------------------- one batch
    def slices(self, n: int, spacing_mm: float, seed: int) -> DeviceSlices:
        """``n`` synthetic slices at ``spacing_mm``: ``synth.make_slice`` in a batch.

        Returns images, bool labels, float32 clicks at the target's mass centre, all on the device,
        and ``lung`` (:class:`DeviceSlices`).
        """
        self.g.manual_seed(int(seed))
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 17]))
        s, px, rc = self.size, 1.0 / spacing_mm, self.recipe
        img, lung = self._backgrounds(n, spacing_mm, rng)
        r0 = torch.clamp(self._radius_mm(n, spacing_mm) * px, rc.min_radius_px, rc.fit_frac * s)
        ang, dist = self._u(n, 0, 2 * math.pi), rc.centre_jitter_px * torch.sqrt(self._u(n, 0, 1))
        cy, cx = (s - 1) / 2 + dist * torch.sin(ang), (s - 1) / 2 + dist * torch.cos(ang)
        blur = self._u(n, *rc.blur_px)
        label = self._component_filled(self._shapes(r0, cy, cx), cy, cx, r0)
        lf = label.float()
        area = lf.flatten(1).sum(1)

        # intensities, as synth.make_slice: contrast magnitude and sign kept inside [0.02, 0.98]
        bg_mean = (img * lf).flatten(1).sum(1) / area
        low = self._coin(n, rc.contrast_low_p)
        mag = torch.where(low, self._logu(n, *rc.contrast_low), self._logu(n, *rc.contrast_wide))
        sign = torch.where(self._coin(n, 0.5), 1.0, -1.0)
        fits = lambda sg, mg: (bg_mean + sg * mg >= 0.02) & (bg_mean + sg * mg <= 0.98)  # noqa: E731
        sign = torch.where(fits(sign, mag), sign, -sign)
        roomier = torch.where(bg_mean < 0.5, 1.0, -1.0)
        neither = ~fits(sign, mag)
        mag = torch.where(neither, torch.clamp(torch.where(roomier > 0, 0.98 - bg_mean, bg_mean - 0.02), min=0.03), mag)
        sign = torch.where(neither, roomier, sign)
        nodule = lung & self._coin(n, rc.nodule_p)  # a solid nodule in aerated lung
        sign = torch.where(nodule, 1.0, sign)
        mag = torch.where(nodule, torch.minimum(self._u(n, *rc.nodule_mag), 0.98 - bg_mean), mag)
        delta = sign * mag
        value = bg_mean + delta

        click = self._click(label)
        ccy, ccx = click[:, 0], click[:, 1]
        img = self._leak_organ(img, label, ccy, ccx, value, delta)
        img = self._neighbours(img, label, ccy, ccx, r0, bg_mean, delta, blur, px)

        # lesion layer: value + correlated texture (+ enhancing rim around a necrotic core)
        tex = self._field((self._u(n, 0.7, 3.0) * px)[:, None], (rc.texture_amp * self._u(n, 0, 1) ** 1.5)[:, None])
        layer = _c(value) + tex
        ring = self._coin(n, rc.rim_p) & (r0 >= 4)
        inner = self._blur(lf, r0 / 3) > _c(self._u(n, 0.75, 0.9))
        core = self._blur(inner.float(), torch.ones(n, device=self.device))
        rim_val = bg_mean + torch.where(self._coin(n, 0.7), delta.abs(), -delta.abs())
        core_val = bg_mean - torch.sign(rim_val - bg_mean) * delta.abs() * self._u(n, 0, 1)
        layer = layer + _c(ring.float()) * (_c(rim_val - value) + core * _c(core_val - rim_val))
        if rc.inner_vessel_p > 0:
            layer = layer + self._inner_vessels(cy, cx, r0, delta, px)
        alpha = self._blur(lf, blur).clamp(0, 1)
        img = img + alpha * (layer - img)

        # acquisition: noise and a smooth multiplicative bias field (+-10 %)
        img = img + torch.randn(img.shape, generator=self.g, device=self.device) * _c(self._u(n, 0, rc.noise_sd_max))
        t = torch.linspace(-1, 1, s, device=self.device)
        ty, tx = t[None, :, None], t[None, None, :]
        cf = self._u(n, -1, 1, 5)
        bias = (_c(cf[:, 0]) * ty + _c(cf[:, 1]) * tx + _c(cf[:, 2]) * ty * tx + _c(cf[:, 3]) * ty * ty
                + _c(cf[:, 4]) * tx * tx)  # fmt: skip
        bias = bias * _c(self._u(n, 0, rc.bias_max) / bias.abs().flatten(1).amax(1).clamp_min(1e-6))
        img = (img * (1 + bias)).clamp(0, 1)
        return DeviceSlices(img, label, click, lung)

    def _leak_organ(self, img, label, cy, cx, value, delta) -> torch.Tensor:
        """``recipe.leak_p``: a large region of the target's intensity touching it (half-plane or big disc)."""
        n, s = img.shape[0], float(self.size)
        on = self._coin(n, self.recipe.leak_p)
        ang = self._u(n, 0, 2 * math.pi)
        by, bx = self._boundary(label, cy, cx, ang)
        gap, edge = self._u(n, -1.0, 1.5), self._u(n, 0.5, 2.0)
        ny, nx = torch.sin(ang), torch.cos(ang)
        plane = (self.yy - _c(by)) * _c(ny) + (self.xx - _c(bx)) * _c(nx) - _c(gap)
        rad = self._u(n, 0.25, 0.5) * s
        oy, ox = by + (rad + gap) * ny, bx + (rad + gap) * nx
        disc = _c(rad) - torch.sqrt((self.yy - _c(oy)) ** 2 + (self.xx - _c(ox)) ** 2)
        dist = torch.where(_c(self._coin(n, 0.5)), plane, disc)
        alpha = (dist / _c(edge) + 0.5).clamp(0, 1) * _c(on.float())
        organ = _c(value + self._u(n, -0.15, 0.15) * delta.abs())
        layer = organ + self._field(self._u(n, 1.0, 4.0, 1), self._u(n, 0.0, 0.04, 1))
        return img + alpha * (layer - img)

    def _neighbours(self, img, label, cy, cx, r0, bg_mean, delta, blur, px) -> torch.Tensor:
        """``recipe.neighbour_p``: 1..max_neighbours blobs or vessel-like tubes of the target's intensity,
        some touching it."""
        n, most = img.shape[0], self.recipe.max_neighbours
        count = torch.where(self._coin(n, self.recipe.neighbour_p), self._int(n, 1, most + 1), 0)
        for k in range(most):
            on = k < count
            val = _c(bg_mean + delta * self._u(n, 0.7, 1.3))
            kind = self._u(n, 0, 1)
            # vessel: a thin, slightly curved segment passing near the object
            off = (self._u(n, 0.5, 1.2) * r0 + self._u(n, 0, 6) * px) * torch.where(self._coin(n, 0.5), 1.0, -1.0)
            tube = self._tube(cy, cx, self._u(n, 0, math.pi), off, torch.clamp(self._u(n, 1.5, 6.0) * px, min=1.5),
                              self._u(n, 0, 0.3) * r0, self._u(n, 20, 60) * px, self._u(n, 15, 60) * px,
                              self._u(n, -1, 1) * r0)  # fmt: skip
            # blob: touching (centre just beyond the boundary) or nearby
            rd = torch.clamp(r0 * self._u(n, 0.3, 1.1), min=1.5)
            ang = self._u(n, 0, 2 * math.pi)
            by, bx = self._boundary(label, cy, cx, ang)
            touch = kind < 0.75
            oy0, ox0 = torch.where(touch, by, cy), torch.where(touch, bx, cx)
            d = torch.where(touch, rd * self._u(n, 0.6, 1.0), r0 * self._u(n, 1.5, 3.0) + rd)
            oy, ox = oy0 + d * torch.sin(ang), ox0 + d * torch.cos(ang)
            blob = self._blur(self._fourier(rd, oy, ox, torch.zeros(n, dtype=torch.bool, device=self.device)).float(),
                              self._u(n, 0.3, 1.5) * blur)  # fmt: skip
            alpha = torch.where(_c(kind < 0.35), tube, blob.clamp(0, 1)) * _c(on.float())
            img = img + alpha * (val - img)
        return img

    def _radius_mm(self, n: int, spacing_mm: float) -> torch.Tensor:
        """(n,) nominal target radii in mm by the recipe's size rule (``synth._draw_radius_px``)."""
        rc = self.recipe
        lo_mm, hi_mm = rc.radius_limits_mm(self.size, spacing_mm)
        ranges = [rc.radius_main_mm, rc.radius_wide_mm]
        if rc.radius_fit_to_grid:
            ranges = [(min(max(lo, lo_mm), min(hi, hi_mm)), min(hi, hi_mm)) for lo, hi in ranges]
        return torch.where(self._coin(n, rc.radius_main_p), self._logu(n, *ranges[0]), self._logu(n, *ranges[1]))

    def _inner_vessels(self, cy, cx, r0, delta, px) -> torch.Tensor:
        """(n, H, W) intensity change of vessels inside the targets (``synth._add_inner_vessels``):
        with ``recipe.inner_vessel_p`` and r0 >= inner_vessel_min_radius_px, 1..max_inner_vessels
        tubes through the interior, added to the target's layer (so they show only inside it)."""
        n, rc = r0.shape[0], self.recipe
        on = self._coin(n, rc.inner_vessel_p) & (r0 >= rc.inner_vessel_min_radius_px)
        count = torch.where(on, self._int(n, 1, rc.max_inner_vessels + 1), 0)
        out = torch.zeros((n, self.size, self.size), device=self.device)
        for k in range(rc.max_inner_vessels):
            width = torch.clamp(self._u(n, *rc.inner_vessel_width_mm) * px, min=1.0)
            tube = self._tube(cy, cx, self._u(n, 0, math.pi), self._u(n, -0.6, 0.6) * r0, width,
                              self._u(n, 0, 0.3) * r0, self._u(n, 0.5, 1.5) * r0 + 1, self._u(n, 0.5, 1.5) * r0,
                              self._u(n, -0.5, 0.5) * r0)  # fmt: skip
            sign = torch.where(self._coin(n, 0.5), 1.0, -1.0)
            out = out + tube * _c((k < count).float() * sign * self._u(n, *rc.inner_vessel_contrast) * delta.abs())
        return out

    def _move_clicks(self, label: torch.Tensor, click: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """10 candidate moves per slice by the recipe's click rule (``synth.move_click``): (y, x) each (n, 10)."""
        n, rc = label.shape[0], self.recipe
        ang, u = self._u(n, 0, 2 * math.pi, 10), self._u(n, 0, 1, 10)
        if rc.click_rule == "inner":
            # up to click_frac of the way to the boundary along each direction, area-uniform
            reach = torch.stack(
                [self._reach(label, click[:, 0], click[:, 1], ang[:, j]) for j in range(ang.shape[1])], 1
            )
            d = rc.click_frac * torch.sqrt(u) * reach
        elif rc.click_rule == "jitter":
            d = u * (rc.click_frac * torch.sqrt(label.flatten(1).sum(1) / math.pi))[:, None]
        else:
            raise ValueError(f"unknown click rule {rc.click_rule!r}")
        return click[:, :1] + d * torch.sin(ang), click[:, 1:] + d * torch.cos(ang)

    def _reach(self, label: torch.Tensor, cy, cx, ang) -> torch.Tensor:
        """(n,) distance in px from (cy, cx) to the boundary point along ``ang`` (:meth:`_boundary`)."""
        by, bx = self._boundary(label, cy, cx, ang)
        return torch.sqrt((by - cy) ** 2 + (bx - cx) ** 2)

    def batch(self, n: int, spacing_mm: float, seed: int) -> DeviceSlices:
        """A training batch: :meth:`slices` with ``make_batch``'s augmentation.

        With ``recipe.click_move_p`` a click moves by the recipe's rule (staying inside the label),
        half the slices flip left-right, then gamma and contrast/brightness jitter. Returns images and
        float32 labels on the device, float64 clicks on the CPU (:class:`DeviceSlices`, no ``lung``).
        """
        out = self.slices(n, spacing_mm, seed)
        img, label, click = out.images, out.labels, out.clicks
        s = self.size
        # 10 candidate moves per slice, the first that lands inside the label
        y, x = self._move_clicks(label, click)
        iy, ix = y.round().long(), x.round().long()
        ok = (iy >= 0) & (iy < s) & (ix >= 0) & (ix < s)
        ok &= label.flatten(1).gather(1, iy.clamp(0, s - 1) * s + ix.clamp(0, s - 1))
        first = ok.float().argmax(1)
        rows = torch.arange(n, device=self.device)
        move = ok.any(1) & self._coin(n, self.recipe.click_move_p)
        click = torch.where(move[:, None], torch.stack([y[rows, first], x[rows, first]], 1), click)
        flip = self._coin(n, 0.5)
        img = torch.where(_c(flip), img.flip(-1), img)
        label = torch.where(_c(flip), label.flip(-1), label)
        click[:, 1] = torch.where(flip, s - 1 - click[:, 1], click[:, 1])
        gamma = torch.where(self._coin(n, 0.5), torch.exp(self._u(n, -0.35, 0.35)), 1.0)
        img = img.clamp(0, 1) ** _c(gamma)
        contrast = self._coin(n, 0.5)
        scale = torch.where(contrast, self._u(n, 0.8, 1.25), 1.0)
        shift = torch.where(contrast, self._u(n, -0.08, 0.08), 0.0)
        img = ((img - 0.5) * _c(scale) + 0.5 + _c(shift)).clamp(0, 1)
        return DeviceSlices(img.float(), label.float(), click.double().cpu())
