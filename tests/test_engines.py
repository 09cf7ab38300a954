"""Compiled inference paths (OpenVINO, ONNX Runtime): same logits and masks as PyTorch, chosen only
when they agree, shared by sessions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import dice
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference import engines
from seqpatch_core.inference.engines import CompiledNet, EngineSpec
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method.models import build_model

pytestmark = pytest.mark.slow  # exports and compiles graphs: about a minute in all

SPECS = [EngineSpec("onnxruntime"), EngineSpec("openvino")]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Exports go to a fresh folder per test, never to the user's cache."""
    monkeypatch.setenv("SEQPATCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {"seqpatch": build_model("seqpatch", widths=(8, 16, 32)), "unet": build_model("unet", base=8)}


def _installed(spec: EngineSpec) -> None:
    if not engines.installed(spec.engine):
        pytest.skip(f"{spec.engine} is not installed")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.engine)
@pytest.mark.parametrize("shape", [(3, 15, 1, 32, 32), (5, 8, 1, 32, 32)], ids=["K15", "K8"])
def test_compiled_seqpatch_gives_the_same_logits(nets, spec, shape, one_thread):
    _installed(spec)
    x = torch.rand(shape)
    with torch.inference_mode():
        ref = nets["seqpatch"](x)
    out = CompiledNet(nets["seqpatch"], spec, threads=1)(x)
    assert out.shape == ref.shape and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.engine)
@pytest.mark.parametrize("size", [48, 80])
def test_compiled_unet_takes_any_field_of_view(nets, spec, size, one_thread):
    _installed(spec)
    x = torch.rand(2, 1, size, size)
    with torch.inference_mode():
        ref = nets["unet"](x)
    out = CompiledNet(nets["unet"], spec, threads=1)(x)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-4, rtol=1e-4)


def test_exports_are_cached_on_disk(nets, tmp_path, one_thread):
    _installed(SPECS[0])
    CompiledNet(nets["seqpatch"], SPECS[0], threads=1).prepare([8, 15])
    files = sorted(p.name for p in (tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(files) == 2 and files[0].endswith("_k15.onnx") and files[1].endswith("_k8.onnx")
    # another net with other weights has its own graphs
    other = build_model("seqpatch", widths=(8, 16, 32))
    CompiledNet(other, SPECS[0], threads=1).prepare([8])
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 3


def test_unknown_engine_is_refused():
    with pytest.raises(InputError, match="unknown engine"):
        engines.candidates("tensorrt")


def test_choose_torch_is_the_model_itself(nets):
    choice = engines.choose(nets["seqpatch"], "torch")
    assert choice.net is nets["seqpatch"] and choice.label == "torch"


def test_choose_keeps_a_compiled_path_only_if_its_masks_agree(nets, monkeypatch, one_thread):
    """A path whose masks disagree with float32 PyTorch is never chosen, however fast it is."""
    _installed(SPECS[0])
    slices = engines.check_slices(2)

    class Inverted(CompiledNet):  # fast and wrong: every inside becomes outside
        def __call__(self, x):
            return -super().__call__(x)

    monkeypatch.setattr(engines, "CompiledNet", Inverted)
    monkeypatch.setattr(engines, "time_click", lambda net, *a, **k: 1.0 if isinstance(net, CompiledNet) else 100.0)
    choice = engines.choose(nets["seqpatch"], "onnxruntime", slices=slices, presets=("ct",))
    assert choice.label == "torch-float32" and choice.net is nets["seqpatch"]
    assert choice.tried["onnxruntime-float32"]["mean_dice"] < engines.AGREEMENT

    monkeypatch.setattr(engines, "CompiledNet", CompiledNet)
    choice = engines.choose(nets["seqpatch"], "onnxruntime", slices=slices, presets=("ct",))
    assert choice.label == "onnxruntime-float32" and isinstance(choice.net, CompiledNet)
    assert choice.tried["onnxruntime-float32"]["mean_dice"] >= engines.AGREEMENT


def test_predictor_on_a_compiled_engine_matches_torch_and_shares_it(nets, monkeypatch, one_thread):
    _installed(SPECS[0])
    # the check and the timing are tested above; here the compiled path is taken whatever its speed
    monkeypatch.setattr(engines, "time_click", lambda net, *a, **k: 1.0 if isinstance(net, CompiledNet) else 100.0)
    few = engines.check_slices(2)
    monkeypatch.setattr(engines, "check_slices", lambda n=4, **k: few)
    rng = np.random.default_rng(0)
    arr = rng.normal(0, 20, (3, 96, 96)).astype(np.float32)
    arr[:, 30:60, 35:65] += 300
    vol = volume_from_array(arr, spacing=(2.0, 1.0, 1.0), modality="CT")
    fast = Predictor(nets, "cpu", engine="onnxruntime")
    ref = Predictor(nets, "cpu")
    assert {e.label for e in fast.engines.values()} == {"onnxruntime-float32"}
    other = fast.session()
    assert other.nets is fast.nets and other.engines is fast.engines
    for p in (fast, ref, other):
        p.set_volume(vol)
    for method in ("seqpatch", "unet"):
        a = fast.predict((1, 45, 50), method)
        b = ref.predict((1, 45, 50), method)
        c = other.predict((1, 45, 50), method)
        assert dice(a.mask, b.mask) >= 0.995 if b.mask.any() else not a.mask.any()
        np.testing.assert_array_equal(a.mask, c.mask)
        np.testing.assert_allclose(a.likelihood, b.likelihood, atol=1e-3)


def test_a_network_whose_bfloat16_masks_disagree_runs_in_float32(nets, monkeypatch, one_thread):
    """engine auto on a bfloat16 machine: a PyTorch net whose bfloat16 masks disagree falls back to float32."""
    monkeypatch.setattr(engines, "candidates", lambda engine="auto": [])
    monkeypatch.setattr(engines, "agreement", lambda ref, net, slices, preset="ct": {"mean_dice": 0.9, "min_dice": 0.8})
    choice = engines.choose(nets["unet"], "auto", torch.bfloat16, slices=engines.check_slices(1), presets=("ct",))
    assert choice.label == "torch-float32" and choice.dtype is None and choice.net is nets["unet"]
    monkeypatch.setattr(engines, "choose", lambda m, e, d, **k: engines.Choice(m, "torch-float32", {}, None))
    pred = Predictor(nets, "cpu", dtype=torch.bfloat16, engine="auto")
    assert pred.net_dtypes == {"seqpatch": None, "unet": None}
    assert pred.session().net_dtypes is pred.net_dtypes


def test_engine_for_leaves_the_other_networks_in_pytorch(nets, monkeypatch):
    """The app compiles the compared pair only; other networks (the ablations) stay PyTorch modules."""
    monkeypatch.setattr(engines, "choose", lambda m, e, d, **k: engines.Choice("compiled", "onnxruntime-float32", {}))
    pred = Predictor({**nets, "ablation:x": nets["seqpatch"]}, "cpu", engine="auto", engine_for=("seqpatch", "unet"))
    assert pred.nets["seqpatch"] == pred.nets["unet"] == "compiled"
    assert pred.nets["ablation:x"] is nets["seqpatch"] and set(pred.engines) == {"seqpatch", "unet"}
