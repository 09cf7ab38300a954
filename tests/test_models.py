"""The sequential network, the ConvRNN units, the U-net and self-describing checkpoints."""

import json

import pytest
import torch

from seqpatch_core.base.errors import WeightsError
from seqpatch_core.method.models import MODELS, build_model, load_checkpoint, save_checkpoint
from seqpatch_core.method.models.convrnn import ConvRNN
from seqpatch_core.method.models.seqpatch_net import RayGroupNorm

SMALL = {"widths": (8, 16, 32)}


def test_default_size_matches_paper():
    m = build_model("seqpatch")
    n = sum(p.numel() for p in m.parameters())
    assert 1.2e6 <= n <= 1.6e6
    assert 5.2 <= n * 4 / 1e6 <= 5.5  # MB in float32, the paper's "5.2 MB"
    assert not m.training


@pytest.mark.parametrize("b,k", [(2, 15), (3, 1), (1, 8), (4, 12)])
def test_seqpatch_shapes(b, k):
    m = build_model("seqpatch", **SMALL)
    with torch.inference_mode():
        assert m(torch.rand(b, k, 1, 32, 32)).shape == (b, k, 1, 32, 32)


@pytest.mark.slow
def test_full_size_shapes():
    m = build_model("seqpatch")
    with torch.inference_mode():
        assert m(torch.rand(2, 15, 1, 32, 32)).shape == (2, 15, 1, 32, 32)
        assert m(torch.rand(3, 1, 1, 32, 32)).shape == (3, 1, 1, 32, 32)


@pytest.mark.parametrize("cell", ["gmpu", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_convrnn_shapes_any_batch_and_length(cell, bidirectional):
    u = ConvRNN(4, cell=cell, bidirectional=bidirectional)
    for b, k in [(1, 1), (3, 5)]:
        assert u(torch.rand(b, k, 4, 6, 6)).shape == (b, k, 4, 6, 6)


def test_gradients_reach_both_directions():
    u = ConvRNN(4)
    x = torch.rand(2, 5, 4, 6, 6, requires_grad=True)
    u(x).sum().backward()
    g = u.h_cand.weight.grad  # grouped conv: first half forward, second half backward
    assert g[:4].abs().sum() > 0 and g[4:].abs().sum() > 0
    assert u.x_cand.weight.grad[:4].abs().sum() > 0 and u.x_cand.weight.grad[4:].abs().sum() > 0


@pytest.mark.parametrize("name,sees_future", [("seqpatch", True), ("forward", False)])
def test_backward_direction_sees_the_future(name, sees_future):
    torch.manual_seed(0)
    m = build_model(name, **SMALL)
    x = torch.rand(1, 6, 1, 32, 32)
    y = x.clone()
    y[:, -1] = torch.rand(1, 1, 32, 32)  # change only the last patch
    with torch.inference_mode():
        first_a, first_b = m(x)[:, 0], m(y)[:, 0]
    changed = not torch.allclose(first_a, first_b, atol=1e-6)
    assert changed == sees_future


def test_alignment_backward_state_belongs_to_its_step():
    """Output t must pair forward(0..t) with backward(K-1..t): reversing the input reverses a
    bidirectional unit whose two directions share weights."""
    u = ConvRNN(3)
    with torch.no_grad():
        half = u.x_cand.weight.shape[0] // 2
        for conv in (u.x_gates, u.x_cand):
            conv.weight[half:] = conv.weight[:half]
            conv.bias[half:] = conv.bias[:half]
        for conv in (u.h_gates, u.h_cand):
            h = conv.weight.shape[0] // 2
            conv.weight[h:] = conv.weight[:h]
        # the fusion sums both directions symmetrically
        u.fuse.weight[:, 3:] = u.fuse.weight[:, :3]
    x = torch.rand(1, 5, 3, 4, 4)
    with torch.no_grad():
        assert torch.allclose(u(x.flip(1)), u(x).flip(1), atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_named_model_builds_and_runs(name):
    cfg = {"base": 8} if MODELS[name][0] == "unet" else SMALL
    m = build_model(name, **cfg)
    x = torch.rand(1, 1, 32, 32) if MODELS[name][0] == "unet" else torch.rand(1, 3, 1, 32, 32)
    with torch.inference_mode():
        assert m(x).shape == x.shape


def test_unet_default_builds():
    m = build_model("unet")
    with torch.inference_mode():
        assert m(torch.rand(1, 1, 160, 160)).shape == (1, 1, 160, 160)


def test_checkpoint_round_trip(tmp_path):
    m = build_model("seqpatch", **SMALL)
    path = tmp_path / "s.safetensors"
    save_checkpoint(m, path, dtype=torch.float32, validation={"dice": 0.5})
    m2 = build_model("seqpatch", checkpoint=path)
    x = torch.rand(2, 4, 1, 32, 32)
    with torch.inference_mode():
        assert torch.equal(m(x), m2(x))
    rec, _ = load_checkpoint(path)
    assert rec["config"]["widths"] == [8, 16, 32] and rec["validation"] == {"dice": 0.5}
    assert len(rec["sha256"]) == 64
    json.dumps(rec)


def test_float16_checkpoint_is_close(tmp_path):
    m = build_model("seqpatch", **SMALL)
    save_checkpoint(m, tmp_path / "h.safetensors")
    m2 = build_model("seqpatch", checkpoint=tmp_path / "h.safetensors")
    x = torch.rand(2, 4, 1, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(torch.sigmoid(m(x)), torch.sigmoid(m2(x)), atol=2e-3)


def test_mismatched_checkpoints_are_refused(tmp_path):
    save_checkpoint(build_model("seqpatch", **SMALL), tmp_path / "s.safetensors")
    save_checkpoint(build_model("unet", base=8), tmp_path / "u.safetensors")
    with pytest.raises(WeightsError, match="not a 'unet'"):
        build_model("unet", checkpoint=tmp_path / "s.safetensors")
    with pytest.raises(WeightsError, match="bidirectional"):
        build_model("forward", checkpoint=tmp_path / "s.safetensors")
    with pytest.raises(WeightsError, match="widths"):
        build_model("seqpatch", checkpoint=tmp_path / "s.safetensors", widths=(32, 64, 128))


def test_tampered_shapes_and_garbage_are_refused(tmp_path):
    from safetensors.torch import save_file

    m = build_model("seqpatch", **SMALL)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    state["head.weight"] = torch.zeros(1, 9, 1, 1)
    save_file(state, str(tmp_path / "t.safetensors"), metadata={"seqpatch": json.dumps(m.record)})
    with pytest.raises(WeightsError, match="does not fit"):
        build_model("seqpatch", checkpoint=tmp_path / "t.safetensors")
    (tmp_path / "g.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError) as e:
        build_model("seqpatch", checkpoint=tmp_path / "g.safetensors")
    assert "\n" not in str(e.value)
    with pytest.raises(WeightsError, match="not found"):
        build_model("seqpatch", checkpoint=tmp_path / "missing.safetensors")
    save_file({k: v for k, v in m.state_dict().items()}, str(tmp_path / "n.safetensors"))
    with pytest.raises(WeightsError, match="no SeqPatch record"):
        build_model("seqpatch", checkpoint=tmp_path / "n.safetensors")


@pytest.mark.parametrize("cell", ["gmpu", "gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_training_and_inference_paths_agree(cell, bidirectional):
    """The ConvRNN loop stacks its steps under autograd and writes them in place without it."""
    torch.manual_seed(1)
    u = ConvRNN(4, cell=cell, bidirectional=bidirectional)
    x = torch.rand(2, 5, 4, 6, 6)
    with torch.inference_mode():
        inf = u(x)
    torch.testing.assert_close(u(x).detach(), inf)


@pytest.mark.parametrize("b,k", [(1, 1), (2, 5), (3, 15)])
def test_ray_group_norm_pools_statistics_over_each_ray(b, k):
    """RayGroupNorm equals GroupNorm on each ray's K patches laid side by side (and per patch when K = 1)."""
    torch.manual_seed(0)
    norm = RayGroupNorm(4, 8)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    plain = torch.nn.GroupNorm(4, 8)
    plain.load_state_dict(norm.state_dict())
    x = torch.randn(b * k, 8, 6, 6) * torch.rand(b * k, 1, 1, 1) * 3 + torch.randn(b * k, 1, 1, 1)
    side_by_side = x.reshape(b, k, 8, 6, 6).permute(0, 2, 3, 1, 4).reshape(b, 8, 6, k * 6)
    ref = plain(side_by_side).reshape(b, 8, 6, k, 6).permute(0, 3, 1, 2, 4).reshape(b * k, 8, 6, 6)
    torch.testing.assert_close(norm(x, k), ref, atol=1e-5, rtol=1e-5)
    if k == 1:
        torch.testing.assert_close(norm(x, 1), plain(x), atol=1e-5, rtol=1e-5)


def test_ray_norm_keeps_levels_that_patch_norm_removes():
    """Two flat patches, one twice as bright: per-patch GroupNorm maps both to (almost) the same
    features, statistics over the ray keep them apart (the inside/outside level the method compares)."""
    x = torch.cat([torch.full((1, 1, 32, 32), 0.4), torch.full((1, 1, 32, 32), 0.8)])
    diff = {}
    for name in ("seqpatch_gn", "seqpatch_rgn"):
        torch.manual_seed(0)
        m = build_model(name)
        with torch.inference_mode():
            e = m.enc1(x, 2)
        diff[name] = (e[0] - e[1]).abs().max().item()
    assert diff["seqpatch_gn"] < 0.05 * diff["seqpatch_rgn"]


def test_ray_norm_checkpoint_loads_patch_norm_weights(tmp_path):
    """Same parameters as GroupNorm: a seqpatch_gn checkpoint initialises seqpatch_rgn (train --init)."""
    gn = build_model("seqpatch_gn", **SMALL)
    save_checkpoint(gn, tmp_path / "gn.safetensors")
    rgn = build_model("seqpatch_rgn", **SMALL)
    rgn.load_state_dict(build_model("seqpatch_rgn", checkpoint=tmp_path / "gn.safetensors").state_dict())
    with pytest.raises(WeightsError, match="norm must be"):
        build_model("seqpatch", norm="batch")
