"""Per-click benchmark: latency by stage for both methods, the robustness grid, loading, sizes, floor.

Measured on the bundled lung2 example (``examples/lung2_ct_crop.nii.gz``) with the ``ct`` preset
(16 rays x 15 patches of 32 x 32), after warm-up; CUDA timings synchronise. The "compute floor" is the
network's floating-point operations per click divided by this machine's measured rate for a large
matrix product in the same precision: the time the click would take if every layer ran at that rate.

Every inference path side by side (``bench --engines``) is :mod:`seqpatch_core.bench.paths`, which
builds on this module.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from seqpatch_core.base.tables import markdown_table
from seqpatch_core.images.io import read_label, read_volume
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method import rays
from seqpatch_core.method.models import model_size
from seqpatch_core.method.run import input_shape

log = logging.getLogger(__name__)

__all__ = [
    "load_benchmark",
    "markdown",
    "matmul_rate",
    "network_flops",
    "network_variants",
    "run_bench",
    "synthetic_ct",
    "training_step_benchmark",
]


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2)}


def network_flops(model: torch.nn.Module, cfg: rays.RayConfig) -> float:
    """Floating-point operations (2 x multiply-adds) of one click's forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(input_shape(model, cfg))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.cpu()(x)
    return float(counter.get_total_flops())


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    """Measured FLOP/s of an n x n x n matrix product on ``device`` in ``dtype``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def network_variants(model: torch.nn.Module, cfg: rays.RayConfig, device: torch.device, repeats: int = 3) -> dict:
    """Median ms of one click's network pass (all rays in one batch) per fast-path option.

    float32 and bfloat16 autocast, each with the default and the channels_last memory format.
    """
    import copy

    x = torch.rand(input_shape(model, cfg), device=device)
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    variants = {
        "float32": (model, torch.float32),
        "float32_channels_last": (last, torch.float32),
        "bfloat16": (model, torch.bfloat16),
        "bfloat16_channels_last": (last, torch.bfloat16),
    }
    out = {}
    for name, (m, dtype) in variants.items():
        times = []
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            for i in range(repeats + 1):
                t = time.perf_counter()
                m(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:  # the first pass is a warm-up
                    times.append((time.perf_counter() - t) * 1e3)
        out[name] = round(float(np.median(times)), 1)
    return out


def training_step_benchmark(
    model: torch.nn.Module, cfg: rays.RayConfig, device: torch.device, amp: bool, slices: int = 2, repeats: int = 3
) -> dict:
    """Median cost of one training step (forward, backward, Adam), per training slice, in ms.

    A step trains on ``slices`` slices' inputs as ``seqpatch_core.training`` builds them: all rays x K
    patches per slice for the sequential net, one field of view per slice for the U-net. On a CPU with
    ``amp`` the model is channels_last, as training makes it. The model is a copy; its weights are kept.
    """
    import copy

    from seqpatch_core.training.loop import make_optimizer, train_step

    m = copy.deepcopy(model).to(device).train()
    if device.type == "cpu" and amp:
        m = m.to(memory_format=torch.channels_last)
    opt = make_optimizer(m, 1e-5, 0.0)
    shape = input_shape(model, cfg, slices)
    x = torch.rand(shape, device=device)
    y = (torch.rand(shape, device=device) > 0.5).float()
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        train_step(m, opt, x, y, amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step is a warm-up
            times.append((time.perf_counter() - t) * 1e3)
    per_slice = float(np.median(times)) / slices
    return {"slices_per_step": slices, "ms_per_slice": round(per_slice, 1), "slices_per_s": round(1e3 / per_slice, 2)}


def generator_benchmark(device: torch.device, bank_path: str | None = None, n: int = 32, repeats: int = 3) -> dict:
    """Synthetic training slices per second from each generator (``train --generator``).

    ``numpy``: ``synth.make_slice`` and ``make_batch``'s augmentation one slice at a time, as one
    DataLoader worker makes them (one process, one thread; W workers make about W times as many).
    Both at 1.0 mm, so that the objects' size and contrast (``_object_stats``) compare. ``torch``: one
    batch of ``n`` from :class:`~seqpatch_core.data.synth_torch.DeviceSynth` with this process's threads, on
    the CPU and on ``device`` when that is an accelerator. ``bank_path``: the background bank (None:
    procedural only).
    Median of ``repeats`` after a warm-up.
    """
    from seqpatch_core.data import synth
    from seqpatch_core.data.synth_torch import DeviceSynth
    from seqpatch_core.training.batches import SLICE_SIZE, augment_slice, load_bank

    bank = load_bank(bank_path, "train")

    def rate(make, sync=lambda: None) -> tuple[float, list]:
        times, made = [], []
        for i in range(repeats + 1):
            t = time.perf_counter()
            made.append(make(i))
            sync()
            if i:
                times.append(time.perf_counter() - t)
        return round(n / float(np.median(times)), 1), made

    def numpy_slices(i: int) -> tuple:
        # make_batch's work per slice, at the torch batches' 1.0 mm so that the objects compare
        rng = np.random.default_rng(i)
        parts = [augment_slice(synth.make_slice(rng, SLICE_SIZE, 1.0, bank), rng) for _ in range(n)]
        return torch.from_numpy(np.stack([p[0] for p in parts])), torch.from_numpy(np.stack([p[1] for p in parts]))

    def torch_slices(gen):
        def make(i: int) -> tuple:
            b = gen.batch(n, 1.0, i)
            return b.images, b.labels

        return make

    out = {"slices": n, "backgrounds": Path(bank_path).name if bank_path else "procedural only"}
    out["numpy_1_thread_slices_per_s"], made = rate(numpy_slices)
    out["numpy_objects"] = _object_stats(made)
    out["torch_cpu_slices_per_s"], made = rate(torch_slices(DeviceSynth("cpu", bank=bank)))
    out["torch_cpu_threads"] = torch.get_num_threads()
    out["torch_objects"] = _object_stats(made)
    if device.type != "cpu":
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        rate_dev, _ = rate(torch_slices(DeviceSynth(device, bank=bank)), sync)
        out["torch_device"] = {"device": device.type, "slices_per_s": rate_dev}
    return out


def percentiles_text(stats: dict) -> str:
    """'3.8 / 9.9 / 20.3 px, 0.010 / 0.054 / 0.260' from one ``_object_stats`` result."""
    r, c = stats["radius_px_p10_p50_p90"], stats["contrast_p10_p50_p90"]
    return " / ".join(f"{v:g}" for v in r) + " px, " + " / ".join(f"{v:.3f}" for v in c)


def _object_stats(made: list[tuple]) -> dict:
    """10th/50th/90th percentiles of the objects' equivalent radius (px) and of their contrast (|mean
    inside - mean of a 1-4 px ring outside|) over batches of (images, labels) (n, H, W)."""
    from scipy import ndimage as ndi

    radius, contrast = [], []
    for images, labels in made:
        for img, lab in zip(images.cpu().numpy(), labels.cpu().numpy() > 0.5, strict=True):
            ring = ndi.binary_dilation(lab, iterations=4) & ~ndi.binary_dilation(lab, iterations=1)
            radius.append(np.sqrt(lab.sum() / np.pi))
            contrast.append(abs(img[lab].mean() - img[ring].mean()))
    return {
        "radius_px_p10_p50_p90": [round(float(v), 1) for v in np.percentile(radius, [10, 50, 90])],
        "contrast_p10_p50_p90": [round(float(v), 3) for v in np.percentile(contrast, [10, 50, 90])],
    }


def load_benchmark(shape=(100, 512, 512)) -> dict[str, float]:
    """Time and peak memory of reading a CT of ``shape`` (z, y, x) int16 from .nii.gz.

    The file is written here and read in a fresh process, so that the peak memory measured is the
    reading's own: ``peak_growth_mb`` is that process's high-water mark minus its size before reading.
    """
    import multiprocessing

    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    arr = rng.normal(0, 300, size=shape).astype(np.int16)
    arr[:, :40] = -1000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ct.nii.gz"
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((0.7, 0.7, 2.5))
        sitk.WriteImage(img, str(path), useCompression=True)
        del arr, img
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            seconds, before_kib, peak_kib = pool.apply(_timed_read, (str(path),))
    return {
        "shape_zyx": list(shape),
        "seconds": round(seconds, 3),
        "peak_growth_mb": round((peak_kib - before_kib) / 1024, 1),
        "peak_process_mb": round(peak_kib / 1024, 1),
    }


def _vm_kib(field: str) -> int:
    """A memory field of /proc/self/status in KiB (VmRSS now, VmHWM the high-water mark).

    Not ``ru_maxrss``: Linux carries that over from the parent through fork and exec.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _timed_read(path: str) -> tuple[float, int, int]:
    """(seconds, resident KiB before, high-water KiB after) of ``read_volume(path)`` in this process."""
    before = _vm_kib("VmRSS")
    t = time.perf_counter()
    vol = read_volume(path)
    seconds = time.perf_counter() - t
    del vol
    return seconds, before, _vm_kib("VmHWM")


def synthetic_ct(seed: int = 0, shape=(17, 256, 256), spacing=(5.0, 0.627, 0.627)):
    """A CT-like volume (HU) with one generated lesion on its middle slice, shaped like the lung2 crop.

    For machines without SimpleITK (the latency depends on the preset and the slice size, not on the
    content). Returns ``(volume, label)``.
    """
    from seqpatch_core.data import synth
    from seqpatch_core.images.intensity import CT_PRESETS
    from seqpatch_core.images.volume import volume_from_array

    s = synth.make_slice(np.random.default_rng(seed), size=shape[1], spacing_mm=spacing[1])
    width, level = CT_PRESETS["lung"]
    arr = np.full(shape, -1000.0, dtype=np.float32)
    arr[:] = level - width / 2 + s.image * width
    lab = np.zeros(shape, dtype=np.uint8)
    lab[shape[0] // 2] = s.label
    vol = volume_from_array(arr, spacing=spacing, modality="CT", source="synthetic CT (bench)")
    return vol, lab


def bench_case(image: str | Path | None, label: str | Path | None = None) -> tuple:
    """The benchmark's volume and click: ``(volume, z, y, x)``, the label's centre on its largest
    slice (the volume's centre without a label); ``image=None``: :func:`synthetic_ct`."""
    if image is None:
        vol, lab = synthetic_ct()
    else:
        vol = read_volume(image)
        lab = read_label(label, vol) if label is not None else None
    if lab is None:
        return vol, vol.shape[0] // 2, vol.shape[1] / 2, vol.shape[2] / 2
    z = int(np.argmax(lab.reshape(lab.shape[0], -1).sum(1)))
    ys, xs = np.nonzero(lab[z])
    return vol, z, float(ys.mean()), float(xs.mean())


def grid_points(vol, cy: float, cx: float, n: int = 5, step_mm: float = 3.0) -> list[tuple[float, float]]:
    """The n x n robustness grid's clicks (y, x) around (cy, cx), ``step_mm`` apart, kept in the slice."""
    offs = (np.arange(n) - n // 2) * step_mm / np.array(vol.spacing[1:])[:, None]
    return [
        (min(max(cy + dy, 0), vol.shape[1] - 1), min(max(cx + dx, 0), vol.shape[2] - 1))
        for dy in offs[0]
        for dx in offs[1]
    ]


def run_bench(
    predictor: Predictor,
    image: str | Path | None,
    label: str | Path | None = None,
    clicks: int = 20,
    warmup: int = 3,
    preset: str = "ct",
    with_load: bool = True,
    variants: bool = False,
    train_step: bool = False,
    backgrounds: str | None = None,
) -> dict:
    """Benchmark both methods on ``image`` (the click: the label's centre on its largest slice).

    ``image=None`` benchmarks :func:`synthetic_ct` instead.
    """
    vol, z, cy, cx = bench_case(image, label)
    predictor.set_volume(vol, window="auto")
    rng = np.random.default_rng(0)
    dev = predictor.device
    dtype = predictor.dtype or torch.float32
    out: dict = {
        "device": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else (platform.processor() or platform.machine()),
        "device_type": dev.type,
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "image": Path(image).name if image is not None else vol.source,
        "preset": preset,
        "clicks": clicks,
    }
    cfg = rays.get_preset(preset)
    rate = matmul_rate(dev, dtype if dev.type == "cuda" or dtype != torch.float16 else torch.float32)
    out["matmul_gflops"] = round(rate / 1e9, 1)
    for method in ("seqpatch", "unet"):
        if method not in predictor.models:
            continue
        model = predictor.models[method]
        totals, stages = [], {}
        for i in range(warmup + clicks):
            # a slightly different click each time (within 2 px), as a user's clicks are
            pt = (z, cy + rng.uniform(-2, 2), cx + rng.uniform(-2, 2))
            t = time.perf_counter()
            res = predictor.predict(pt, method=method, preset=preset)
            total = (time.perf_counter() - t) * 1e3
            if i >= warmup:
                totals.append(total)
                for k, v in res.timings.items():
                    if k != "total_ms":
                        stages.setdefault(k, []).append(v)
        flops = network_flops(model, cfg)
        model.to(dev)
        out[method] = {
            **percentiles(totals),
            "stages": {k: round(float(np.median(v)), 2) for k, v in stages.items()},
            "gflops_per_click": round(flops / 1e9, 2),
            "floor_ms": round(flops / rate * 1e3, 2),
            **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in model_size(model).items()},
        }
    if variants:
        for method in ("seqpatch", "unet"):
            if method in predictor.models:
                out[method]["network_variants_ms"] = network_variants(predictor.models[method], cfg, dev)
    if train_step:
        for method in ("seqpatch", "unet"):
            if method in predictor.models:
                amp = predictor.dtype == torch.bfloat16
                out[method]["train_step"] = training_step_benchmark(predictor.models[method], cfg, dev, amp)
        out["generator"] = generator_benchmark(dev, backgrounds)
    # the 5 x 5 robustness grid, both methods, one batch per method
    pts = grid_points(vol, cy, cx)
    t = time.perf_counter()
    for method in ("seqpatch", "unet"):
        if method in predictor.models:
            predictor.predict_many(z, pts, method=method, preset=preset)
    out["robustness_grid_5x5_s"] = round(time.perf_counter() - t, 2)
    if dev.type == "cuda":
        out["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    out["peak_rss_mb"] = round(_vm_kib("VmHWM") / 1024, 1)
    if with_load:
        out["load_512x512x100"] = load_benchmark()
    return out


def markdown(b: dict) -> str:
    """The markdown table of docs/results.md for one bench result."""
    rows = [
        f"Machine: {b['device']} ({b['device_type']}, {b['threads']} threads, {b['dtype']}), torch {b['torch']}; "
        f"{b['image']}, preset {b['preset']}, {b['clicks']} clicks after warm-up.",
        "",
    ]
    head = ["method", "p50 ms", "p95 ms", "sampling", "network", "fusion", "post-proc.", "GFLOP/click", "floor ms",
            "params"]  # fmt: skip
    cells = []
    for m in ("seqpatch", "unet"):
        if m in b:
            r, s = b[m], b[m]["stages"]
            cells.append([
                m, r["p50_ms"], r["p95_ms"], f"{s.get('sampling_ms', 0):.1f}", f"{s.get('network_ms', 0):.1f}",
                f"{s.get('fusion_ms', 0):.1f}", f"{s.get('postprocess_ms', 0) + s.get('prepare_ms', 0):.1f}",
                r["gflops_per_click"], r["floor_ms"], f"{r['parameters'] / 1e6:.2f} M",
            ])  # fmt: skip
    rows += markdown_table(head, cells).split("\n")
    for m in ("seqpatch", "unet"):
        if "network_variants_ms" in b.get(m, {}):
            v = b[m]["network_variants_ms"]
            rows += ["", f"{m}, network only (ms): " + ", ".join(f"{k} {t}" for k, t in v.items()) + "."]
    for m in ("seqpatch", "unet"):
        if "train_step" in b.get(m, {}):
            ts = b[m]["train_step"]
            rows += [
                "",
                f"{m}, one training step (forward, backward, Adam): {ts['ms_per_slice']} ms per slice "
                f"({ts['slices_per_s']} slices/s, {ts['slices_per_step']} slices per step).",
            ]
    if "generator" in b:
        g = b["generator"]
        on = g.get("torch_device")
        rows += [
            "",
            f"Synthetic training slices per second ({g['backgrounds']}): numpy, one worker, "
            f"{g['numpy_1_thread_slices_per_s']}; torch on the CPU ({g['torch_cpu_threads']} threads, batches of "
            f"{g['slices']}) {g['torch_cpu_slices_per_s']}"
            + (f"; torch on {on['device']} {on['slices_per_s']}" if on else "")
            + ". Objects at 1.0 mm, 10th / 50th / 90th percentiles of the equivalent radius (px) and of the "
            + f"contrast: numpy {percentiles_text(g['numpy_objects'])}, "
            + f"torch {percentiles_text(g['torch_objects'])}.",
        ]
    rows.append("")
    rows.append(
        f"5x5 robustness grid, both methods: {b['robustness_grid_5x5_s']} s. "
        f"Matrix-product rate: {b['matmul_gflops']} GFLOP/s. Peak memory of the benchmark process: "
        f"{b['peak_rss_mb']} MB."
    )
    if "load_512x512x100" in b:
        ld = b["load_512x512x100"]
        rows.append(
            f"Loading a 512x512x100 CT (.nii.gz): {ld['seconds']} s, peak memory growth {ld['peak_growth_mb']} MB "
            f"(process peak {ld['peak_process_mb']} MB)."
        )
    return "\n".join(rows)
