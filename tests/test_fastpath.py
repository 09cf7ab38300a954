"""The fast path against the straightforward one.

* The ConvRNN unit (input convolutions hoisted out of the loop, both directions in one grouped
  convolution, outputs written in place) equals a plain per-direction loop of the paper's equations
  (float32: max |difference| <= 1e-4).
* Reduced precision (bfloat16 autocast) is used only if its masks agree with float32: Dice >= 0.995
  on the bundled examples.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import example, needs_shipped_weights

from seqpatch_core.base.metrics import dice
from seqpatch_core.images.io import read_label, read_volume
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method.models import load_models
from seqpatch_core.method.models.convrnn import ConvRNN


def _direction_weights(conv, d, idx):
    """The weights of direction ``idx`` out of a conv whose outputs are grouped by direction."""
    n = conv.weight.shape[0] // d
    w = conv.weight[idx * n : (idx + 1) * n]
    b = None if conv.bias is None else conv.bias[idx * n : (idx + 1) * n]
    return w, b


def reference_gmpu(unit: ConvRNN, x: torch.Tensor) -> torch.Tensor:
    """Eq. (2)-(3) written plainly: one loop per direction, then align and fuse."""
    b, k, c, h, w = x.shape
    d = unit.dirs
    outs = []
    for idx in range(d):
        wxr, bxr = _direction_weights(unit.x_gates, d, idx)
        wxh, bxh = _direction_weights(unit.x_cand, d, idx)
        whr, _ = _direction_weights(unit.h_gates, d, idx)
        whh, _ = _direction_weights(unit.h_cand, d, idx)
        pad_g = unit.h_gates.padding
        hstate = torch.zeros(b, c, h, w)
        seq = [None] * k
        order = range(k) if idx == 0 else range(k - 1, -1, -1)
        for t in order:
            xt = x[:, t]
            r = torch.sigmoid(
                F.conv2d(xt, wxr, bxr, padding=unit.x_gates.padding) + F.conv2d(hstate, whr, padding=pad_g)
            )
            hstate = torch.relu(F.conv2d(xt, wxh, bxh, padding=1) + F.conv2d(r * hstate, whh, padding=1))
            seq[t] = hstate
        outs.append(torch.stack(seq, 1))
    y = torch.cat(outs, 2).reshape(b * k, d * c, h, w)
    return torch.relu(unit.fuse(y)).reshape(b, k, c, h, w)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("gate_kernel", [1, 3])
@pytest.mark.parametrize("b,k", [(2, 5), (1, 1)])
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_fast_convrnn_equals_plain_equations(bidirectional, gate_kernel, b, k, grad):
    """Both code paths: in-place outputs without autograd, unbind/stack with it."""
    torch.manual_seed(0)
    unit = ConvRNN(6, bidirectional=bidirectional, gate_kernel=gate_kernel)
    for p in unit.parameters():  # non-trivial biases too
        torch.nn.init.normal_(p, std=0.3)
    x = torch.rand(b, k, 6, 8, 8)
    with torch.set_grad_enabled(grad):
        fast = unit(x)
    with torch.no_grad():
        assert (fast - reference_gmpu(unit, x)).abs().max() <= 1e-4


@pytest.mark.slow
@needs_shipped_weights
def test_bfloat16_masks_agree_with_float32():
    image, label = example("lung2_ct_crop")
    vol = read_volume(image)
    lab = read_label(label, vol)
    z = int(np.argmax(lab.reshape(lab.shape[0], -1).sum(1)))
    ys, xs = np.nonzero(lab[z])
    point = (z, ys.mean(), xs.mean())
    models = load_models(["seqpatch", "unet"])
    full, half = Predictor(models, "cpu"), Predictor(models, "cpu", dtype=torch.bfloat16)
    for p in (full, half):
        p.set_volume(vol)
    for method in ("seqpatch", "unet"):
        a, b = full.predict(point, method).mask, half.predict(point, method).mask
        assert dice(a, b) >= 0.995, method
