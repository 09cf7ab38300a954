"""Convolutional recurrent units over a sequence of patch feature maps.

The paper's gated memory propagation unit (GMPU), eq. (2)-(3)::

    r_t = sigmoid(W_xr * X_t + W_hr * H_{t-1} + b_r)
    H_t = relu(W_xh * X_t + W_hh * (r_t o H_{t-1}) + b_h)

``W_xh`` and ``W_hh`` are 3x3 convolutions. The gate's kernels are 1x1 by default, as in the
paper's released code: with them the full network has the paper's 1.37 M parameters (3x3 gates
give about 1.7 M); ``gate_kernel=3`` is available. The gate kernels are ``W_xr`` and ``W_hr``
(and the GRU's update gate). ConvGRU and ConvLSTM cells are here for the
ablations of the paper's Table 2.

Fast path: the input-to-hidden convolutions of all time steps run at once, outside the recurrence;
only the hidden-to-hidden part is sequential. The forward and the backward direction run together
as one grouped convolution (groups = 2) over their concatenated states.

The bidirectional unit aligns both directions per time step (output t pairs the forward state
after steps 0..t with the backward state after steps K-1..t; the released code paired forward t
with backward K-1-t, a bug) and fuses them with a 1x1 convolution (2C -> C) and ReLU.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

CellType = Literal["gmpu", "gru", "lstm"]

# x->gates channels multiplier and h->gates multiplier (gates convolved from H directly)
_GATES = {"gmpu": (2, 1), "gru": (3, 2), "lstm": (4, 4)}


class ConvRNN(nn.Module):
    """A (bi)directional convolutional RNN over (B, K, C, H, W) sequences.

    Args:
        channels: C, for input, hidden state and output alike.
        cell: "gmpu" (the paper's unit), "gru" or "lstm".
        bidirectional: run a backward cell too and fuse per time step.
        gate_kernel: kernel of the hidden-to-gate convolution(s) (1 as in the released code, or 3).
    """

    def __init__(self, channels: int, cell: CellType = "gmpu", bidirectional: bool = True, gate_kernel: int = 1):
        super().__init__()
        if cell not in _GATES:
            raise ValueError(f"unknown cell {cell!r}")
        self.channels = channels
        self.cell = cell
        self.bidirectional = bidirectional
        self.dirs = 2 if bidirectional else 1
        c, d = channels, self.dirs
        gx, gh = _GATES[cell]
        # input -> gates and candidate for both directions at once (outside the recurrence)
        if cell == "lstm":
            self.x_gates = nn.Conv2d(c, d * gx * c, 3, padding=1)
            self.x_cand = None
        else:
            self.x_gates = nn.Conv2d(c, d * (gx - 1) * c, gate_kernel, padding=gate_kernel // 2)
            self.x_cand = nn.Conv2d(c, d * c, 3, padding=1)
        if cell == "lstm":
            self.h_gates = nn.Conv2d(d * c, d * gh * c, 3, padding=1, groups=d, bias=False)
            self.h_cand = None
        else:
            # gates from H (1x1 in the released code); candidate from r o H (3x3)
            self.h_gates = nn.Conv2d(d * c, d * gh * c, gate_kernel, padding=gate_kernel // 2, groups=d, bias=False)
            self.h_cand = nn.Conv2d(d * c, d * c, 3, padding=1, groups=d, bias=False)
        self.fuse = nn.Conv2d(d * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, K, C, H, W) -> (B, K, C, H, W)."""
        b, k, c, h, w = x.shape
        d = self.dirs
        flat = x.reshape(b * k, c, h, w)
        # per time step views (no copies): gates (B, D, G, C, H, W) and candidate (B, D, C, H, W)
        xg = self.x_gates(flat).reshape(b, k, d, -1, c, h, w).unbind(1)
        xc = self.x_cand(flat).reshape(b, k, d, c, h, w).unbind(1) if self.x_cand is not None else None

        def inputs(t: int):
            if d == 1:
                return xg[t], (xc[t] if xc is not None else None)
            # the backward direction reads time reversed: loop step t pairs forward time t with
            # backward time K-1-t (one small copy per step, instead of flipping whole tensors)
            g = torch.stack([xg[t][:, 0], xg[k - 1 - t][:, 1]], 1)
            return g, (torch.stack([xc[t][:, 0], xc[k - 1 - t][:, 1]], 1) if xc is not None else None)

        state = x.new_zeros(b, d * c, h, w)  # zeros shaped like the input: any B, any device
        cell_state = x.new_zeros(b, d * c, h, w) if self.cell == "lstm" else None
        if torch.is_grad_enabled():
            # training: unbind/stack have cheap backward passes; indexing a step out of a whole-sequence
            # tensor, or writing into a preallocated output, would make autograd fill and add a
            # full-size gradient per step
            fwd, bwd = [], []
            for t in range(k):
                state, cell_state = self._step(*inputs(t), state, cell_state)
                new = state.reshape(b, d, c, h, w)
                fwd.append(new[:, 0])
                if d == 2:
                    bwd.append(new[:, 1])
            # the backward state after reading steps K-1..K-1-t belongs to time K-1-t
            out = torch.stack([torch.stack(fwd, 1)] + ([torch.stack(bwd[::-1], 1)] if d == 2 else []), 2)
        else:
            # inference: write each step into one preallocated output (no per-step copies kept alive)
            out = x.new_empty(b, k, d, c, h, w)
            for t in range(k):
                state, cell_state = self._step(*inputs(t), state, cell_state)
                new = state.reshape(b, d, c, h, w)
                out[:, t, 0] = new[:, 0]
                if d == 2:
                    out[:, k - 1 - t, 1] = new[:, 1]
        y = torch.relu(self.fuse(out.reshape(b * k, d * c, h, w)))
        return y.reshape(b, k, c, h, w)

    def _step(self, xg, xc, state, cell_state):
        """One step of both directions. xg: input gate terms (B, D, G, C, H, W); xc: input candidate
        term (B, D, C, H, W), None for the LSTM; state, cell_state: (B, D*C, H, W)."""
        b, d, _, c, h, w = xg.shape
        hg = self.h_gates(state).reshape(b, d, -1, c, h, w)
        if self.cell == "gmpu":
            r = torch.sigmoid(xg[:, :, 0] + hg[:, :, 0]).reshape(b, d * c, h, w)
            cand = self.h_cand(r * state).reshape(b, d, c, h, w)
            new = torch.relu(xc + cand)
            return new.reshape(b, d * c, h, w), None
        if self.cell == "gru":
            z = torch.sigmoid(xg[:, :, 0] + hg[:, :, 0])
            r = torch.sigmoid(xg[:, :, 1] + hg[:, :, 1]).reshape(b, d * c, h, w)
            cand = torch.tanh(xc + self.h_cand(r * state).reshape(b, d, c, h, w))
            prev = state.reshape(b, d, c, h, w)
            return ((1 - z) * prev + z * cand).reshape(b, d * c, h, w), None
        # lstm
        i = torch.sigmoid(xg[:, :, 0] + hg[:, :, 0])
        f = torch.sigmoid(xg[:, :, 1] + hg[:, :, 1])
        o = torch.sigmoid(xg[:, :, 2] + hg[:, :, 2])
        g = torch.tanh(xg[:, :, 3] + hg[:, :, 3])
        cprev = cell_state.reshape(b, d, c, h, w)
        cnew = f * cprev + i * g
        hnew = o * torch.tanh(cnew)
        return hnew.reshape(b, d * c, h, w), cnew.reshape(b, d * c, h, w)
