"""Compiled inference paths (OpenVINO, ONNX Runtime): same logits and masks as PyTorch, chosen only
when they agree, shared by sessions; LiteMedSAM's image encoder on those paths, same box answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import example

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import dice
from seqpatch_core.images.io import read_label, read_volume
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference import boxes, engines
from seqpatch_core.inference.boxes import BoxPredictor
from seqpatch_core.inference.engines import CompiledNet, EngineSpec
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method.models import build_model
from seqpatch_core.method.models.litemedsam import LITEMEDSAM_WEIGHTS, load_litemedsam

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


# ----------------------------------------------------------------------------- fixed-shape modules


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.engine)
def test_compiled_module_takes_its_shape_or_a_batch_of_its_items(spec, tmp_path, one_thread):
    _installed(spec)
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
    net = engines.CompiledModule(conv, spec, (1, 3, 16, 16), "conv", threads=1)
    x = torch.rand(3, 3, 16, 16)
    with torch.inference_mode():
        ref = conv(x)
    np.testing.assert_allclose(net(x[:1]).numpy(), ref[:1].numpy(), atol=1e-5)
    np.testing.assert_allclose(net(x).numpy(), ref.numpy(), atol=1e-5)  # item by item
    with pytest.raises(InputError, match="takes input of shape"):
        net(torch.rand(1, 3, 8, 8))
    (path,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    assert path.name.startswith("conv_") and path.name.endswith("_1x3x16x16.onnx")
    with pytest.raises(InputError, match="not a compiled engine"):
        engines.CompiledModule(conv, EngineSpec("torch"), (1, 3, 16, 16), "conv")


# ----------------------------------------------------------------------------- LiteMedSAM's encoder

needs_litemedsam = pytest.mark.skipif(not LITEMEDSAM_WEIGHTS.is_file(), reason="weights/litemedsam.safetensors absent")
#: the compiled encoder paths that must agree with float32 PyTorch (bfloat16 need not: it is checked
#: at start, and the choice test below covers a path that disagrees)
FLOAT32_SPECS = [EngineSpec("onnxruntime"), EngineSpec("openvino")]


@pytest.fixture(scope="module")
def litemedsam():
    return load_litemedsam()


@pytest.fixture(scope="module")
def encoder_cache(tmp_path_factory):
    """One export of the encoder for this module's tests (about 10 s each), outside the user's cache."""
    return tmp_path_factory.mktemp("encoder_cache")


@pytest.fixture(scope="module")
def on_paths(litemedsam, encoder_cache):
    """spec label -> the shipped LiteMedSAM with its encoder compiled on that path (on first use)."""
    made = {}

    def get(spec: EngineSpec):
        _installed(spec)
        if spec.label not in made:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("SEQPATCH_CACHE", str(encoder_cache))
                made[spec.label] = boxes.on_path(litemedsam, spec)
        return made[spec.label]

    return get


def _lung2():
    image, label = example("lung2_ct_crop")
    vol = read_volume(image)
    lab = read_label(label, vol) != 0
    return vol, lab


@needs_litemedsam
@pytest.mark.parametrize("spec", FLOAT32_SPECS, ids=lambda s: s.label)
def test_compiled_encoder_agrees_with_torch(litemedsam, on_paths, spec):
    """Same embedding to float32 rounding, and the same box answers on the check slices."""
    fast = on_paths(spec)
    assert boxes.encoder_path(fast) == spec.label and boxes.encoder_path(litemedsam) == "torch-float32"
    assert fast.state_dict().keys() == litemedsam.state_dict().keys()  # shared weights, nothing added
    x = torch.rand(boxes.ENCODER_INPUT)
    with torch.inference_mode():
        ref, out = litemedsam.encode(x), fast.encode(x)
    assert out.shape == ref.shape == (1, 256, 64, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=1e-3)
    slices = engines.check_slices(2)
    reference, _ = boxes.check_answers(litemedsam, slices)
    answers, ms = boxes.check_answers(fast, slices)
    assert len(answers) == 2 * len(boxes.CHECK_MARGINS) and len(ms) == 2 and min(ms) > 0
    assert engines.mask_agreement(reference, answers)["min_dice"] >= engines.AGREEMENT


@needs_litemedsam
@pytest.mark.parametrize("spec", FLOAT32_SPECS, ids=lambda s: s.label)
def test_box_predictor_on_a_compiled_encoder_gives_the_same_answers(litemedsam, on_paths, spec):
    vol, lab = _lung2()
    z = int(np.argmax(lab.reshape(lab.shape[0], -1).sum(1)))
    tight = boxes.box_around(lab[z], z).as_list()
    wide = boxes.box_around(lab[z], z, margin=6).as_list()
    ref, fast = BoxPredictor(litemedsam), BoxPredictor(on_paths(spec))
    assert fast.encoder_path == spec.label
    for p in (ref, fast):
        p.set_volume(vol)
    a, b = ref.predict_many([tight, wide]), fast.predict_many([tight, wide])
    assert [r.cached for r in b] == [False, True] and fast.encoder_runs == 1
    for r, s in zip(a, b, strict=True):
        assert dice(r.mask, s.mask) >= engines.AGREEMENT
        np.testing.assert_allclose(s.prob, r.prob, atol=1e-2)
    # a session's fresh predictor (app.session rebuilds one from the shared model) keeps the path
    again = BoxPredictor(fast.model, fast.device)
    again.set_volume(vol)
    assert again.encoder_path == spec.label and np.array_equal(again.predict(tight).mask, b[0].mask)


class _StandIn:
    """A compiled path's stand-in: the PyTorch encoder itself (agrees) or on the image mirrored (does not)."""

    def __init__(self, model, spec: EngineSpec, mirrored: bool):
        self.model, self.spec, self.mirrored = model, spec, mirrored

    def __call__(self, x):
        with torch.inference_mode():
            return self.model.image_encoder(torch.flip(x, [-1]) if self.mirrored else x)


@needs_litemedsam
def test_choose_encoder_keeps_a_path_only_if_its_answers_agree(litemedsam, monkeypatch):
    """A fast path whose box answers disagree is refused; the agreeing one is taken; torch is the model."""
    assert boxes.choose_encoder(litemedsam, "torch").net is litemedsam
    bad, good = EngineSpec("openvino", "bfloat16"), EngineSpec("onnxruntime")
    monkeypatch.setattr(engines, "candidates", lambda engine="auto": [bad, good])
    monkeypatch.setattr(
        boxes, "on_path", lambda m, spec: boxes._EncoderOnPath(m, _StandIn(m, spec, mirrored=spec == bad))
    )
    real = boxes.check_answers

    def fast_stand_ins(model, slices):  # the stand-ins are PyTorch: only their times are made up
        answers, ms = real(model, slices)
        return answers, [1.0 if boxes.encoder_path(model) != "torch-float32" else 100.0] * len(ms)

    monkeypatch.setattr(boxes, "check_answers", fast_stand_ins)
    choice = boxes.choose_encoder(litemedsam, "auto", slices=engines.check_slices(2))
    assert choice.label == "onnxruntime-float32" and boxes.encoder_path(choice.net) == "onnxruntime-float32"
    assert choice.tried["openvino-bfloat16"]["mean_dice"] < engines.AGREEMENT
    assert choice.tried["onnxruntime-float32"]["mean_dice"] == 1.0
    assert choice.tried["torch-float32"]["ms"] == 100.0
    monkeypatch.setattr(engines, "candidates", lambda engine="auto": [bad])
    choice = boxes.choose_encoder(litemedsam, "openvino", slices=engines.check_slices(2))
    assert choice.label == "torch-float32" and choice.net is litemedsam


_SIGNAL_AFTER_DROPPED_GRAPHS = """
import gc, signal, subprocess, sys
from pathlib import Path
import torch
from seqpatch_core.inference.engines import EngineSpec, compile_graph, export_onnx

path = export_onnx(torch.nn.ReLU(), torch.rand(1, 4), Path(sys.argv[1]) / "relu.onnx")
first = compile_graph(path, EngineSpec("openvino", "float32"), 1)
second = compile_graph(path, EngineSpec("openvino", "bfloat16"), 1)
del first; gc.collect()  # dropped in the order a refused path is: not the reverse of the making
del second; gc.collect()
signal.signal(signal.SIGCHLD, lambda *_: None)  # as PyTorch's DataLoader sets it
for _ in range(3):
    subprocess.run([sys.executable, "-c", "pass"], check=True)
print("alive")
"""


def test_signals_are_handled_after_compiled_graphs_are_dropped(tmp_path):
    """Graphs compiled and dropped in any order leave the process able to take a signal: with a Core
    per graph, the CPU plugins' signal stacks were unmapped under the main thread, and the next SIGCHLD
    ended the process (CI's pytest died silently with exit 139)."""
    import subprocess
    import sys

    _installed(EngineSpec("openvino"))
    p = subprocess.run(
        [sys.executable, "-c", _SIGNAL_AFTER_DROPPED_GRAPHS, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0 and "alive" in p.stdout, (p.returncode, p.stderr[-2000:])
