"""Shared fixtures: small random-weight checkpoints and one torch thread.

The tests check plumbing (shapes, geometry, sessions, errors), not accuracy, so the networks are
narrow versions of the shipped ones: seconds on a 2-core CPU instead of minutes.

Shared constants and helpers (project root, bundled examples, free ports, the shipped-weights skip)
are in ``helpers.py``. Quick check: ``pytest -m "not slow"``; every ``browser`` test is also ``slow``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from seqpatch_core.method.models import build_model, save_checkpoint

# Before any test module imports gradio (conftest is imported first): no usage analytics from test servers.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

#: Narrow configs of the two compared networks.
SMALL = {"seqpatch": {"widths": (8, 16, 32)}, "unet": {"base": 8}}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """A browser test is always a slow one, so that ``-m "not slow"`` never starts Chromium."""
    for item in items:
        if item.get_closest_marker("browser") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def one_thread():
    """Two shared cores: one intra-op thread is faster than two fighting for them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints of the SMALL networks: {"seqpatch": path, "unet": path}."""
    d = tmp_path_factory.mktemp("small_weights")
    torch.manual_seed(0)
    out = {}
    for name, cfg in SMALL.items():
        out[name] = d / f"{name}.safetensors"
        save_checkpoint(build_model(name, **cfg), out[name])
    return out


@pytest.fixture(scope="session")
def small_models(small_weights) -> dict:
    """The SMALL networks loaded from their checkpoints (a fresh dict each use is up to the caller)."""
    return {name: build_model(name, checkpoint=path) for name, path in small_weights.items()}

