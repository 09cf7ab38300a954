"""Seeded generator of synthetic training slices with ground truth.

Each sample is one 2-D slice *as displayed* (already windowed to [0, 1]) on an isotropic grid of
``spacing_mm`` per pixel, containing one labelled target lesion near the image centre and a click
(the target's mass centre). The generator deliberately produces the hard cases the sequential patch
network is meant for: low contrast (a few percent of the window), blurry (partial-volume) boundaries,
irregular / multi-lobed / spiculated shapes, rim-enhancing lesions with a dark necrotic core, and
neighbours of similar intensity that touch the target (blobs, vessel-like tubes, a large "organ" of
equal intensity: the leak case). Only the target is labelled.

Backgrounds are either real anatomy (:class:`BackgroundBank`, raw HU / MR units windowed at sample
time with a random window) or procedural phantoms (smooth multi-scale fields plus organ-like blobs).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi

from seqpatch_core.errors import InputError
from seqpatch_core.intensity import CT_PRESETS, Window, apply_window, looks_like_ct
from seqpatch_core.metrics import mask_click

logger = logging.getLogger(__name__)

__all__ = [
    "CT_PRESETS",
    "BackgroundBank",
    "SynthSlice",
    "benchmark_set",
    "jitter_click",
    "make_slice",
    "training_rng",
]

# Soft-tissue and lung windows are where lesions are segmented most often.
_CT_PRESET_PROBS: dict[str, float] = {"soft": 0.4, "lung": 0.3, "bone": 0.15, "brain": 0.15}

_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_TRAIN_MAX_REL_Z = 0.8  # relative z below this -> "train", else "val"
_MIN_CONTENT_FRAC = 0.3  # a kept slice needs at least this fraction of non-air pixels
_BANK_PROB_PHANTOM = 0.4  # probability of a procedural background even when a bank is given
_LUNG_PROB = 0.5  # share of procedural backgrounds that are lung-like
_CENTRE_JITTER_PX = 15.0

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
def _window01(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """clip((a - lo) / (hi - lo), 0, 1) as float32 (:func:`~seqpatch_core.intensity.apply_window`)."""
    return apply_window(a, Window(float(lo), max(float(hi), float(lo) + 1e-6), "bank"))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _fft_field(
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


def _bbox_slices(
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


# --------------------------------------------------------------------------------------------------
# Shapes. Each builder draws its parameters, then returns (mask_fn, extent_px): mask_fn(dy, dx) gives a
# bool mask on offset grids around the nominal centre, extent_px bounds the shape's radius.
# --------------------------------------------------------------------------------------------------
MaskFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


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
        noise = _fft_field(rng, (dy.shape[0], dx.shape[1]), [corr], [1.0])
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


def _draw_shape(rng: np.random.Generator, r0: float) -> tuple[str, MaskFn, float]:
    kind = rng.choice(["noise", "fourier", "lobes", "spiculated"], p=[0.3, 0.35, 0.25, 0.1])
    if kind == "noise":
        fn, ext = _shape_noise(rng, r0)
    elif kind == "lobes":
        fn, ext = _shape_lobes(rng, r0)
    else:
        fn, ext = _shape_fourier(rng, r0, spikes=kind == "spiculated")
    return str(kind), fn, ext


def _largest_filled(mask: np.ndarray) -> np.ndarray:
    """Largest 8-connected component of ``mask`` with its holes filled (bool, same shape)."""
    lab, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == int(np.argmax(sizes))
    return ndi.binary_fill_holes(mask)


# --------------------------------------------------------------------------------------------------
# Backgrounds
# --------------------------------------------------------------------------------------------------
def _soft_ellipse(
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


def _phantom_background(rng: np.random.Generator, size: int, spacing_mm: float) -> tuple[np.ndarray, str]:
    """Procedural anatomy-like background: float32 (size, size) in [0, 1]."""
    shape = (size, size)
    mm = 1.0 / spacing_mm
    sig = [rng.uniform(2, 4) * mm, rng.uniform(8, 15) * mm, rng.uniform(25, 50) * mm]
    amp = [rng.uniform(0.0, 0.04), rng.uniform(0.02, 0.08), rng.uniform(0.03, 0.12)]
    texture = _fft_field(rng, shape, sig, amp)
    img = _F32(rng.uniform(0.2, 0.7)) + texture
    n_org = int(rng.integers(2, 7))
    for _ in range(n_org):
        a = min(rng.uniform(15, 70) * mm, 0.5 * size)
        b = min(rng.uniform(15, 70) * mm, 0.5 * size)
        alpha = _soft_ellipse(
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
        alpha = _soft_ellipse(
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


def _lung_background(rng: np.random.Generator, size: int, spacing_mm: float) -> tuple[np.ndarray, str]:
    """Lung-like background (float32 (size, size) in [0, 1]): dark parenchyma with fine texture,
    bright branching-vessel segments, and often a chest wall / mediastinum of soft-tissue brightness.

    Lung nodules and tumours are the commonest CT lesions; the head anatomy in the background bank has
    no lung, so this phantom supplies the dark-surround, vessel-touching, wall-abutting case.
    """
    shape = (size, size)
    mm = 1.0 / spacing_mm
    base = rng.uniform(0.03, 0.4)
    img = _F32(base) + _fft_field(
        rng,
        shape,
        [rng.uniform(1, 3) * mm, rng.uniform(10, 30) * mm],
        [rng.uniform(0.01, 0.05), rng.uniform(0.02, 0.06)],
    )
    n_vessels = int(rng.integers(6, 22))
    for _ in range(n_vessels):
        val = _F32(min(0.98, base + rng.uniform(0.15, 0.6)))
        width = max(1.0, rng.uniform(1.0, 5.0) * mm)
        alpha = _tube_alpha(
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
        level = _F32(rng.uniform(0.55, 0.95)) + _fft_field(rng, shape, [rng.uniform(2, 6) * mm], [0.03])
        img += alpha * (level - img)
    np.clip(img, 0.0, 1.0, out=img)
    return img, f"lung(vessels={n_vessels}{',wall' if wall else ''})"


def _content_threshold(a: np.ndarray, modality: str) -> float:
    """Raw-intensity threshold separating air / background from tissue for one volume or slice."""
    if modality == "CT":
        return -500.0
    # Percentiles, not min/max: templates can have a few negative voxels inside tissue while the
    # background is exactly 0.
    lo, hi = (float(v) for v in np.percentile(a, [1, 99]))
    return lo + 0.1 * (hi - lo)


def _storage_dtype(modality: str, a: np.ndarray) -> np.dtype:
    if modality == "CT":
        return np.dtype(np.int16)
    return np.dtype(np.float16) if float(np.max(np.abs(a))) < 60000 else np.dtype(np.float32)


def _to_storage(a: np.ndarray, modality: str) -> np.ndarray:
    dt = _storage_dtype(modality, a)
    if a.dtype == dt:
        return a
    if dt == np.int16:
        return np.clip(np.rint(a), -32768, 32767).astype(np.int16)
    return a.astype(dt)


def _read_volume_any(path: Path):  # -> seqpatch_core.io.Volume
    # Lazy import: SimpleITK (behind io) is absent on the training machine, which only loads npz caches.
    from seqpatch_core.io import read_volume

    return read_volume(path)


def _split_indices(rel_z: Sequence[float], split: str) -> np.ndarray:
    """Indices (int64) of the slices in ``split``: "train" rel_z < 0.8, "val" the rest, or "all"."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', not {split!r}")
    keep = [i for i, r in enumerate(rel_z) if split == "all" or (r < _TRAIN_MAX_REL_Z) == (split == "train")]
    return np.array(keep, dtype=np.int64)


class BackgroundBank:
    """Real anatomy slices (raw intensities) for synthetic backgrounds.

    Each slice is a 2-D (y, x) array of raw intensities (HU, stored int16, for CT; arbitrary units,
    stored float16 or float32, for MR) with its in-plane spacing (sy, sx) in mm, its modality
    ("CT" or "MR"), its relative z-position in its volume (0..1, over the span of kept tissue slices;
    see :meth:`from_dir`) and its source name.

    The bank keeps all slices; ``split`` selects which ones :meth:`sample` draws from: ``"train"``
    (relative z < 0.8), ``"val"`` (the rest) or ``"all"``. :meth:`save` always writes all slices.
    """

    def __init__(
        self,
        slices: Sequence[np.ndarray],
        spacings: Sequence[tuple[float, float]],
        modalities: Sequence[str],
        rel_z: Sequence[float],
        names: Sequence[str] | None = None,
        split: str = "all",
    ) -> None:
        n = len(slices)
        if not (len(spacings) == len(modalities) == len(rel_z) == n):
            raise ValueError("slices, spacings, modalities and rel_z must have the same length")
        for m in modalities:
            if m not in ("CT", "MR"):
                raise ValueError(f"modality must be 'CT' or 'MR', not {m!r}")
        self.modalities = [str(m) for m in modalities]
        self.slices = [_to_storage(np.asarray(s), m) for s, m in zip(slices, self.modalities, strict=True)]
        self.spacings = [(float(s[0]), float(s[1])) for s in spacings]
        self.rel_z = [float(r) for r in rel_z]
        self.names = [str(x) for x in names] if names is not None else ["slice"] * n
        self.split = split
        # Per-slice air threshold, used to centre crops on tissue.
        self._thresh = [_content_threshold(s, m) for s, m in zip(self.slices, self.modalities, strict=True)]
        self._active = _split_indices(self.rel_z, split)

    def __len__(self) -> int:
        """Number of slices in the active split."""
        return int(self._active.size)

    def with_split(self, split: str) -> BackgroundBank:
        """The same slices (shared, not copied) with another active ``split``."""
        new = object.__new__(BackgroundBank)
        new.__dict__.update(self.__dict__)
        new.split = split
        new._active = _split_indices(self.rel_z, split)
        return new

    # ---- construction / persistence --------------------------------------------------------------
    @classmethod
    def from_dir(
        cls, path: str | Path, split: str = "all", every: int = 2, min_content: float = _MIN_CONTENT_FRAC
    ) -> BackgroundBank:
        """Read every volume file in folder ``path`` and keep every ``every``-th axial slice (array z)
        whose fraction of non-air pixels is at least ``min_content``.

        Uses :func:`seqpatch_core.io.read_volume` (needs SimpleITK). Modality comes from the Volume;
        when it is "unknown", a volume whose minimum is <= -500 is taken as CT (HU), else MR.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise InputError(f"background folder not found: {folder}")
        files = sorted(p for p in folder.iterdir() if p.name.lower().endswith(_VOLUME_SUFFIXES))
        slices: list[np.ndarray] = []
        spacings: list[tuple[float, float]] = []
        mods: list[str] = []
        rel: list[float] = []
        names: list[str] = []
        for f in files:
            vol = _read_volume_any(f)
            arr = np.asarray(vol.array)
            if arr.ndim != 3:
                logger.warning("skipping %s: not a 3-D volume (shape %s)", f.name, arr.shape)
                continue
            mod = vol.modality
            if mod not in ("CT", "MR"):
                mod = "CT" if looks_like_ct(arr.min()) else "MR"
            thr = _content_threshold(arr, mod)
            nz = arr.shape[0]
            keep = [z for z in range(0, nz, every) if float(np.mean(arr[z] > thr)) >= min_content]
            # Relative z is measured over the span of kept (tissue) slices, not the whole array: in
            # head volumes the last 20 % of the array is mostly air, which would leave "val" empty.
            z0, z1 = (keep[0], keep[-1]) if keep else (0, 1)
            for z in keep:
                slices.append(_to_storage(arr[z], mod))
                spacings.append((float(vol.spacing[1]), float(vol.spacing[2])))
                mods.append(mod)
                rel.append((z - z0) / max(z1 - z0, 1))
                names.append(f"{f.name.split('.')[0]}:z{z}")
            kept = len(keep)
            logger.info("background %s (%s, %s): kept %d of %d slices", f.name, mod, arr.shape, kept, nz)
        if not slices:
            raise InputError(f"no usable background slices in {folder}")
        return cls(slices, spacings, mods, rel, names, split=split)

    def save(self, path: str | Path) -> None:
        """Write all slices to a compressed ``.npz`` (no pickles; loadable without SimpleITK)."""
        arrays = {f"slice_{i:05d}": s for i, s in enumerate(self.slices)}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            spacing=np.asarray(self.spacings, dtype=np.float64).reshape(-1, 2),
            modality=np.asarray(self.modalities, dtype="U2"),
            rel_z=np.asarray(self.rel_z, dtype=np.float64),
            names=np.asarray(self.names, dtype=str),
            **arrays,
        )

    @classmethod
    def load(cls, path: str | Path, split: str = "all") -> BackgroundBank:
        """Read a bank written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            n = int(z["rel_z"].shape[0])
            slices = [z[f"slice_{i:05d}"] for i in range(n)]
            return cls(
                slices,
                [tuple(s) for s in z["spacing"].tolist()],
                [str(m) for m in z["modality"]],
                z["rel_z"].tolist(),
                [str(x) for x in z["names"]],
                split=split,
            )

    # ---- sampling --------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, size: int, spacing_mm: float) -> tuple[np.ndarray, str]:
        """A random windowed crop: (float32 (size, size) in [0, 1], modality "CT"/"MR")."""
        img, mod, _ = self._sample(rng, size, spacing_mm)
        return img, mod

    def _sample(self, rng: np.random.Generator, size: int, spacing_mm: float) -> tuple[np.ndarray, str, str]:
        if len(self) == 0:
            raise InputError(f"background bank has no slices in split {self.split!r}")
        i = int(self._active[rng.integers(len(self))])
        sl, (sy, sx), mod = self.slices[i], self.spacings[i], self.modalities[i]
        h, w = sl.shape
        # Crop centre well inside tissue (the point and 4 probes 15 mm away): the target is placed near
        # the image centre and should not float in air. Keep the best of 30 tries.
        ry, rx = 15.0 / sy, 15.0 / sx
        best, cy, cx = -1, h / 2, w / 2
        for _ in range(30):
            py, px_ = rng.uniform(0, h), rng.uniform(0, w)
            probes = [(py, px_), (py - ry, px_), (py + ry, px_), (py, px_ - rx), (py, px_ + rx)]
            thr = self._thresh[i]
            score = sum(1 for qy, qx in probes if 0 <= qy < h and 0 <= qx < w and sl[int(qy), int(qx)] > thr)
            if score > best:
                best, cy, cx = score, py, px_
            if score == len(probes):
                break
        ch, cw = size * spacing_mm / sy, size * spacing_mm / sx  # crop size in source pixels
        y0, x0 = int(round(cy - ch / 2)), int(round(cx - cw / 2))
        sy0, sx0 = max(y0, 0), max(x0, 0)
        sy1, sx1 = min(int(round(y0 + ch)), h), min(int(round(x0 + cw)), w)
        sub = sl[sy0:sy1, sx0:sx1].astype(_F32)
        zoomed = ndi.zoom(sub, (sy / spacing_mm, sx / spacing_mm), order=1, output=_F32, grid_mode=False)
        if mod == "CT":
            name = str(rng.choice(list(_CT_PRESET_PROBS), p=list(_CT_PRESET_PROBS.values())))
            width, level = CT_PRESETS[name]
            width *= 1.0 + rng.uniform(-0.15, 0.15)
            level += rng.uniform(-0.1, 0.1) * width
            win = _window01(zoomed, level - width / 2, level + width / 2)
            wdesc = name
        else:
            plo, phi = rng.uniform(0.0, 2.0), rng.uniform(98.0, 100.0)
            lo, hi = np.percentile(zoomed, [plo, phi]) if zoomed.size else (0.0, 1.0)
            win = _window01(zoomed, float(lo), float(hi))
            wdesc = f"p{plo:.1f}-{phi:.1f}"
        # Paste into a zero canvas: crops running off the slice are padded with 0 (displayed black).
        out = np.zeros((size, size), dtype=_F32)
        oy, ox = int(round((sy0 - y0) * sy / spacing_mm)), int(round((sx0 - x0) * sx / spacing_mm))
        ph, pw = min(win.shape[0], size - oy), min(win.shape[1], size - ox)
        if ph > 0 and pw > 0:
            out[oy : oy + ph, ox : ox + pw] = win[:ph, :pw]
        if rng.random() < 0.5:
            out = out[:, ::-1]
        out = np.ascontiguousarray(np.rot90(out, int(rng.integers(4))))
        return out, mod, f"bank({self.names[i]},{mod},{wdesc})"


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


def _draw_radius_mm(rng: np.random.Generator) -> float:
    # Lesions 3-60 mm across; most between 10 and 50 mm (radius 5-25 mm).
    if rng.random() < 0.75:
        return _log_uniform(rng, 5.0, 25.0)
    return _log_uniform(rng, 1.5, 30.0)


def make_slice(
    rng: np.random.Generator,
    size: int = 192,
    spacing_mm: float = 1.0,
    backgrounds: BackgroundBank | None = None,
) -> SynthSlice:
    """One synthetic slice with a labelled target lesion near the centre.

    Args:
        rng: the only source of randomness (same generator state -> identical sample).
        size: H = W of the output in pixels.
        spacing_mm: isotropic pixel size of the output grid in mm; lesion sizes are drawn in mm.
        backgrounds: real anatomy to draw from (70 % of samples); ``None`` -> procedural phantoms only.

    Returns:
        A :class:`SynthSlice` (image float32 (size, size) in [0, 1], label uint8 0/1, click (y, x)).
    """
    shape = (size, size)
    px = 1.0 / spacing_mm  # pixels per mm

    # ---- background ----
    if backgrounds is not None and len(backgrounds) > 0 and rng.random() >= _BANK_PROB_PHANTOM:
        img, _, bg_kind = backgrounds._sample(rng, size, spacing_mm)
    elif rng.random() < _LUNG_PROB:
        img, bg_kind = _lung_background(rng, size, spacing_mm)
    else:
        img, bg_kind = _phantom_background(rng, size, spacing_mm)

    # ---- target shape ----
    r0 = float(np.clip(_draw_radius_mm(rng) * px, 1.5, 0.22 * size))
    shape_kind, mask_fn, extent = _draw_shape(rng, r0)
    ang, dist = rng.uniform(0, 2 * np.pi), _CENTRE_JITTER_PX * math.sqrt(rng.uniform())
    cy, cx = (size - 1) / 2 + dist * math.sin(ang), (size - 1) / 2 + dist * math.cos(ang)
    blur = rng.uniform(0.3, 3.0)
    sl, dy, dx = _bbox_slices(cy, cx, extent + 3 * blur + 3, shape)
    m = _largest_filled(mask_fn(dy, dx))
    if not m.any():  # degenerate draw (tiny shape missing every pixel centre): fall back to a disc
        m = dy * dy + dx * dx <= max(r0, 1.5) ** 2
    label = np.zeros(shape, dtype=np.uint8)
    label[sl] = m

    # ---- intensities ----
    bg_mean = float(img[sl][m].mean())
    mag = _log_uniform(rng, 0.03, 0.12) if rng.random() < 0.5 else _log_uniform(rng, 0.03, 0.6)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if not 0.02 <= bg_mean + sign * mag <= 0.98:
        sign = -sign
        if not 0.02 <= bg_mean + sign * mag <= 0.98:  # too strong either way: use the roomier side
            sign = 1.0 if bg_mean < 0.5 else -1.0
            mag = max(0.03, (0.98 - bg_mean) if sign > 0 else (bg_mean - 0.02))
    if bg_kind.startswith("lung") and rng.random() < 0.8:
        # a solid nodule in aerated lung: soft tissue, much brighter than the parenchyma
        sign, mag = 1.0, min(rng.uniform(0.25, 0.75), 0.98 - bg_mean)
    delta = sign * mag
    value = bg_mean + delta
    parts = [bg_kind, f"{shape_kind} r={r0 / px:.1f}mm", f"d={delta:+.3f}", f"blur={blur:.1f}"]

    # Neighbours are drawn before the target so that the target lies on top of them. They are placed
    # by walking out from the click, which (unlike the nominal centre) is always inside the label.
    click = _click_of(label, sl)
    if rng.random() < 0.2:
        parts.append(_add_leak_organ(rng, img, label, click[0], click[1], value, delta))
    if rng.random() < 0.6:
        parts.append(_add_distractors(rng, img, label, click[0], click[1], r0, bg_mean, delta, blur, px))

    # Lesion layer: value + correlated texture (+ optional enhancing rim / necrotic core).
    hh, ww = m.shape
    tex_amp = 0.1 * rng.uniform() ** 1.5
    layer = _F32(value) + _fft_field(rng, (hh, ww), [rng.uniform(0.7, 3.0) * px], [tex_amp])
    if rng.random() < 0.2 and r0 >= 4:
        depth = ndi.distance_transform_edt(m)
        core = _soft_alpha(depth > rng.uniform(0.3, 0.6) * depth.max(), 1.0)
        rim_val = bg_mean + (abs(delta) if rng.random() < 0.7 else -abs(delta))
        core_val = bg_mean - np.sign(rim_val - bg_mean) * abs(delta) * rng.uniform(0.0, 1.0)
        layer += _F32(rim_val - value) + core * _F32(core_val - rim_val)
        parts.append("ring")
    _composite(img, sl, _soft_alpha(m, blur), layer)

    # ---- acquisition-like degradations ----
    noise_sd = rng.uniform(0.0, 0.05)
    img += rng.standard_normal(shape, dtype=_F32) * _F32(noise_sd)
    # Smooth multiplicative bias field (+-10 %): random low-order polynomial, cheap and smooth.
    t = np.linspace(-1.0, 1.0, size, dtype=_F32)
    c = rng.uniform(-1, 1, size=5).astype(_F32)
    ty, tx = t[:, None], t[None, :]
    bias = c[0] * ty + c[1] * tx + c[2] * ty * tx + c[3] * ty * ty + c[4] * tx * tx
    bias *= _F32(rng.uniform(0.0, 0.1) / max(float(np.abs(bias).max()), 1e-6))
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
    (:func:`~seqpatch_core.metrics.mask_click`, in the full label's pixels)."""
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
    layer = _F32(organ_val) + _fft_field(rng, img.shape, [rng.uniform(1.0, 4.0)], [rng.uniform(0.0, 0.04)])
    img += alpha * (layer - img)
    return kind


def _tube_alpha(
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
) -> str:
    """1-4 blobs / vessel-like tubes of intensity similar to the target, some touching it."""
    size = img.shape[0]
    n = int(rng.integers(1, 5))
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
            alpha = _tube_alpha(size, cy, cx, psi, off, width, bend_a, bend_l, half_len, a0)
            img += alpha * (val - img)
            kinds.append("vessel")
            continue
        rd = r0 * rng.uniform(0.3, 1.1)
        _, fn, ext = _draw_shape(rng, max(rd, 1.5))
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
        bsl, dy, dx = _bbox_slices(oy, ox, ext + 3 * sb + 3, img.shape)
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


def benchmark_set(
    n: int, seed: int, backgrounds: BackgroundBank | None, spacing_mm: float = 1.0, size: int = 192
) -> list[SynthSlice]:
    """``n`` held-out synthetic slices from seed stream ``SeedSequence([seed, 7])`` (never used by
    training) and the bank's ``"val"`` split (anatomy training never saw)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    bank = backgrounds.with_split("val") if backgrounds is not None else None
    if bank is not None and len(bank) == 0:
        logger.warning("background bank has no 'val' slices: benchmark uses procedural phantoms only")
    return [make_slice(rng, size=size, spacing_mm=spacing_mm, backgrounds=bank) for _ in range(n)]
