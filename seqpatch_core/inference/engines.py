"""Inference engines: the networks compiled by OpenVINO or ONNX Runtime, PyTorch as the reference.

A click's network pass is the bulk of its time on a CPU (``bench``). Engines made for inference run
the same network faster: each network is exported once to ONNX (``torch.onnx.export``) and compiled
by the engine. An engine path is used only where its masks agree with float32 PyTorch (mean Dice >=
:data:`AGREEMENT` on generated benchmark slices) and where it is faster than PyTorch on this machine;
:func:`choose` decides that when the app starts, and ``bench --engines`` reports every path.

The sequential net's recurrence over the K patches of a ray is unrolled when it is exported, so a
:class:`CompiledNet` holds one compiled graph per K (one per ray preset, compiled on first use or
ahead by :meth:`CompiledNet.prepare`); the U-net's graph takes any batch and field of view. A module
with one fixed input shape (LiteMedSAM's image encoder, :mod:`seqpatch_core.inference.boxes`) is a
:class:`CompiledModule`, chosen by the same rule (:func:`fastest_agreeing`) on its own masks. Exported
graphs are cached on disk (``SEQPATCH_CACHE``, default ``~/.cache/seqpatch``), keyed by the weights,
K or the input shape, and the torch version, so a restart compiles without exporting again.
"""

from __future__ import annotations

import functools
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


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path, dynamic_axes: dict | None = None) -> Path:
    """Export ``module`` called on ``example`` to ONNX at ``path``: one input "x", one output "y" (its
    first, if it returns several); every dimension is fixed at ``example``'s shape but those named in
    ``dynamic_axes`` (torch.onnx's form). Written through a temporary file, so a concurrent reader
    never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    import warnings

    with warnings.catch_warnings():  # tracing warns about Python loops (over K, over windows): intended
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.cpu().eval(),
            (example,),
            tmp,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes=dynamic_axes,
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, path)
    return path


def network_example(model: nn.Module, k: int | None) -> tuple[torch.Tensor, dict]:
    """A click network's export input and dynamic axes. Sequential net: (B, K, 1, P, P) with B
    dynamic and this K; U-net: (B, 1, H, W), all dynamic but the channel."""
    if model_arch(model) == "seqpatch":
        example = torch.rand(2, k, 1, rays.PRESETS["ct"].patch, rays.PRESETS["ct"].patch)
        return example, {"x": {0: "batch"}, "y": {0: "batch"}}
    axes = {0: "batch", 2: "h", 3: "w"}
    return torch.rand(1, 1, 64, 64), {"x": axes, "y": axes}


def exported(module: nn.Module, name: str, example: torch.Tensor, dynamic_axes: dict | None = None) -> Path:
    """The ONNX file of ``module`` in :func:`cache_dir` under ``name`` (which must say the weights,
    e.g. by :func:`weights_digest`, and the graph's shape), exported on first use."""
    path = cache_dir() / f"{name}.onnx"
    if not path.exists():
        export_onnx(module, example, path, dynamic_axes)
    return path


@functools.cache
def openvino_core():
    """The process's one OpenVINO ``Core``, kept for the life of the process.

    Each ``Core`` makes its own CPU plugin, and the plugin gives the thread that makes it a signal stack
    of its own, which its destructor puts back and unmaps. Cores dropped in another order than they were
    made (compiled graphs tried and refused, one Core per graph) left the main thread's signal stack in
    unmapped memory: the next signal it handled (a child's SIGCHLD with PyTorch's DataLoader handler, or
    Ctrl-C) killed the process with a segmentation fault and no traceback. One Core, never dropped,
    makes one plugin whose stack stays mapped; OpenVINO's guide also says to make the Core once."""
    import openvino as ov

    return ov.Core()


def compile_graph(path: Path, spec: EngineSpec, threads: int, batch: int | None = None):
    """The ONNX graph at ``path`` compiled by ``spec``'s engine for the CPU with ``threads`` threads:
    an OpenVINO compiled model (its input's dimension 0 fixed at ``batch`` where given) or an ONNX
    Runtime session. Run it with :func:`run_graph`."""
    if spec.engine == "openvino":

        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if spec.precision == "bfloat16" else "f32",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        }
        core = openvino_core()
        model = core.read_model(str(path))
        if batch is not None:
            shape = model.input(0).get_partial_shape()
            shape[0] = batch
            model.reshape({0: shape})
        return core.compile_model(model, "CPU", config)
    if spec.engine != "onnxruntime":
        raise InputError(f"{spec.engine!r} is not a compiled engine")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_graph(graph, x: torch.Tensor) -> torch.Tensor:
    """One pass of a :func:`compile_graph` graph on ``x`` (taken to the CPU as float32); its output
    "y" as a float32 CPU tensor."""
    arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
    if hasattr(graph, "create_infer_request"):  # OpenVINO
        # an infer request per call: a compiled model is shared by threads, a request is not
        y = graph.create_infer_request().infer({0: arr})[0]
    else:
        y = graph.run(None, {"x": arr})[0]
    return torch.from_numpy(np.asarray(y, dtype=np.float32))


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
                path = exported(self.model, name, *network_example(self.model, kk or None))
                self._graphs[key] = compile_graph(path, self.spec, self.threads, batch)
                log.info(
                    "%s: graph for K=%s, batch %s ready in %.1f s",
                    self,
                    kk or "any",
                    batch or "any",
                    time.perf_counter() - t,
                )
            return self._graphs[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # one click's rays (the common case) get OpenVINO's graph of that fixed batch: measured about
        # 17 % faster than the graph of any batch, which grids and 3D objects use
        static = (
            self.spec.engine == "openvino" and model_arch(self.model) == "seqpatch" and x.shape[0] == self.click_batch
        )
        return run_graph(self._graph(int(x.shape[1]), int(x.shape[0]) if static else None), x)


class CompiledModule:
    """A module of one fixed input shape run by OpenVINO or ONNX Runtime; called like it: ``net(x)``.

    ``shape``: the input's shape, e.g. (1, 3, 256, 256). x: a float32 tensor of that shape, or, when
    ``shape[0]`` is 1, a batch of B items of ``shape[1:]`` (run one item at a time); returns the
    module's first output as a float32 CPU tensor (the items' outputs concatenated along dimension 0).
    ``name``, with the weights' digest and the shape, names the cached export; the graph is compiled
    here, and shared by threads.
    """

    def __init__(self, module: nn.Module, spec: EngineSpec, shape: tuple[int, ...], name: str,
                 threads: int | None = None):  # fmt: skip
        if spec.engine not in ("openvino", "onnxruntime"):  # before the export, which takes seconds
            raise InputError(f"{spec.engine!r} is not a compiled engine")
        self.spec, self.shape, self.name = spec, tuple(int(n) for n in shape), name
        self.threads = threads or usable_threads()
        t = time.perf_counter()
        key = f"{name}_{weights_digest(module)}_" + "x".join(map(str, self.shape))
        self.graph = compile_graph(exported(module, key, torch.rand(self.shape)), spec, self.threads)
        log.info("%s ready in %.1f s", self, time.perf_counter() - t)

    def __repr__(self) -> str:
        return f"CompiledModule({self.name!r}, {self.spec.label}, {self.shape})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) == self.shape:
            return run_graph(self.graph, x)
        if self.shape[0] == 1 and tuple(x.shape[1:]) == self.shape[1:]:
            return torch.cat([run_graph(self.graph, x[i : i + 1]) for i in range(x.shape[0])])
        raise InputError(f"{self} takes input of shape {self.shape}, got {tuple(x.shape)}")


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
    return mask_agreement(reference, masks(net, slices, preset))


def mask_agreement(reference: list[np.ndarray], answers: list[np.ndarray]) -> dict[str, float]:
    """Mean and lowest Dice between paired bool masks (two empty masks agree: 1.0)."""
    pairs = zip(reference, answers, strict=True)
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

    def build(spec: EngineSpec) -> CompiledNet:
        return CompiledNet(model, spec).prepare(ks)

    def measure(net: CompiledNet) -> dict[str, float]:
        return {"ms": round(time_click(net, None, presets[0]), 1), **agreement(reference, net, slices, presets[0])}

    start = Choice(best, best_label, tried, best_dtype)
    return fastest_agreeing(start, candidates(engine), build, measure, model.record.get("name"))


def fastest_agreeing(start: Choice, specs: list[EngineSpec], build, measure, name: str | None = None) -> Choice:
    """``start`` (the PyTorch path, measured: ``start.tried[start.label]["ms"]``) or the fastest of
    the compiled ``specs`` that beats it and agrees with float32 PyTorch (mean Dice >= AGREEMENT).

    ``build(spec)`` makes a path's net; ``measure(net)`` returns ``{"ms", "mean_dice", "min_dice"}``.
    A path that fails to build or measure is recorded with its error and skipped. Every path's figures
    are added to the returned choice's ``tried``; ``name`` is the network's, for the log.
    """
    best = start
    tried = dict(start.tried)
    if not specs:
        log.warning("no compiled engine is installed for %s: it runs in PyTorch", name)
    for spec in specs:
        try:
            net = build(spec)
            entry = measure(net)
        except Exception as exc:  # an engine that cannot take this network is skipped, not fatal
            log.warning("%s cannot run %s: %s", spec.label, name, exc)
            tried[spec.label] = {"error": first_line(exc, 200)}
            continue
        tried[spec.label] = entry
        if entry["mean_dice"] >= AGREEMENT and entry["ms"] < tried[best.label]["ms"]:
            best = Choice(net, spec.label, tried)
    log.info("%s runs on %s (%s)", name, best.label, tried)
    return Choice(best.net, best.label, tried, best.dtype)


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
