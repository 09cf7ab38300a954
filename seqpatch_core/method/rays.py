"""Rays, sequential patches and fusion: the geometry of the method, as pure functions.

Frames and conventions
----------------------
* A *slice* is a 2D array (y, x) taken from a volume's (z, y, x) array.
* The *working grid* is the slice resampled in-plane to an isotropic working spacing
  (default 1.0 mm for CT, 0.625 mm for MR). Pixel centres sit at ``index * spacing`` mm from the
  first pixel centre in both grids, so a point moves between them by a scale factor alone
  (:class:`SliceGrid`).
* Points are (y, x) in pixels, floats allowed. Ray angle ``theta_i = 2*pi*i/n_rays`` (evenly spaced);
  the ray's unit vector is ``(dy, dx) = (sin theta, cos theta)``, so angle 0 points to +x and
  angles grow clockwise on screen (y points down).
* Patch centre ``k`` of ray ``i`` lies at ``click + stride * k * (dy, dx)``, ``k = 0..K-1``:
  every ray starts at the click, ordered inside -> outside.

Patches are rotated with their ray (``align="ray"``, the default): a patch's columns run along
the ray, from the click side (left) to the far side (right). Every ray then presents its boundary
crossing in the same orientation, so the network learns one crossing pattern instead of sixteen,
and rays at any angle are statistically alike. ``align="axis"`` gives the paper's axis-aligned
patches. Sampling is bilinear (``torch.nn.functional.grid_sample``); outside the image the value is
``pad_value`` (the windowed minimum, 0 for a [0, 1] display), so any click, even the corner pixel,
works.

Fusion pastes every patch likelihood back where its pixels were sampled (bilinear splatting) and
averages overlapping likelihoods with a weight that favours patch centres: a Gaussian of sigma
``P / 4`` (weight 1 at the centre, about 0.14 at the middle of an edge), since a patch's
centre has the most context on every side.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from seqpatch_core.base.errors import InputError

Align = Literal["ray", "axis"]

#: Default working spacing (mm) by modality. MR follows the paper's PROMISE12 resampling.
WORKING_SPACING_MM = {"CT": 1.0, "MR": 0.625, "unknown": 1.0}


@dataclass(frozen=True)
class RayConfig:
    """How patches are laid out around a click (all lengths in working pixels)."""

    n_rays: int = 16
    k: int = 15
    stride: float = 4.0
    patch: int = 32
    align: Align = "ray"

    def __post_init__(self) -> None:
        if self.n_rays < 1 or self.k < 1 or self.patch < 2 or self.stride <= 0:
            raise InputError(f"invalid ray configuration: {self}")
        if self.align not in ("ray", "axis"):
            raise InputError(f"align must be 'ray' or 'axis', not {self.align!r}")

    @property
    def reach(self) -> float:
        """Largest distance (working px) from the click that any patch pixel can reach."""
        return self.stride * (self.k - 1) + self.patch / 2 * math.sqrt(2)

    @property
    def fov(self) -> int:
        """Side (working px) of the square field of view that holds every patch: a multiple of 16."""
        return int(2 * math.ceil(self.reach / 8) * 8)


#: The paper's settings: CT kidney tumour, MR prostate, PROMISE12.
PRESETS: dict[str, RayConfig] = {
    "ct": RayConfig(k=15, stride=4.0),
    "mr": RayConfig(k=8, stride=4.0),
    "promise12": RayConfig(k=12, stride=6.0),
}


def get_preset(name: str, **overrides) -> RayConfig:
    """A preset by name (``ct``, ``mr``, ``promise12``), with optional field overrides."""
    if name not in PRESETS:
        raise InputError(f"unknown ray preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]


# ----------------------------------------------------------------------------- grids


@dataclass(frozen=True)
class SliceGrid:
    """Maps points between a slice grid and its isotropic working grid.

    ``shape`` and ``spacing`` are the slice's (y, x) size in pixels and pixel size in mm.
    """

    shape: tuple[int, int]
    spacing: tuple[float, float]
    working_spacing: float

    @property
    def scale(self) -> np.ndarray:
        """Working pixels per slice pixel along (y, x)."""
        return np.asarray(self.spacing, dtype=np.float64) / self.working_spacing

    @property
    def working_shape(self) -> tuple[int, int]:
        h, w = self.shape
        sy, sx = self.scale
        # ceil: the working grid must reach the slice's last pixel centre (nothing is cut off)
        return (int(math.ceil((h - 1) * sy - 1e-6)) + 1, int(math.ceil((w - 1) * sx - 1e-6)) + 1)

    def to_working(self, points_yx: np.ndarray) -> np.ndarray:
        """(..., 2) slice-pixel points (y, x) -> working-pixel points."""
        return np.asarray(points_yx, dtype=np.float64) * self.scale

    def to_slice(self, points_yx: np.ndarray) -> np.ndarray:
        """(..., 2) working-pixel points (y, x) -> slice-pixel points."""
        return np.asarray(points_yx, dtype=np.float64) / self.scale


def resample_to_working(image: np.ndarray, grid: SliceGrid) -> np.ndarray:
    """Resample a slice (y, x) onto the working grid; returns float32 of ``grid.working_shape``.

    Bilinear, with Gaussian anti-aliasing when shrinking (sigma = (factor - 1) / 2 slice pixels,
    the usual choice, e.g. scikit-image's ``rescale``).
    """
    image = np.asarray(image, dtype=np.float32)
    shrink = 1.0 / grid.scale
    sigma = np.maximum(0.0, (shrink - 1.0) / 2.0)
    if np.any(sigma > 0):
        image = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")
    hw, ww = grid.working_shape
    yy = np.arange(hw, dtype=np.float64) / grid.scale[0]
    xx = np.arange(ww, dtype=np.float64) / grid.scale[1]
    coords = np.meshgrid(yy, xx, indexing="ij")
    return ndimage.map_coordinates(image, coords, order=1, mode="nearest").astype(np.float32)


def resample_to_slice(working: np.ndarray, grid: SliceGrid, order: int = 1) -> np.ndarray:
    """Map a working-grid map (e.g. the fused likelihood) back onto the slice grid (float32)."""
    h, w = grid.shape
    yy = np.arange(h, dtype=np.float64) * grid.scale[0]
    xx = np.arange(w, dtype=np.float64) * grid.scale[1]
    coords = np.meshgrid(yy, xx, indexing="ij")
    return ndimage.map_coordinates(
        np.asarray(working, dtype=np.float32), coords, order=order, mode="constant", cval=0.0
    ).astype(np.float32)


# ----------------------------------------------------------------------------- rays


def ray_angles(n_rays: int) -> np.ndarray:
    """(n_rays,) float64 angles in radians, evenly spaced: ``2*pi*i/n_rays``."""
    return 2.0 * np.pi * np.arange(n_rays, dtype=np.float64) / n_rays


def patch_centres(click_yx, cfg: RayConfig) -> np.ndarray:
    """Patch centres (..., n_rays, K, 2) in (y, x) working pixels for click(s) of shape (..., 2)."""
    click = np.asarray(click_yx, dtype=np.float64)
    theta = ray_angles(cfg.n_rays)
    direction = np.stack([np.sin(theta), np.cos(theta)], axis=-1)  # (n, 2) as (dy, dx)
    dist = cfg.stride * np.arange(cfg.k, dtype=np.float64)  # (K,)
    offsets = dist[None, :, None] * direction[:, None, :]  # (n, K, 2)
    return click[..., None, None, :] + offsets


@functools.lru_cache(maxsize=16)
def patch_offsets(cfg: RayConfig) -> np.ndarray:
    """Sampling positions (n_rays, K, P, P, 2) relative to the click, in (y, x) working pixels.

    Computed once per configuration (read-only array: every click adds its own position to it).

    Patch pixel (row i, column j) sits at ``centre + (j - c) * u + (i - c) * v`` with
    ``c = (P - 1) / 2``; ``u`` is the ray direction and ``v`` its normal for ``align="ray"``,
    or the x and y axes for ``align="axis"``.
    """
    centres = patch_centres(np.zeros(2), cfg)  # (n, K, 2)
    p = cfg.patch
    off = np.arange(p, dtype=np.float64) - (p - 1) / 2.0
    theta = ray_angles(cfg.n_rays)
    if cfg.align == "ray":
        u = np.stack([np.sin(theta), np.cos(theta)], axis=-1)  # (n, 2) (y, x)
        v = np.stack([np.cos(theta), -np.sin(theta)], axis=-1)
    else:
        u = np.tile([[0.0, 1.0]], (cfg.n_rays, 1))
        v = np.tile([[1.0, 0.0]], (cfg.n_rays, 1))
    # (n, P, P, 2): row offset along v, column offset along u
    local = off[None, :, None, None] * v[:, None, None, :] + off[None, None, :, None] * u[:, None, None, :]
    offsets = centres[:, :, None, None, :] + local[:, None, :, :, :]
    offsets.setflags(write=False)
    return offsets


def patch_grid(click_yx, cfg: RayConfig) -> np.ndarray:
    """Sampling positions (..., n_rays, K, P, P, 2) in (y, x) working pixels for click(s) (..., 2)."""
    click = np.asarray(click_yx, dtype=np.float64)
    return click[..., None, None, None, None, :] + patch_offsets(cfg)


def sample_patches(image: torch.Tensor, grid_yx: torch.Tensor, pad_value: float = 0.0) -> torch.Tensor:
    """Bilinear samples of ``image`` at ``grid_yx``.

    image: (B, H, W) or (H, W) float tensor (a windowed working slice, one per batch item).
    grid_yx: (B, ...,  2) or (..., 2) positions in (y, x) pixels of that image.
    Returns (B, ...) or (...) float tensor; positions outside the image read ``pad_value``.
    """
    single = image.dim() == 2
    if single:
        image, grid_yx = image[None], grid_yx[None]
    b, h, w = image.shape
    lead = grid_yx.shape[1:-1]
    g = grid_yx.reshape(b, -1, 1, 2).to(image.dtype)
    # grid_sample wants (x, y) normalised to [-1, 1] with align_corners=True: -1 and 1 are the
    # centres of the first and last pixels, the same pixel-centre convention as SliceGrid.
    gx = g[..., 1] * (2.0 / max(w - 1, 1)) - 1.0
    gy = g[..., 0] * (2.0 / max(h - 1, 1)) - 1.0
    norm = torch.stack([gx, gy], dim=-1)
    src = (image - pad_value)[:, None]
    out = F.grid_sample(src, norm, mode="bilinear", padding_mode="zeros", align_corners=True)
    out = out[:, 0, :, 0].reshape(b, *lead) + pad_value
    return out[0] if single else out


# ----------------------------------------------------------------------------- fusion


def centre_weight(patch: int) -> np.ndarray:
    """(P, P) float64 fusion weight: a Gaussian of sigma P/4 centred on the patch, peak 1."""
    off = np.arange(patch, dtype=np.float64) - (patch - 1) / 2.0
    g = np.exp(-0.5 * (off / (patch / 4.0)) ** 2)
    return np.outer(g, g)


def splat(values: np.ndarray, positions_yx: np.ndarray, shape: tuple[int, int], weights=None) -> tuple:
    """Bilinear splatting of ``values`` (...) at ``positions_yx`` (..., 2) onto a (H, W) grid.

    Returns ``(weighted_sum, weight_sum)``, both (H, W) float64. Positions outside the grid are
    dropped; each value spreads over its four neighbouring pixels with bilinear weights.
    """
    h, w = shape
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    pos = np.asarray(positions_yx, dtype=np.float64).reshape(-1, 2)
    wts = np.ones_like(vals) if weights is None else np.broadcast_to(weights, np.shape(values)).reshape(-1)
    y0 = np.floor(pos[:, 0])
    x0 = np.floor(pos[:, 1])
    fy = pos[:, 0] - y0
    fx = pos[:, 1] - x0
    acc = np.zeros(h * w, dtype=np.float64)
    norm = np.zeros(h * w, dtype=np.float64)
    for dy, dx, bw in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy = y0 + dy
        xx = x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w) & (bw > 0)
        idx = (yy[ok] * w + xx[ok]).astype(np.int64)
        ww = bw[ok] * wts[ok]
        acc += np.bincount(idx, weights=ww * vals[ok], minlength=h * w)
        norm += np.bincount(idx, weights=ww, minlength=h * w)
    return acc.reshape(h, w), norm.reshape(h, w)


def fuse_patches(likelihoods: np.ndarray, grid_yx: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Paste patch likelihoods back and average them.

    likelihoods: (n_rays, K, P, P) in [0, 1]; grid_yx: (n_rays, K, P, P, 2) their sampling
    positions (working px); shape: the working grid (H, W).
    Returns ``(fused, coverage)``: (H, W) float32 fused likelihood (0 where nothing landed) and
    (H, W) float32 summed fusion weight (> 0 where patches landed).
    """
    p = likelihoods.shape[-1]
    acc, norm = splat(likelihoods, grid_yx, shape, weights=centre_weight(p))
    fused = np.divide(acc, norm, out=np.zeros_like(acc), where=norm > 1e-6)
    return np.clip(fused, 0.0, 1.0).astype(np.float32), norm.astype(np.float32)


def fuse_patches_batch(
    likelihoods: torch.Tensor, grid_yx: torch.Tensor, shape: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fuse_patches` for N clicks at once, on the tensors' device (an accelerator's scatter-add
    instead of a round trip to the CPU's ``bincount``).

    likelihoods: (N, n_rays, K, P, P); grid_yx: (N, n_rays, K, P, P, 2) working px; shape (H, W).
    Returns ``(fused, coverage)``, each (N, H, W) float32 on that device; sums are accumulated in
    float64 as :func:`splat` does.
    """
    h, w = shape
    n = likelihoods.shape[0]
    p = likelihoods.shape[-1]
    dev = likelihoods.device
    vals = likelihoods.reshape(n, -1).double()
    pos = grid_yx.reshape(n, -1, 2).double()
    wts = torch.as_tensor(centre_weight(p), dtype=torch.float64, device=dev)
    wts = wts.expand(likelihoods.shape[1:]).reshape(1, -1)
    y0, x0 = torch.floor(pos[..., 0]), torch.floor(pos[..., 1])
    fy, fx = pos[..., 0] - y0, pos[..., 1] - x0
    base = (torch.arange(n, device=dev, dtype=torch.float64) * (h * w))[:, None]
    acc = torch.zeros(n * h * w, dtype=torch.float64, device=dev)
    norm = torch.zeros_like(acc)
    for dy, dx, bw in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w) & (bw > 0)
        idx = (base + yy * w + xx)[ok].long()
        ww = (bw * wts)[ok]
        acc.index_add_(0, idx, ww * vals[ok])
        norm.index_add_(0, idx, ww)
    acc, norm = acc.reshape(n, h, w), norm.reshape(n, h, w)
    fused = torch.where(norm > 1e-6, acc / norm.clamp_min(1e-12), torch.zeros_like(acc))
    return fused.clamp(0.0, 1.0).float(), norm.float()


def fov_box(click_yx, cfg: RayConfig) -> np.ndarray:
    """Top-left (y, x) corner, in working px (integers, as float64), of the click's square field of view."""
    return np.round(np.asarray(click_yx, dtype=np.float64)) - cfg.fov // 2


def fov_grid(click_yx, cfg: RayConfig) -> np.ndarray:
    """(..., S, S, 2) working-pixel positions of the square field of view (S = cfg.fov) around click(s)."""
    s = cfg.fov
    off = np.arange(s, dtype=np.float64)
    local = np.stack(np.meshgrid(off, off, indexing="ij"), axis=-1)  # (S, S, 2)
    corner = fov_box(click_yx, cfg)
    return corner[..., None, None, :] + local


def paste_fov(likelihood: np.ndarray, click_yx, cfg: RayConfig, shape: tuple[int, int]) -> tuple:
    """Place an (S, S) field-of-view likelihood back onto the (H, W) working grid.

    Returns ``(fused, coverage)`` like :func:`fuse_patches` (coverage 1 inside the field of view).
    """
    h, w = shape
    s = likelihood.shape[-1]
    y0, x0 = (int(v) for v in fov_box(click_yx, cfg))
    fused = np.zeros((h, w), dtype=np.float32)
    cov = np.zeros((h, w), dtype=np.float32)
    ya, yb = max(0, y0), min(h, y0 + s)
    xa, xb = max(0, x0), min(w, x0 + s)
    if ya < yb and xa < xb:
        fused[ya:yb, xa:xb] = likelihood[ya - y0 : yb - y0, xa - x0 : xb - x0]
        cov[ya:yb, xa:xb] = 1.0
    return fused, cov


# ----------------------------------------------------------------------------- post-processing


def postprocess(likelihood: np.ndarray, coverage: np.ndarray, click_yx, threshold: float = 0.5) -> np.ndarray:
    """Threshold, keep the connected component that holds the click (or the nearest one), fill holes.

    likelihood, coverage: (H, W) on one grid; click_yx in that grid's pixels.
    Returns a (H, W) bool mask (empty when nothing passes the threshold).
    """
    binary = (likelihood >= threshold) & (coverage > 1e-6)
    if not binary.any():
        return binary
    labels, n = ndimage.label(binary)
    h, w = binary.shape
    cy = int(np.clip(round(float(click_yx[0])), 0, h - 1))
    cx = int(np.clip(round(float(click_yx[1])), 0, w - 1))
    keep = labels[cy, cx]
    if keep == 0:
        # nearest foreground pixel to the click decides which component is meant
        _, (iy, ix) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        keep = labels[iy[cy, cx], ix[cy, cx]]
    return ndimage.binary_fill_holes(labels == keep)
