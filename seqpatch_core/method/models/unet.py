"""The image-based baseline: a standard 2D U-net (Ronneberger et al. 2015).

Four 2x2 max poolings, two 3x3 convolutions per level, transposed-conv upsampling and skip
concatenation; widths ``base * (1, 2, 4, 8, 16)``. It segments the square field of view that the rays
cover, centred on the click and resampled to the same working spacing, with no click channel: the
paper's image-based baseline, given the same region. Input (B, 1, S, S) with S divisible by 16;
output logits (B, 1, S, S).
"""

from __future__ import annotations

import torch
from torch import nn

from seqpatch_core.method.models.seqpatch_net import conv_block, kaiming_init


class UNet(nn.Module):
    """Standard 2D U-net; ``norm`` is "none" (as in 2015), "group" or "batch"."""

    def __init__(self, base: int = 32, depth: int = 4, norm: str = "group"):
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = 1
        for w in widths:
            self.down.append(self._block(cin, w, norm))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList()
        self.dec = nn.ModuleList()
        for w_hi, w_lo in zip(widths[::-1][:-1], widths[::-1][1:], strict=True):
            self.ups.append(nn.ConvTranspose2d(w_hi, w_lo, 2, stride=2))
            self.dec.append(self._block(2 * w_lo, w_lo, norm))
        self.head = nn.Conv2d(widths[0], 1, 1)
        kaiming_init(self)

    @staticmethod
    def _block(cin: int, cout: int, norm: str) -> nn.Sequential:
        if norm == "batch":
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )
        return conv_block(cin, cout, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, S, S) -> logits (B, 1, S, S)."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.ups, self.dec, strict=True):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
