"""Network readouts for the teaching views: what the sequential patch network computes along one ray.

Two small runs of a shared network on one ray's K patches: its feature maps per level (the paper's
Fig. 6; :func:`ray_features`, drawn by :func:`render_feature_strips`) and its likelihoods with only the
forward or only the backward memory (:func:`direction_readouts`).

:func:`ray_features` runs the K patches through a :class:`~seqpatch_core.method.models.SeqPatchNet`
with forward hooks on its recurrent units ``rnn["bottom"|"middle"|"top"]`` (and on the encoder block
feeding each level, ``enc3``/``enc2``/``enc1``), and returns per level the channel mean per time step
before and after the recurrent unit. A level without a unit (the ablations "seqfcn", "bottom",
"bottom_middle") shows its encoder features twice. :func:`render_feature_strips` draws them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from app.drawing import colour_table, outlined_text, ray_colour

#: Level name -> the encoder block whose output that level's recurrent unit reads.
LEVELS = {"bottom": "enc3", "middle": "enc2", "top": "enc1"}


@dataclass
class LevelFeatures:
    """One level's features along a ray.

    before, after: (K, H_l, W_l) float32, the channel mean per time step of the encoder output and
    of the recurrent unit's output (``after is before`` when the level has no unit); source: the
    module the ``after`` maps come from (``"rnn.bottom"`` or ``"enc3"``...); channels: C at that level.
    """

    level: str
    source: str
    before: np.ndarray
    after: np.ndarray
    channels: int


def ray_features(model: nn.Module, patches: np.ndarray) -> dict[str, LevelFeatures]:
    """Features of one ray at the bottom, middle and top levels.

    model: a SeqPatchNet (with ``enc1..3`` and the ``rnn`` ModuleDict); patches: (K, P, P) windowed
    patches in [0, 1], inside → outside (``Result.patches[ray]``). Returns ``{level: LevelFeatures}``
    in the order bottom, middle, top. The hooks are removed again, whatever happens.
    """
    patches = np.asarray(patches, dtype=np.float32)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"one ray's patches must be (K, P, P), got {patches.shape}")
    k = patches.shape[0]
    captured: dict[str, torch.Tensor] = {}

    owner = threading.get_ident()

    def keep(name: str):
        def hook(_module, _inputs, output):
            # the model is shared by every session: only this call's outputs, not another thread's
            if threading.get_ident() == owner:
                captured[name] = output.detach()

        return hook

    rnn = getattr(model, "rnn", {})
    handles = []
    try:
        for level, enc in LEVELS.items():
            handles.append(getattr(model, enc).register_forward_hook(keep(enc)))
            if level in rnn:
                handles.append(rnn[level].register_forward_hook(keep(f"rnn.{level}")))
        device = next(model.parameters()).device
        x = torch.from_numpy(patches).to(device)[None, :, None]  # (1, K, 1, P, P)
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()

    def per_step(t: torch.Tensor) -> tuple[np.ndarray, int]:
        t = t.float()
        c, h, w = t.shape[-3:]
        return t.reshape(k, c, h, w).mean(dim=1).cpu().numpy(), c

    out = {}
    for level, enc in LEVELS.items():
        before, c = per_step(captured[enc])
        key = f"rnn.{level}"
        after = per_step(captured[key])[0] if key in captured else before
        out[level] = LevelFeatures(level, key if key in captured else enc, before, after, c)
    return out


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Maps → [0, 1] with one scale for the whole strip (so time steps can be compared)."""
    lo, hi = np.percentile(maps, 1), np.percentile(maps, 99)
    return np.clip((maps - lo) / max(hi - lo, 1e-8), 0.0, 1.0)


def render_feature_strips(
    patches: np.ndarray,
    features: dict[str, LevelFeatures],
    likelihoods: np.ndarray | None = None,
    *,
    ray: int = 0,
    n_rays: int = 16,
    cell: int = 56,
    cmap: str = "viridis",
) -> np.ndarray:
    """One row per quantity, K columns (inside → outside): the input patches, for each level the
    channel mean before and after its recurrent unit, and the output likelihoods. RGB uint8.

    Each feature row has one colour scale across its K steps (1st–99th percentile).
    """
    k = patches.shape[0]
    grey = _to_u8(_cells(np.clip(patches, 0, 1), cell))
    rows: list[tuple[str, np.ndarray]] = [("input patch", np.repeat(grey[..., None], 3, -1))]
    lut = colour_table(cmap)

    def colour(maps: np.ndarray) -> np.ndarray:
        return lut[_to_u8(_cells(_normalise(maps), cell))]

    for f in features.values():
        size = f"{f.after.shape[1]}x{f.after.shape[2]}, {f.channels} ch"
        if f.source.startswith("rnn"):
            rows.append((f"{f.level}: encoder\n({size})", colour(f.before)))
            rows.append((f"{f.level}: after\nbi-RNN", colour(f.after)))
        else:
            rows.append((f"{f.level}: encoder\n(no RNN here)", colour(f.after)))
    if likelihoods is not None:
        mag = colour_table("magma")
        rows.append(("likelihood", mag[_to_u8(_cells(np.clip(likelihoods, 0, 1), cell))]))
    left, top, pad = 128, 26, 4
    width = left + k * (cell + pad) + pad
    height = top + len(rows) * (cell + pad) + 20
    canvas = np.full((height, width, 3), 24, dtype=np.uint8)
    for r, (_, img) in enumerate(rows):
        y0 = top + r * (cell + pad)
        for j in range(k):
            x0 = left + j * (cell + pad)
            canvas[y0 : y0 + cell, x0 : x0 + cell] = img[j]
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    outlined_text(
        draw,
        (8, 5),
        f"ray {ray}: channel mean per time step k = 0 … {k - 1} (inside -> outside)",
        13,
        fill=ray_colour(ray, n_rays),
    )
    for r, (name, _) in enumerate(rows):
        y0 = top + r * (cell + pad)
        lines = name.split("\n")
        for i, line in enumerate(lines):
            outlined_text(draw, (6, y0 + cell // 2 - 8 * len(lines) + 15 * i), line, 11)
    for j in range(k):
        x0 = left + j * (cell + pad) + cell // 2 - 4
        outlined_text(draw, (x0, height - 18), str(j), 11, (200, 200, 200))
    return np.asarray(pil)


def _to_u8(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _cells(maps: np.ndarray, cell: int) -> np.ndarray:
    """(K, h, w) → (K, cell, cell) nearest-neighbour resize (small maps stay blocky, as they are)."""
    out = np.empty((maps.shape[0], cell, cell), dtype=np.float32)
    for j, m in enumerate(maps):
        iy = np.minimum((np.arange(cell) * m.shape[0]) // cell, m.shape[0] - 1)
        ix = np.minimum((np.arange(cell) * m.shape[1]) // cell, m.shape[1] - 1)
        out[j] = m[np.ix_(iy, ix)]
    return out


def direction_readouts(model: nn.Module, patches: np.ndarray) -> dict[str, np.ndarray]:
    """What the same network says along one ray with both memories, with only the forward one and
    with only the backward one.

    model: a SeqPatchNet; patches: (K, P, P) windowed patches in [0, 1], inside → outside. Returns
    ``{"fused", "forward", "backward"}`` → (K, P, P) float32 likelihoods (sigmoid of the logits).
    "forward" zeroes the backward half of every bidirectional unit's state just before its 1×1 fusion
    (``rnn[level].fuse`` reads the forward channels first, then the backward ones), "backward" the
    forward half: a readout of one direction through the trained fusion, not a separately trained net.
    A network without bidirectional units (the ablations "forward" and "seqfcn") gives "fused" only.
    One batch of three copies of the ray, in float32; the hooks are removed again, whatever happens.
    """
    patches = np.asarray(patches, dtype=np.float32)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"one ray's patches must be (K, P, P), got {patches.shape}")
    rnn = getattr(model, "rnn", {})
    units = [u for u in rnn.values() if getattr(u, "bidirectional", False)]
    device = next(model.parameters()).device
    x = torch.from_numpy(patches).to(device)[None, :, None]  # (1, K, 1, P, P)
    if not units:
        # float32 here too: the readouts are compared with each other, not with a click's bfloat16 pass
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            return {"fused": torch.sigmoid(model(x).float())[0, :, 0].cpu().numpy()}

    owner = threading.get_ident()

    def keep_half(unit: nn.Module):
        c = unit.channels

        def hook(_module, inputs):
            # The model is shared by every session, and another thread's click may run through it
            # while these hooks are on: it must pass unchanged.
            if threading.get_ident() != owner:
                return None
            (t,) = inputs  # (3·K, 2C, H, W): copy 0 as is, copy 1 forward only, copy 2 backward only
            t = t.clone()
            per = t.shape[0] // 3
            t[per : 2 * per, c:] = 0
            t[2 * per :, :c] = 0
            return (t,)

        return hook

    handles = [u.fuse.register_forward_pre_hook(keep_half(u)) for u in units]
    try:
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            out = torch.sigmoid(model(x.expand(3, -1, -1, -1, -1).contiguous()).float())[:, :, 0]
    finally:
        for h in handles:
            h.remove()
    out = out.cpu().numpy()
    return {"fused": out[0], "forward": out[1], "backward": out[2]}
