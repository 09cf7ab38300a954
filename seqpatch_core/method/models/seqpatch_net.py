"""The sequential patch network: a small U-net applied to every patch, with ConvRNN units across time.

Input (B, K, 1, P, P) windowed patches ordered inside -> outside along a ray; output logits of the
same shape. Contracting path: three blocks of two 3x3 conv + ReLU (widths 32/64/128) with 2x2 max
pooling between them, applied to each patch (time-distributed). Bidirectional ConvRNN units sit at
the bottom (128 ch, P/4), middle (64 ch, P/2) and top (32 ch, P) levels. Expanding path: two blocks of
2x2 transposed conv, concatenation with that level's (recurrent) features, two 3x3 convs; a 1x1 head.

``rnn_levels`` chooses where units sit, for the paper's ablations:
``"none"`` (per-patch U-net, "Seq-FCN"-like), ``"bottom"`` (U-net-B), ``"bottom_middle"`` (U-net-BM)
and ``"all"`` (the paper's model).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from seqpatch_core.method.models.convrnn import CellType, ConvRNN

RnnLevels = Literal["none", "bottom", "bottom_middle", "all"]
_LEVELS = {"none": (), "bottom": ("bottom",), "bottom_middle": ("bottom", "middle"), "all": ("bottom", "middle", "top")}


class RayGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics span all K patches of one ray, not each patch alone.

    Plain GroupNorm on a 32 x 32 patch subtracts that patch's own mean, so a patch wholly inside an
    object and one wholly outside it can look alike: the intensity level that the inside -> outside
    comparison is about survives only at edges. Shared statistics per ray keep the levels of all
    patches of one sequence relative to each other. Same parameters (and state-dict keys) as
    ``nn.GroupNorm``.
    """

    def forward(self, x: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """x: (B*K, C, H, W) with the K patches of each ray adjacent; ``steps`` = K. Same shape out."""
        n, c, h, w = x.shape
        # (B, C, K*H, W): one "image" per ray, so the native group_norm kernel takes the statistics
        v = x.reshape(n // steps, steps, c, h, w).transpose(1, 2).reshape(n // steps, c, steps * h, w)
        y = F.group_norm(v, self.num_groups, self.weight, self.bias, self.eps)
        return y.reshape(n // steps, c, steps, h, w).transpose(1, 2).reshape(n, c, h, w)


class ConvBlock(nn.Sequential):
    """Conv, normalisation and ReLU layers; ``block(x, steps)`` tells :class:`RayGroupNorm` where
    rays start. Called as a module (so forward hooks on it fire) with the keys of ``nn.Sequential``."""

    def forward(self, x: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """x: (B*K, C, H, W) patches, the K of each ray adjacent; ``steps`` = K."""
        for layer in self:
            x = layer(x, steps) if isinstance(layer, RayGroupNorm) else layer(x)
        return x


def conv_block(cin: int, cout: int, norm: str) -> ConvBlock:
    """Two 3x3 convolutions with ReLU; 8-group normalisation before each ReLU when ``norm`` is
    "group" (per patch) or "ray" (:class:`RayGroupNorm`, statistics over the whole sequence)."""
    layers: list[nn.Module] = []
    for a, b in ((cin, cout), (cout, cout)):
        layers.append(nn.Conv2d(a, b, 3, padding=1))
        if norm == "group":
            layers.append(nn.GroupNorm(8, b))
        elif norm == "ray":
            layers.append(RayGroupNorm(8, b))
        elif norm != "none":
            raise ValueError(f"norm must be 'none', 'group' or 'ray', not {norm!r}")
        layers.append(nn.ReLU(inplace=True))
    return ConvBlock(*layers)


def kaiming_init(module: nn.Module) -> None:
    """He (fan-in, ReLU) initialisation for every (transposed) conv, zero biases.

    The network has no normalisation layers by default; with PyTorch's default init it stalls
    (early patches all "inside", the rest "outside") for a long time. He init trains at once.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SeqPatchNet(nn.Module):
    """Bidirectional gated ConvRNN U-net over patch sequences; see the module docstring."""

    def __init__(
        self,
        widths: tuple[int, int, int] = (32, 64, 128),
        rnn_levels: RnnLevels = "all",
        cell: CellType = "gmpu",
        bidirectional: bool = True,
        gate_kernel: int = 1,
        norm: str = "none",
    ):
        super().__init__()
        if rnn_levels not in _LEVELS:
            raise ValueError(f"rnn_levels must be one of {list(_LEVELS)}")
        w1, w2, w3 = widths
        self.enc1 = conv_block(1, w1, norm)
        self.enc2 = conv_block(w1, w2, norm)
        self.enc3 = conv_block(w2, w3, norm)
        self.pool = nn.MaxPool2d(2)
        levels = _LEVELS[rnn_levels]
        rnn = {"top": w1, "middle": w2, "bottom": w3}
        self.rnn = nn.ModuleDict(
            {lvl: ConvRNN(rnn[lvl], cell=cell, bidirectional=bidirectional, gate_kernel=gate_kernel) for lvl in levels}
        )
        self.up2 = nn.ConvTranspose2d(w3, w2, 2, stride=2)
        self.dec2 = conv_block(2 * w2, w2, norm)
        self.up1 = nn.ConvTranspose2d(w2, w1, 2, stride=2)
        self.dec1 = conv_block(2 * w1, w1, norm)
        self.head = nn.Conv2d(w1, 1, 1)
        kaiming_init(self)

    def _recur(self, level: str, feat: torch.Tensor, b: int, k: int) -> torch.Tensor:
        if level not in self.rnn:
            return feat
        _, c, h, w = feat.shape
        return self.rnn[level](feat.reshape(b, k, c, h, w)).reshape(b * k, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, K, 1, P, P) float, P divisible by 4 -> logits (B, K, 1, P, P)."""
        b, k, c, h, w = x.shape
        x = x.reshape(b * k, c, h, w)
        e1 = self.enc1(x, k)
        e2 = self.enc2(self.pool(e1), k)
        e3 = self.enc3(self.pool(e2), k)
        e3 = self._recur("bottom", e3, b, k)
        e2 = self._recur("middle", e2, b, k)
        e1 = self._recur("top", e1, b, k)
        d2 = self.dec2(torch.cat([self.up2(e3), e2], dim=1), k)
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1), k)
        return self.head(d1).reshape(b, k, 1, h, w)
