"""Running a network on clicks: the device and precision, and one batched pass on a working slice.

:func:`run_network` samples the patches (sequential net) or the field of view (U-net) of N clicks on a
windowed working-grid slice, runs the network on them in one batch (in chunks, under
``torch.inference_mode`` and the chosen autocast) and fuses each click's likelihoods back onto the
working grid: a :class:`WorkingResult` per click. :func:`pick_device` and :func:`resolve_dtype` choose
where and in what precision; :class:`Coarsen` is the weights' rule that takes a large object up the pyramid of
coarser grids (:data:`PYRAMID_MM`). Nothing here holds a volume or post-processes a mask: that is
:class:`seqpatch_core.inference.predictor.Predictor`, which uses this module.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from seqpatch_core.base.errors import InputError
from seqpatch_core.method import rays

#: ``runner(model_name, image_w, clicks_w, cfg, device, dtype) -> list[WorkingResult]`` (see
#: :func:`run_network`, which takes the model itself).
Runner = Callable[..., list]


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu; or the named device. Never assumes CUDA."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda", "mps"):
        raise InputError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    return torch.device(name)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: ``"auto"`` is bfloat16 on CPUs with native bfloat16 (AMX / AVX-512 BF16),
    where it halves the time per click and its masks agree with float32 (Dice >= 0.995, tested), and
    float32 elsewhere; ``"float32"``/None, ``"bfloat16"``, ``"float16"`` or a torch dtype as given."""
    if isinstance(dtype, torch.dtype) or dtype is None:
        return None if dtype == torch.float32 else dtype
    if dtype == "auto":
        fast_bf16 = device.type == "cpu" and torch.backends.mkldnn.is_available()
        fast_bf16 = fast_bf16 and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return torch.bfloat16 if fast_bf16 else None
    names = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise InputError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    return names[dtype]


def model_arch(model: nn.Module) -> str:
    """ "seqpatch" or "unet", from the model's record."""
    return getattr(model, "record", {}).get("arch", "seqpatch")


def input_shape(model: nn.Module, cfg: rays.RayConfig, slices: int = 1) -> tuple[int, ...]:
    """The network input for ``slices`` clicks: all rays x K patches each (sequential net), or one
    field of view each (U-net)."""
    if model_arch(model) == "seqpatch":
        return (slices * cfg.n_rays, cfg.k, 1, cfg.patch, cfg.patch)
    return (slices, 1, cfg.fov, cfg.fov)


#: The pyramid of working grids (mm), finest first: a click starts on its modality's grid (1.0 mm for
#: CT, 0.625 mm for MR: :data:`~seqpatch_core.method.rays.WORKING_SPACING_MM`) or on the grid a caller
#: fixes, and climbs to the coarser ones of this list (:meth:`Coarsen.grids`).
PYRAMID_MM: tuple[float, ...] = (0.625, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class Coarsen:
    """The scale rule: which grid of the pyramid answers a click.

    A click starts on its first grid. While its mask's equivalent radius exceeds ``radius_px`` pixels
    of the grid it was segmented on, it is segmented again on the next coarser grid. With ``growth``,
    the coarser answer is compared with the finer one: if the object it finds is no more than
    ``growth`` times as wide (in mm), the finer grid had already seen the whole object, and the finer
    answer stands (sharper, and the climb stops); if it is wider, the finer grid saw only part of the
    object, and the climb goes on from the coarser answer. Without ``growth`` every climb is kept.
    The pyramid's last grid answers for itself.

    Why: the networks read objects of a few to a few tens of working pixels; an organ of 60 mm is
    60 px at 1.0 mm, where both return a blob inside it (often 10-30 px, as wide as a lesion of
    10-20 mm), and 15 px at 4.0 mm, where it looks like what they learnt. A mask's size on one grid
    cannot tell the two apart; how it changes on the next grid can: a lesion stays the same size in
    mm, the blob in an organ grows towards the organ's boundary. Small objects, whose masks stay
    under ``radius_px`` on their first grid, take one pass.
    The rule belongs to the weights: ``calibrate`` chooses ``radius_px`` and ``growth`` on validation
    slices and stores them in the checkpoint's record under ``"coarsen"``; a checkpoint without it
    takes one grid.
    """

    radius_px: float
    growth: float | None = None

    @classmethod
    def of(cls, model: nn.Module) -> Coarsen | None:
        """The rule in ``model``'s record, or None."""
        rule = getattr(model, "record", {}).get("coarsen")
        if not rule or rule.get("radius_px") is None:
            return None
        growth = rule.get("growth")
        return cls(float(rule["radius_px"]), None if growth is None else float(growth))

    @staticmethod
    def grids(first_mm: float) -> tuple[float, ...]:
        """The grids (mm) a click starting on a ``first_mm`` grid may take: that one, then the
        pyramid's coarser ones (a first grid coarser than the pyramid's last: itself alone)."""
        return (float(first_mm), *(g for g in PYRAMID_MM if g > first_mm * (1 + 1e-6)))

    def wants(self, mask: np.ndarray, pixel_mm: tuple[float, float], working_spacing: float) -> bool:
        """Whether ``mask`` ((H, W) bool on a grid of ``pixel_mm`` (y, x) pixels), segmented on a
        working grid of ``working_spacing`` mm, is too large for that grid (to be redone coarser)."""
        return equivalent_radius_px(mask, pixel_mm, working_spacing) > self.radius_px

    def keeps_finer(self, finer: np.ndarray, coarser: np.ndarray, pixel_mm: tuple[float, float]) -> bool:
        """Whether the finer grid's mask stands against the next coarser grid's (both (H, W) bool on
        the same grid of ``pixel_mm`` pixels): the coarser one's object is at most ``growth`` times
        as wide (equivalent radius, mm). Always False without ``growth``."""
        if self.growth is None:
            return False
        return equivalent_radius_px(coarser, pixel_mm, 1.0) <= self.growth * equivalent_radius_px(finer, pixel_mm, 1.0)


def equivalent_radius_px(mask: np.ndarray, pixel_mm: tuple[float, float], working_spacing: float) -> float:
    """Radius of the disc of ``mask``'s area, in working pixels of ``working_spacing`` mm."""
    area_mm2 = float(np.count_nonzero(mask)) * float(pixel_mm[0]) * float(pixel_mm[1])
    return math.sqrt(area_mm2 / math.pi) / working_spacing


# ----------------------------------------------------------------------------- batched inference


@dataclass
class WorkingResult:
    """What one click gives on the working grid (all arrays numpy).

    fused, coverage: (Hw, Ww) float32. patches, likelihoods: (n_rays, K, P, P) float32 (seqpatch) or
    (1, 1, S, S) (unet: the field of view). grid: the sampling positions (..., 2) in working px.
    """

    fused: np.ndarray
    coverage: np.ndarray
    patches: np.ndarray
    likelihoods: np.ndarray
    grid: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The autocast context for ``dtype`` on ``device`` (None or float32: autocast off)."""
    if dtype is None or dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def run_network(
    model: nn.Module,
    image_w: np.ndarray | torch.Tensor,
    clicks_w: np.ndarray,
    cfg: rays.RayConfig,
    device: torch.device,
    dtype: torch.dtype | None = None,
    chunk: int | None = None,
) -> list[WorkingResult]:
    """Segment one windowed working slice at N clicks in one batch.

    image_w: (Hw, Ww) float in [0, 1]; clicks_w: (N, 2) (y, x) working px. ``dtype`` picks autocast
    (None/float32: full precision). ``chunk`` caps how many sequences (or fields of view) go through
    the network at once; by default 64 (4 clicks' rays) or 16, which keeps the activations of a
    25-click robustness grid to a few hundred MB instead of about 10 GB, at no measurable cost in
    speed. Returns N results.
    """
    arch = model_arch(model)
    clicks_w = np.asarray(clicks_w, dtype=np.float64).reshape(-1, 2)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    img = torch.as_tensor(np.asarray(image_w, dtype=np.float32), device=device)
    grid_np = rays.patch_grid(clicks_w, cfg) if arch == "seqpatch" else rays.fov_grid(clicks_w, cfg)
    grid = torch.as_tensor(grid_np, dtype=torch.float32, device=device)
    patches = rays.sample_patches(img, grid)  # (N, n, K, P, P) or (N, S, S)
    t1 = time.perf_counter()
    timings["sampling_ms"] = (t1 - t0) * 1e3
    with torch.inference_mode(), autocast(device, dtype):
        if arch == "seqpatch":
            n, r, k, p, _ = patches.shape
            x = patches.reshape(n * r, k, 1, p, p)
        else:
            n = patches.shape[0]
            x = patches[:, None]
        step = chunk or (64 if arch == "seqpatch" else 16)
        logits = torch.cat([model(x[i : i + step]) for i in range(0, x.shape[0], step)])
        lik = torch.sigmoid(logits.float()).reshape(patches.shape)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    timings["network_ms"] = (t2 - t1) * 1e3
    shape = tuple(img.shape)
    on_device = None
    if arch == "seqpatch" and device.type != "cpu":
        # an accelerator fuses all clicks at once by scatter-add; the CPU's bincount path needs no copy
        grid64 = torch.as_tensor(grid_np, device=device)  # float64 positions, as the CPU fusion takes them
        on_device = [t.cpu().numpy() for t in rays.fuse_patches_batch(lik, grid64, shape)]
    patches_np = patches.float().cpu().numpy()
    lik_np = lik.cpu().numpy()
    out = []
    for i in range(len(clicks_w)):
        if on_device is not None:
            fused, cov = on_device[0][i], on_device[1][i]
        elif arch == "seqpatch":
            fused, cov = rays.fuse_patches(lik_np[i], grid_np[i], shape)
        else:
            fused, cov = rays.paste_fov(lik_np[i], clicks_w[i], cfg, shape)
        out.append(WorkingResult(fused, cov, patches_np[i], lik_np[i], grid_np[i], dict(timings)))
    t3 = time.perf_counter()
    for r in out:
        r.timings["fusion_ms"] = (t3 - t2) * 1e3 / len(out)
    return out
