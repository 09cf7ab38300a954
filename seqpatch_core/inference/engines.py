"""Inference engines: the networks compiled by OpenVINO or ONNX Runtime, PyTorch as the reference.

A click's network pass is the bulk of its time on a CPU (``bench``). Engines made for inference run
the same network faster: each network is exported once to ONNX (``torch.onnx.export``) and compiled
by the engine. An engine path is used only where its masks agree with float32 PyTorch (mean Dice >=
:data:`AGREEMENT` on generated benchmark slices) and where it is faster than PyTorch on this machine;
:func:`choose` decides that when the app starts, and ``bench --engines`` reports every path.

The sequential net's recurrence over the K patches of a ray is unrolled when it is exported, so a
:class:`CompiledNet` holds one compiled graph per K (one per ray preset, compiled on first use or
ahead by :meth:`CompiledNet.prepare`); the U-net's graph takes any batch and field of view. Exported
graphs are cached on disk (``SEQPATCH_CACHE``, default ``~/.cache/seqpatch``), keyed by the weights,
K and the torch version, so a restart compiles without exporting again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqpatch_core.base.errors import InputError, first_line
from seqpatch_core.base.metrics import dice
from seqpatch_core.method import rays
from seqpatch_core.method.run import autocast, input_shape, model_arch, run_network

log = logging.getLogger(__name__)

#: Mean Dice against float32 PyTorch that a path must reach on the check slices to be used.
AGREEMENT = 0.995
ENGINE_NAMES = ("auto", "torch", "openvino", "onnxruntime")


@dataclass(frozen=True)
class EngineSpec:
    """One inference path: ``engine`` ("torch", "openvino", "onnxruntime") at ``precision``
    ("float32" or "bfloat16"; OpenVINO's bfloat16 is its inference precision hint)."""

    engine: str
    precision: str = "float32"

    @property
    def label(self) -> str:
        return f"{self.engine}-{self.precision}"


def usable_threads() -> int:
    """The cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX), as oneDNN reports it."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def installed(engine: str) -> bool:
    """Whether the engine's Python package imports."""
    module = {"openvino": "openvino", "onnxruntime": "onnxruntime"}.get(engine)
    if module is None:
        return engine == "torch"
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def candidates(engine: str = "auto") -> list[EngineSpec]:
    """The compiled paths worth trying on this machine for ``engine`` ("auto": every installed one;
    a name: that engine only), in the order they are tried. bfloat16 only where the CPU has it."""
    if engine not in ENGINE_NAMES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINE_NAMES)}")
    specs = []
    if engine in ("auto", "openvino") and installed("openvino"):
        if native_bfloat16():
            specs.append(EngineSpec("openvino", "bfloat16"))
        specs.append(EngineSpec("openvino", "float32"))
    if engine in ("auto", "onnxruntime") and installed("onnxruntime"):
        specs.append(EngineSpec("onnxruntime", "float32"))
    return specs


def cache_dir() -> Path:
    return Path(os.environ.get("SEQPATCH_CACHE") or Path.home() / ".cache" / "seqpatch") / "onnx"


def weights_digest(model: nn.Module) -> str:
    """A short digest of the network's tensors (which graph a cached export belongs to)."""
    h = hashlib.blake2b(digest_size=10)
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(torch.__version__.encode())
    return h.hexdigest()


def export_onnx(model: nn.Module, k: int | None, path: Path) -> Path:
    """Export ``model`` to ONNX at ``path`` (written through a temporary file, so a concurrent
    reader never sees half a file). Sequential net: input (B, K, 1, P, P) with B dynamic and this K;
    U-net: (B, 1, H, W), all dynamic but the channel."""
    arch = model_arch(model)
    if arch == "seqpatch":
        example = torch.rand(2, k, 1, rays.PRESETS["ct"].patch, rays.PRESETS["ct"].patch)
        axes = {"x": {0: "batch"}, "y": {0: "batch"}}
    else:
        example = torch.rand(1, 1, 64, 64)
        axes = {"x": {0: "batch", 2: "h", 3: "w"}, "y": {0: "batch", 2: "h", 3: "w"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    import warnings

    with warnings.catch_warnings():  # tracing warns about the Python loop over K, which is intended
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.cpu().eval(),
            (example,),
            tmp,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, path)
    return path


class CompiledNet:
    """A network run by OpenVINO or ONNX Runtime; called like the module: ``net(x)``.

    x: float32 tensor (B, K, 1, P, P) (sequential net) or (B, 1, S, S) (U-net) on the CPU; returns the
    logits as a float32 tensor of the same shape. ``record`` is the source network's record, so the
    rest of the pipeline treats it as that network.
    """

    def __init__(self, model: nn.Module, spec: EngineSpec, threads: int | None = None):
        if spec.engine not in ("openvino", "onnxruntime"):
            raise InputError(f"{spec.engine!r} is not a compiled engine")
        self.model = model
        self.record = getattr(model, "record", {})
        self.spec = spec
        self.threads = threads or usable_threads()
        self._digest = weights_digest(model)
        self._graphs: dict[tuple[int, int | None], Any] = {}
        #: the sequences of one click (its rays)
        self.click_batch = rays.PRESETS["ct"].n_rays
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CompiledNet({self.record.get('name')!r}, {self.spec.label})"

    def prepare(self, ks: list[int]) -> CompiledNet:
        """Compile now the graphs for these K (the sequential net; the U-net has one graph), and for
        one click's batch where OpenVINO has a faster fixed-batch graph."""
        for k in ks:
            self._graph(k)
            if self.spec.engine == "openvino" and model_arch(self.model) == "seqpatch":
                self._graph(k, self.click_batch)
        return self

    def _graph(self, k: int, batch: int | None = None):
        """The compiled graph for K (sequential net) and, where given, a fixed batch (OpenVINO)."""
        key = (k if model_arch(self.model) == "seqpatch" else 0, batch)
        with self._lock:
            if key not in self._graphs:
                t = time.perf_counter()
                kk = key[0]
                name = f"{self.record.get('name', model_arch(self.model))}_{self._digest}" + (f"_k{kk}" if kk else "")
                path = cache_dir() / f"{name}.onnx"
                if not path.exists():
                    export_onnx(self.model, kk or None, path)
                self._graphs[key] = self._compile(path, batch)
                log.info("%s: graph for K=%s, batch %s ready in %.1f s", self, kk or "any", batch or "any",
                         time.perf_counter() - t)
            return self._graphs[key]

    def _compile(self, path: Path, batch: int | None = None):
        if self.spec.engine == "openvino":
            import openvino as ov

            config = {
                "INFERENCE_PRECISION_HINT": "bf16" if self.spec.precision == "bfloat16" else "f32",
                "INFERENCE_NUM_THREADS": self.threads,
                "PERFORMANCE_HINT": "LATENCY",
            }
            core = ov.Core()
            model = core.read_model(str(path))
            if batch is not None:
                shape = model.input(0).get_partial_shape()
                shape[0] = batch
                model.reshape({0: shape})
            return core.compile_model(model, "CPU", config)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # one click's rays (the common case) get OpenVINO's graph of that fixed batch: measured about
        # 17 % faster than the graph of any batch, which grids and 3D objects use
        static = (
            self.spec.engine == "openvino" and model_arch(self.model) == "seqpatch" and x.shape[0] == self.click_batch
        )
        graph = self._graph(int(x.shape[1]), int(x.shape[0]) if static else None)
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        if self.spec.engine == "openvino":
            # an infer request per call: a compiled model is shared by threads, a request is not
            y = graph.create_infer_request().infer({0: arr})[0]
        else:
            y = graph.run(None, {"x": arr})[0]
        return torch.from_numpy(np.asarray(y, dtype=np.float32))


# ----------------------------------------------------------------------------- agreement and choice


def check_slices(n: int = 4, seed: int = 0, spacing_mm: float = 1.0) -> list:
    """``n`` generated benchmark slices (procedural phantoms, synth's held-out seed stream): the
    agreement check's inputs, available on every machine without data files."""
    from seqpatch_core.data import synth

    return synth.benchmark_set(n, seed, None, spacing_mm=spacing_mm, size=160)


def masks(net, slices: list, preset: str = "ct") -> list[np.ndarray]:
    """The masks of ``net`` on ``slices``, each clicked at its object's centre, through the whole
    pipeline (fusion, threshold, component, holes) on the slice's own grid, as the app runs it."""
    cfg = rays.get_preset(preset)
    out = []
    for s in slices:
        (r,) = run_network(net, s.image, np.array([s.click]), cfg, torch.device("cpu"))
        out.append(rays.postprocess(r.fused, r.coverage, s.click, 0.5))
    return out


def agreement(reference: list[np.ndarray], net, slices: list, preset: str = "ct") -> dict[str, float]:
    """Dice between the masks of ``net`` and the ``reference`` masks (float32 PyTorch's, :func:`masks`)."""
    pairs = zip(reference, masks(net, slices, preset), strict=True)
    scores = [dice(a, b) if (a.any() or b.any()) else 1.0 for a, b in pairs]
    return {"mean_dice": round(float(np.mean(scores)), 5), "min_dice": round(float(np.min(scores)), 5)}


def time_click(net, dtype: torch.dtype | None, preset: str = "ct", repeats: int = 2) -> float:
    """Median ms of one click's network pass (all rays, or one field of view) after a warm-up."""

    model = net.model if isinstance(net, CompiledNet) else net
    x = torch.rand(input_shape(model, rays.get_preset(preset)))
    run = AsRun(net, dtype)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            t = time.perf_counter()
            run(x)
            if i:
                times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


@dataclass
class Choice:
    """What :func:`choose` picked for one network, and why (every path tried, in ms and Dice)."""

    net: Any
    label: str
    tried: dict[str, dict]
    #: the autocast dtype when ``net`` is the PyTorch model (None: float32, or a compiled net)
    dtype: torch.dtype | None = None


def choose(
    model: nn.Module,
    engine: str = "auto",
    dtype: torch.dtype | None = None,
    presets: tuple[str, ...] = ("ct", "promise12"),
    slices: list | None = None,
) -> Choice:
    """The fastest path for ``model`` on this CPU among PyTorch (at ``dtype``, the reference being
    float32) and the compiled ``candidates(engine)`` whose masks agree (mean Dice >= AGREEMENT).

    ``engine`` "torch" returns the model itself at once. A named engine that is not installed, fails
    to compile or disagrees falls back to PyTorch with a warning. Graphs for ``presets`` are compiled
    here, so the first click does not wait for them.
    """
    if engine == "torch":
        return Choice(model, "torch", {}, dtype)
    slices = slices if slices is not None else check_slices()
    ks = sorted({rays.get_preset(p).k for p in presets})
    torch_label = "torch-bfloat16" if dtype == torch.bfloat16 else "torch-float32"
    reference = masks(model, slices, presets[0])
    tried: dict[str, dict] = {torch_label: {"ms": round(time_click(model, dtype, presets[0]), 1)}}
    best, best_label, best_dtype = model, torch_label, dtype
    if dtype is not None:
        tried[torch_label].update(agreement(reference, AsRun(model, dtype), slices, presets[0]))
        if tried[torch_label]["mean_dice"] < AGREEMENT:  # PyTorch in float32 is the fallback, then
            tried["torch-float32"] = {"ms": round(time_click(model, None, presets[0]), 1)}
            best_label, best_dtype = "torch-float32", None
    best_ms = tried[best_label]["ms"]
    specs = candidates(engine)
    if not specs:
        log.warning("engine %s is not installed: the networks run in PyTorch", engine)
    for spec in specs:
        try:
            net = CompiledNet(model, spec).prepare(ks)
            entry = {"ms": round(time_click(net, None, presets[0]), 1), **agreement(reference, net, slices, presets[0])}
        except Exception as exc:  # an engine that cannot take this network is skipped, not fatal
            log.warning("%s cannot run %s: %s", spec.label, model.record.get("name"), exc)
            tried[spec.label] = {"error": first_line(exc, 200)}
            continue
        tried[spec.label] = entry
        if entry["mean_dice"] >= AGREEMENT and entry["ms"] < best_ms:
            best, best_label, best_ms, best_dtype = net, spec.label, entry["ms"], None
    log.info("%s runs on %s (%s)", model.record.get("name"), best_label, tried)
    return Choice(best, best_label, tried, best_dtype)


class AsRun:
    """A network called as a path runs it: a PyTorch module under autocast at ``dtype`` (None: float32),
    a compiled net as it is; callable like the module, with its ``record`` (for :func:`agreement`)."""

    def __init__(self, net, dtype: torch.dtype | None):
        self.net, self.dtype, self.record = net, dtype, getattr(net, "record", {})

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.net, nn.Module):
            return self.net(x)
        with autocast(torch.device("cpu"), self.dtype):
            return self.net(x).float()
