"""ZeroGPU support (:mod:`app.zerogpu`): nothing changes off Spaces; on a ZeroGPU Space the networks
run inside ``spaces.GPU`` functions that receive a model's name and arrays, never a session."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from helpers import BrightNet, sphere_arrays

from app import zerogpu
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference.predictor import Predictor


def test_off_spaces_nothing_is_wrapped(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def f(x):
        return x

    assert zerogpu.gpu(20)(f) is f
    assert zerogpu.setup({"seqpatch": BrightNet()}) is None


@pytest.fixture()
def fake_spaces(monkeypatch):
    """A stand-in ``spaces`` package whose GPU decorator records each call's duration and pickles the
    arguments, as the real one does to send them to its worker process."""
    import pickle

    calls = []
    mod = types.ModuleType("spaces")

    def GPU(duration=None):  # noqa: N802 - the real name
        def wrap(fn):
            def run(*args, **kwargs):
                args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))
                calls.append((fn.__name__, duration(*args, **kwargs) if callable(duration) else duration))
                return fn(*args, **kwargs)

            return run

        return wrap

    mod.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", mod)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    yield calls
    monkeypatch.delenv("SPACES_ZERO_GPU")
    zerogpu.setup({})  # back to nothing wrapped (the env var is gone)


def test_on_zero_gpu_networks_run_in_gpu_functions_by_name(fake_spaces):
    models = {"seqpatch": BrightNet("seqpatch"), "unet": BrightNet("unet")}
    runner = zerogpu.setup(models)
    assert runner is not None
    image, _ = sphere_arrays()
    pred = Predictor(models, device="cpu", runner=runner)
    pred.set_volume(volume_from_array(image, spacing=(2.0, 1.0, 1.0), modality="CT"))
    plain = Predictor(models, device="cpu")
    plain.set_volume(pred.volume)
    for method in ("seqpatch", "unet"):
        a = pred.predict_many(6, [(32.0, 30.0), (30.0, 28.0)], method)
        b = plain.predict_many(6, [(32.0, 30.0), (30.0, 28.0)], method)
        for r, q in zip(a, b, strict=True):
            assert np.array_equal(r.mask, q.mask)
    # two batches of two clicks, each sized to its work; a session's predictor keeps the runner
    assert fake_spaces == [("_run_by_name", zerogpu.BASE_S + 2 * zerogpu.PER_CLICK_S)] * 2
    assert pred.session().runner is runner
