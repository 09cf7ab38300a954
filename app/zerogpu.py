"""Hugging Face Spaces with ZeroGPU: the networks run inside ``spaces.GPU`` functions.

On a ZeroGPU Space (``SPACES_ZERO_GPU`` set) a GPU is attached only while a function decorated with
``spaces.GPU`` runs, and that function runs in a worker process forked from the server, its arguments
and results sent through a queue. So what crosses is small and plain: a model's *name* (the worker
has the models from the fork), the windowed working slice, the clicks and the ray preset; numpy
arrays come back. Sessions, volumes and models never cross.

Everywhere else (a laptop, a CPU Space, a GPU Space with a fixed GPU) nothing here is used: the
predictor calls :func:`~seqpatch_core.inference.predictor.run_network` itself, and ``spaces`` need not be
installed (``spaces.GPU`` would return the function unchanged there anyway).

Durations are sized to the work: a GPU call is one network batch, a click (16 rays × K patches, or
one U-net field of view) or a chunk of the robustness grid's clicks; the 3D object and the grid make
one call per slice or chunk. ZeroGPU queues a visitor by the duration asked for, so short ones help.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from app.readouts import direction_readouts, ray_features
from seqpatch_core.method.run import Runner, run_network

log = logging.getLogger(__name__)

#: Seconds asked of ZeroGPU per network batch: a base (the worker's start and the copy of the
#: weights to the GPU) plus a little per click in the batch, and for one ray's readouts.
BASE_S = 15
PER_CLICK_S = 1
READOUT_S = 10

#: The networks by name, set by :func:`setup` before the server starts (the forked worker has them).
_MODELS: dict[str, nn.Module] = {}


def on_zero_gpu() -> bool:
    """Whether this process runs on a ZeroGPU Space.

    The same test as ``spaces.config`` (0.51.3): ``SPACES_ZERO_GPU`` is "1", "t" or "true", any case.
    Both must agree: where ``spaces`` thinks it is off, its ``GPU`` returns the function unchanged and
    the networks would run in the main process, which has no GPU on ZeroGPU."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def gpu(duration: int | Callable[..., int]) -> Callable[[Callable], Callable]:
    """``spaces.GPU(duration=duration)`` on a ZeroGPU Space, else a decorator that changes nothing.

    ``duration``: seconds, or a function of the decorated function's arguments giving them. The
    function itself goes to ``spaces.GPU``, which wraps a generator function as a generator (it tests
    ``inspect.isgeneratorfunction``), so a generator stays one on ZeroGPU as it does elsewhere.
    Never fails for want of ``spaces``: without it the function is returned unchanged (logged).
    """
    if not on_zero_gpu():
        return lambda fn: fn
    try:
        import spaces
    except ImportError:
        log.warning("SPACES_ZERO_GPU is set but the 'spaces' package is missing: networks run without it")
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def _click_duration(name: str, image_w: Any, clicks_w: np.ndarray, *args: Any, **kwargs: Any) -> int:
    return BASE_S + PER_CLICK_S * len(np.asarray(clicks_w).reshape(-1, 2))


def _run_by_name(name: str, image_w, clicks_w, cfg, device, dtype) -> list:
    return run_network(_MODELS[name], image_w, clicks_w, cfg, device, dtype)


def _readouts_by_name(name: str, patches: np.ndarray) -> dict[str, np.ndarray]:
    return direction_readouts(_MODELS[name], patches)


def _features_by_name(name: str, patches: np.ndarray) -> dict:
    return ray_features(_MODELS[name], patches)


_gpu_run: Callable[..., list] | None = None
_gpu_readouts: Callable[..., dict] | None = None
_gpu_features: Callable[..., dict] | None = None


def setup(models: dict[str, nn.Module]) -> Runner | None:
    """On a ZeroGPU Space: keeps ``models`` by name for the GPU worker and returns the runner to give
    the :class:`~seqpatch_core.inference.predictor.Predictor`; elsewhere None (the predictor runs them itself)."""
    global _gpu_run, _gpu_readouts, _gpu_features
    if not on_zero_gpu():  # nothing runs through a GPU function (and nothing left from an earlier setup)
        _MODELS.clear()
        _gpu_run = _gpu_readouts = _gpu_features = None
        return None
    _MODELS.clear()
    _MODELS.update(models)
    _gpu_run = gpu(_click_duration)(_run_by_name)
    _gpu_readouts = gpu(READOUT_S)(_readouts_by_name)
    _gpu_features = gpu(READOUT_S)(_features_by_name)
    log.info("ZeroGPU: %d networks run inside spaces.GPU functions", len(models))
    return _gpu_run


def readouts(name: str, model: nn.Module, patches: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`app.readouts.direction_readouts` of the network ``name``, inside a GPU function on a
    ZeroGPU Space."""
    if _gpu_readouts is not None and name in _MODELS:
        return _gpu_readouts(name, patches)
    return direction_readouts(model, patches)


def features(name: str, model: nn.Module, patches: np.ndarray) -> dict:
    """:func:`app.readouts.ray_features` of the network ``name`` (inside a GPU function on ZeroGPU)."""
    if _gpu_features is not None and name in _MODELS:
        return _gpu_features(name, patches)
    return ray_features(model, patches)
