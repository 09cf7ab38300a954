"""One ray read with one memory only (:func:`app.readouts.direction_readouts`), the ablation context
(:func:`app.ablations.ablation_context`) and the ZeroGPU decorator (:func:`app.zerogpu.gpu`)."""

from __future__ import annotations

import inspect
import json
import sys
import types

import numpy as np
import pytest
import torch

from app import zerogpu
from app.ablations import ABLATIONS_DIR, ablation_context, training_summary
from app.readouts import direction_readouts
from seqpatch_core.method.models import build_model

K, P = 6, 32


@pytest.fixture(scope="module")
def ray() -> np.ndarray:
    """One ray's windowed patches: (K, P, P) float32 in [0, 1], a bright disc fading outwards."""
    yy, xx = np.mgrid[:P, :P]
    rng = np.random.default_rng(0)
    out = [np.exp(-((yy - 16) ** 2 + (xx - 16 + 6 * k) ** 2) / 120.0) + 0.05 * rng.random((P, P)) for k in range(K)]
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


def plain(model: torch.nn.Module, patches: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.sigmoid(model(torch.from_numpy(patches)[None, :, None]))[0, :, 0].numpy()


# ----------------------------------------------------------------------------- direction readouts


def test_readouts_of_a_bidirectional_net(ray, one_thread):
    torch.manual_seed(0)
    net = build_model("seqpatch", widths=(8, 16, 32))
    before = plain(net, ray)
    r = direction_readouts(net, ray)
    assert set(r) == {"fused", "forward", "backward"}
    for v in r.values():
        assert v.shape == (K, P, P) and v.dtype == np.float32
        assert v.min() >= 0 and v.max() <= 1
    np.testing.assert_allclose(r["fused"], before, atol=1e-5)  # the unchanged network
    assert not np.allclose(r["forward"], r["backward"], atol=1e-4)
    assert not np.allclose(r["forward"], r["fused"], atol=1e-4)
    # the hooks are gone: a plain pass afterwards gives what it gave before
    assert all(not u.fuse._forward_pre_hooks for u in net.rnn.values())
    np.testing.assert_array_equal(plain(net, ray), before)


def test_hooks_are_removed_when_the_pass_fails(ray, one_thread):
    net = build_model("seqpatch", widths=(8, 16, 32))

    def boom(*_):
        raise RuntimeError("boom")

    h = net.head.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        direction_readouts(net, ray)
    h.remove()
    assert all(not u.fuse._forward_pre_hooks for u in net.rnn.values())


@pytest.mark.parametrize("name", ["forward", "seqfcn"])
def test_without_bidirectional_units_only_fused(name, ray, one_thread):
    net = build_model(name, widths=(8, 16, 32))
    r = direction_readouts(net, ray)
    assert set(r) == {"fused"}
    np.testing.assert_allclose(r["fused"], plain(net, ray), atol=1e-5)


def test_readouts_are_float32_under_a_bfloat16_autocast(ray, one_thread):
    net = build_model("seqpatch", widths=(8, 16, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = direction_readouts(net, ray)
    np.testing.assert_allclose(r["fused"], plain(net, ray), atol=1e-5)


def test_readouts_refuse_a_wrong_shape():
    with pytest.raises(ValueError, match=r"\(K, P, P\)"):
        direction_readouts(build_model("seqpatch", widths=(8, 16, 32)), np.zeros((K, P, P + 1), np.float32))


# ----------------------------------------------------------------------------- ablation context


def test_ablation_context_reads_each_record(tmp_path):
    recs = {
        "forward": {"training": {"minutes": 7.0, "device": "gpu X", "samples_seen": 8096},
                    "validation": {"synthetic_val_dice_best": 0.5973}},
        "seqpatch_paper": {"training": {"minutes": 7.0, "device": "gpu X", "samples_seen": 4256},
                           "validation": {"synthetic_val_dice_best": 0.5493}},
    }  # fmt: skip
    for name, rec in recs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(rec))
    text = ablation_context("ablation:forward", tmp_path)
    lines = [ln for ln in text.splitlines() if ln.startswith("- ")]
    assert len(lines) == 2 and "**forward**" in lines[0] and "**seqpatch_paper**" in lines[1]
    assert "7 min on gpu X, 8,096 slices seen" in lines[0] and "0.597" in lines[0]
    assert "4,256 slices seen" in lines[1] and "0.549" in lines[1]
    assert "One slice is one sample" in text and "benchmark figure is the one to trust" in text
    # the reference alone, and a variant without a record
    assert len([ln for ln in ablation_context("seqpatch_paper", tmp_path).splitlines() if ln[:2] == "- "]) == 1
    assert "no training record" in ablation_context("convgru", tmp_path)


def test_ablation_context_of_the_shipped_records():
    rec = json.loads((ABLATIONS_DIR / "seqfcn.json").read_text())
    text = ablation_context("ablation:seqfcn")
    assert f"{rec['validation']['synthetic_val_dice_best']:.3f}" in text
    assert f"{rec['training']['samples_seen']:,} slices seen" in text


def test_a_continued_training_says_so():
    model = types.SimpleNamespace(
        record={"training": {"minutes": 55.0, "device": "cpu", "init": "weights/seqpatch.safetensors"}}
    )
    assert training_summary(model) == ("–", "55 min on cpu (last phase; continued from seqpatch.safetensors)")


# ----------------------------------------------------------------------------- ZeroGPU decorator


def test_gpu_off_spaces_returns_the_function(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def gen():
        yield 1

    assert zerogpu.gpu(20)(gen) is gen and inspect.isgeneratorfunction(zerogpu.gpu(20)(gen))


def test_gpu_without_the_package_changes_nothing(monkeypatch):
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setitem(sys.modules, "spaces", None)  # "import spaces" raises ImportError

    def f(x):
        return x

    assert zerogpu.gpu(20)(f) is f


@pytest.mark.parametrize(("value", "on"), [("true", True), ("1", True), ("T", True), ("", False), ("false", False)])
def test_gpu_on_zero_gpu_applies_spaces_gpu(monkeypatch, value, on):
    seen = []
    fake = types.ModuleType("spaces")

    def GPU(duration=None):  # noqa: N802 - the real name
        def wrap(fn):
            seen.append((fn, duration))
            return fn

        return wrap

    fake.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setenv("SPACES_ZERO_GPU", value)

    def gen():
        yield 1

    zerogpu.gpu(120)(gen)
    # the generator function itself reaches spaces.GPU, which wraps generators as generators
    assert seen == ([(gen, 120)] if on else [])
