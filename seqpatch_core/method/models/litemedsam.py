"""LiteMedSAM, a box-prompted medical foundation model, in plain torch.

LiteMedSAM (bowang-lab/MedSAM, branch LiteMedSAM; Apache-2.0) is SAM's prompt encoder and mask
decoder behind a TinyViT image encoder distilled from MedSAM's ViT-B, on 256 x 256 input:

* image encoder :class:`TinyViT`: widths 64/128/160/320, depths 2/2/6/2, heads 2/4/5/10, windows
  7/7/14/7; (B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64) embedding;
* :class:`PromptEncoder`: a box (x0, y0, x1, y1) in the 256 x 256 input frame -> two corner tokens
  (B, 2, 256) and the dense "no mask" embedding (B, 256, 64, 64);
* :class:`MaskDecoder`: SAM's two-way transformer (depth 2, 8 heads, MLP 2048) -> one mask's logits
  (B, 1, 256, 256) in the input frame (the single-mask output of a box prompt).

This is a port of the code the model was trained with (``tiny_vit_sam.py`` and SAM's
``modeling/``), without timm or torchvision; module and parameter names are those of the original,
so its state dict loads strictly (:func:`load_litemedsam`). The checkpoint is the project's
safetensors file converted once from the published ``lite_medsam.pth`` (:func:`convert_checkpoint`),
so nothing is unpickled at run time. How a slice and a box are put into the input frame is
:mod:`seqpatch_core.method.box_prompt`.

Derived from TinyViT (Copyright (c) 2022 Microsoft, MIT licence; adapted by MobileSAM and LiteMedSAM)
and Segment Anything's modeling code (Copyright (c) Meta Platforms, Inc. and affiliates, Apache
License 2.0), as vendored in LiteMedSAM (Apache License 2.0); the weights are LiteMedSAM's, under the
Apache License 2.0 (``docs/deploy.md``).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seqpatch_core.base.errors import WeightsError
from seqpatch_core.base.paths import WEIGHTS_DIR
from seqpatch_core.method.models import file_sha256, load_checkpoint, save_checkpoint

__all__ = [
    "ARCH",
    "CONFIG",
    "EMBED_SIZE",
    "IMAGE_SIZE",
    "LITEMEDSAM_WEIGHTS",
    "LiteMedSAM",
    "MaskDecoder",
    "PromptEncoder",
    "TinyViT",
    "TwoWayTransformer",
    "convert_checkpoint",
    "load_litemedsam",
]

#: The record's architecture name.
ARCH = "litemedsam"
#: Side of the square network input (px) and of its image embedding (tokens).
IMAGE_SIZE = 256
EMBED_SIZE = 64
#: The one architecture the published weights have (the record stores it; nothing else is built).
CONFIG: dict[str, Any] = {
    "image_size": IMAGE_SIZE,
    "embed_dims": [64, 128, 160, 320],
    "depths": [2, 2, 6, 2],
    "num_heads": [2, 4, 5, 10],
    "window_sizes": [7, 7, 14, 7],
    "prompt_dim": 256,
    "embedding_size": EMBED_SIZE,
    "decoder_depth": 2,
    "decoder_heads": 8,
    "decoder_mlp": 2048,
}
#: The shipped checkpoint.
LITEMEDSAM_WEIGHTS = WEIGHTS_DIR / "litemedsam.safetensors"


# --------------------------------------------------------------------------- image encoder (TinyViT)


class Conv2dBN(nn.Sequential):
    """Convolution without bias, then BatchNorm (keys ``c`` and ``bn``)."""

    def __init__(self, cin: int, cout: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of (B, C, H, W), as SAM's (eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    """(B, 3, H, W) -> (B, dim, H, W): LiteMedSAM's stem is two 1 x 1 convolutions at full
    resolution (MobileSAM's strided 3 x 3 stem was replaced, since its input is 4 x smaller)."""

    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.seq = nn.Sequential(Conv2dBN(cin, dim // 2), nn.GELU(), Conv2dBN(dim // 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block (1 x 1 expand 4x, 3 x 3 depthwise, 1 x 1 project) on (B, C, H, W)."""

    def __init__(self, dim: int, expand: float = 4.0):
        super().__init__()
        hidden = int(dim * expand)
        self.conv1 = Conv2dBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, ks=3, pad=1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """(B, C, H, W) or tokens (B, H*W, C) -> tokens (B, H'*W', out) with H' = H / stride."""

    def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int, stride: int):
        super().__init__()
        self.resolution = resolution
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, ks=3, stride=stride, pad=1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


class ConvLayer(nn.Module):
    """The first stage: MBConv blocks on (B, C, H, W), then a patch merging."""

    def __init__(self, dim: int, depth: int, downsample: PatchMerging):
        super().__init__()
        self.blocks = nn.ModuleList([MBConv(dim) for _ in range(depth)])
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x)


class Mlp(nn.Module):
    """LayerNorm, then Linear-GELU-Linear on tokens (B, N, C)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside one window of ``window`` x ``window`` tokens, with a learned
    bias per head and per (|dy|, |dx|) offset (LeViT's), on (B*windows, window^2, C)."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads = heads
        self.key_dim = dim // heads
        self.scale = self.key_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                idxs.append(offsets.setdefault((abs(p1[0] - p2[0]), abs(p1[1] - p2[1])), len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(heads, len(offsets)))
        # derived from the window size, not learned: not part of the checkpoint
        self.register_buffer(
            "attention_bias_idxs", torch.tensor(idxs, dtype=torch.long).view(len(points), len(points)), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.heads, -1)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.key_dim], dim=3)
        q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(x)


class TinyViTBlock(nn.Module):
    """Window attention (windows padded at the bottom/right), 3 x 3 depthwise conv, MLP; tokens
    (B, H*W, C) of a (H, W) grid in and out."""

    def __init__(self, dim: int, resolution: tuple[int, int], heads: int, window: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = WindowAttention(dim, heads, window)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, ks=3, pad=1, groups=dim)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        ws = self.window
        b, n, c = x.shape
        if h == ws and w == ws:
            return self.attn(x)
        x = x.view(b, h, w, c)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        x = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        x = self.attn(x)
        x = x.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        return x[:, :h, :w].reshape(b, n, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, n, c = x.shape
        x = x + self._attend(x)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """One attention stage: TinyViT blocks on tokens, then a patch merging (not after the last)."""

    def __init__(self, dim, resolution, depth, heads, window, downsample: PatchMerging | None):
        super().__init__()
        self.blocks = nn.ModuleList([TinyViTBlock(dim, resolution, heads, window) for _ in range(depth)])
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """LiteMedSAM's image encoder: (B, 3, 256, 256) float32 in [0, 1] -> (B, 256, 64, 64).

    Stages at 256, 128, 64 and 64 px: the merging after the third keeps the resolution (stride 1),
    as in MobileSAM, so that the embedding is 64 x 64 like SAM's.
    """

    def __init__(self, image_size=IMAGE_SIZE, embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2),
                 num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7), out_dim: int = 256):  # fmt: skip
        super().__init__()
        self.patch_embed = PatchEmbed(3, embed_dims[0])
        strides = [2] * (len(depths) - 2) + [1]  # between stages; the last merging keeps the grid
        self.layers = nn.ModuleList()
        side = image_size
        for i, depth in enumerate(depths):
            res = (side, side)
            merge = None
            if i < len(depths) - 1:
                merge = PatchMerging(res, embed_dims[i], embed_dims[i + 1], strides[i])
            if i == 0:
                self.layers.append(ConvLayer(embed_dims[0], depth, merge))
            else:
                self.layers.append(BasicLayer(embed_dims[i], res, depth, num_heads[i], window_sizes[i], merge))
            if i < len(depths) - 1:
                side //= strides[i]
        self.out_side = side
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_dim, kernel_size=1, bias=False),
            LayerNorm2d(out_dim),
            nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        b, _, c = x.shape
        x = x.view(b, self.out_side, self.out_side, c).permute(0, 3, 1, 2)
        return self.neck(x)


# --------------------------------------------------------------------------- prompt encoder (SAM)


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of (x, y) in [0, 1]^2 with fixed random frequencies (a checkpoint buffer)."""

    def __init__(self, num_feats: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def grid(self, size: tuple[int, int]) -> torch.Tensor:
        """(C, h, w): the encoding of every embedding cell's centre."""
        h, w = size
        ones = torch.ones((h, w), device=self.positional_encoding_gaussian_matrix.device)
        y = (ones.cumsum(dim=0) - 0.5) / h
        x = (ones.cumsum(dim=1) - 0.5) / w
        return self._encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def points(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, N, 2) points (x, y) in input px -> (B, N, C)."""
        scale = coords.new_tensor([1.0 / image_size[1], 1.0 / image_size[0]])
        return self._encode(coords.float() * scale)


class PromptEncoder(nn.Module):
    """SAM's prompt encoder, used with one box per image.

    Only the box path runs here; the point and mask-prompt layers stay because they are part of the
    published state dict (it is loaded strictly, so a missing or renamed key is caught).
    """

    def __init__(self, embed_dim: int = 256, embedding_size: int = EMBED_SIZE, image_size: int = IMAGE_SIZE,
                 mask_in_chans: int = 16):  # fmt: skip
        super().__init__()
        self.embed_dim = embed_dim
        self.image_size = (image_size, image_size)
        self.embedding_size = (embedding_size, embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # negative point, positive point, box corner 1, box corner 2
        self.point_embeddings = nn.ModuleList([nn.Embedding(1, embed_dim) for _ in range(4)])
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """(1, C, 64, 64): the positional encoding of the image embedding."""
        return self.pe_layer.grid(self.embedding_size).unsqueeze(0)

    def forward(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """boxes (B, 4) float (x0, y0, x1, y1) in input px, corners on pixel indices -> sparse (B, 2, C)
        and dense (B, C, 64, 64) embeddings."""
        corners = boxes.reshape(-1, 2, 2) + 0.5  # pixel centres
        sparse = self.pe_layer.points(corners, self.image_size)
        sparse = sparse + torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])[None]
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(boxes.shape[0], -1, *self.embedding_size)
        return sparse, dense


# --------------------------------------------------------------------------- mask decoder (SAM)


class MLPBlock(nn.Module):
    """Linear-activation-Linear (keys ``lin1``, ``lin2``)."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class Attention(nn.Module):
    """Multi-head attention whose projections may be ``downsample`` x narrower than the tokens."""

    def __init__(self, dim: int, heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        attn = torch.softmax((q @ k.permute(0, 1, 3, 2)) / math.sqrt(q.shape[-1]), dim=-1)
        out = (attn @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))


class TwoWayAttentionBlock(nn.Module):
    """Tokens attend to themselves and to the image, an MLP on the tokens, the image attends to the
    tokens; post-norm. The first block adds no positional encoding to its self-attention."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, heads, downsample=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, heads, downsample=2)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, queries + query_pe, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """SAM's decoder transformer: image (B, C, h, w) with its encoding, tokens (B, N, C) ->
    (tokens (B, N, C), image tokens (B, h*w, C))."""

    def __init__(self, depth: int = 2, dim: int = 256, heads: int = 8, mlp_dim: int = 2048):
        super().__init__()
        self.layers = nn.ModuleList(
            [TwoWayAttentionBlock(dim, heads, mlp_dim, skip_first_layer_pe=(i == 0)) for i in range(depth)]
        )
        self.final_attn_token_to_image = Attention(dim, heads, downsample=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor):
        keys = image.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        queries = queries + self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries), keys


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (keys ``layers.i``)."""

    def __init__(self, din: int, hidden: int, dout: int, num_layers: int):
        super().__init__()
        dims = [din] + [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [dout], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskDecoder(nn.Module):
    """SAM's mask decoder. It holds SAM's four mask tokens (the weights have them); a box prompt uses
    the first, the single-mask output, as LiteMedSAM was trained and is run."""

    def __init__(self, transformer: TwoWayTransformer, dim: int = 256, num_mask_tokens: int = 4):
        super().__init__()
        self.transformer = transformer
        self.num_mask_tokens = num_mask_tokens
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList([MLP(dim, dim, dim // 8, 3) for _ in range(num_mask_tokens)])
        self.iou_prediction_head = MLP(dim, 256, num_mask_tokens, 3)

    def forward(self, image: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor):
        """image (1 or B, C, 64, 64), image_pe (1, C, 64, 64), sparse (B, N, C), dense (B, C, 64, 64) ->
        (logits (B, 1, 256, 256) of the single mask, its predicted IoU (B, 1))."""
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat((out_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse), dim=1)
        n = tokens.shape[0]
        src = image if image.shape[0] == n else torch.repeat_interleave(image, n, dim=0)
        src = src + dense
        pos = torch.repeat_interleave(image_pe, n, dim=0)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        up = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        # the single-mask token only: the other three are SAM's multi-mask outputs, unused with a box
        hyper = self.output_hypernetworks_mlps[0](hs[:, 1, :])
        b, c, h, w = up.shape
        masks = (hyper[:, None, :] @ up.view(b, c, h * w)).view(b, 1, h, w)
        iou = self.iou_prediction_head(hs[:, 0, :])[:, :1]
        return masks, iou


# --------------------------------------------------------------------------- the model and its weights


class LiteMedSAM(nn.Module):
    """Image encoder, prompt encoder and mask decoder (attribute names of the published model).

    :meth:`encode` once per image, :meth:`decode` per box: the split that lets a new box on the same
    slice skip the encoder.
    """

    def __init__(self):
        super().__init__()
        c = CONFIG
        self.image_encoder = TinyViT(c["image_size"], c["embed_dims"], c["depths"], c["num_heads"], c["window_sizes"],
                                     c["prompt_dim"])  # fmt: skip
        self.prompt_encoder = PromptEncoder(c["prompt_dim"], c["embedding_size"], c["image_size"])
        transformer = TwoWayTransformer(c["decoder_depth"], c["prompt_dim"], c["decoder_heads"], c["decoder_mlp"])
        self.mask_decoder = MaskDecoder(transformer, c["prompt_dim"])

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) float32 in [0, 1], zero-padded at the bottom/right -> (B, 256, 64, 64)."""
        return self.image_encoder(image)

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """embedding (1, 256, 64, 64) of one image, boxes (N, 4) float (x0, y0, x1, y1) in the 256 x 256
        input frame -> mask logits (N, 1, 256, 256) in that frame."""
        sparse, dense = self.prompt_encoder(boxes.to(embedding.dtype))
        logits, _iou = self.mask_decoder(embedding, self.prompt_encoder.get_dense_pe(), sparse, dense)
        return logits

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """One image (1, 3, 256, 256), boxes (N, 4) -> logits (N, 1, 256, 256)."""
        return self.decode(self.encode(image), boxes)


def _strict(state: dict[str, torch.Tensor], name: str) -> LiteMedSAM:
    """A LiteMedSAM holding ``state``, which must have exactly its keys and shapes (else WeightsError)."""
    model = LiteMedSAM()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        # torch's first line only says "Error(s) in loading state_dict"; the second names the key
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise WeightsError(f"{name} does not fit LiteMedSAM ({lines[min(1, len(lines) - 1)][:160]})") from None
    return model


def load_litemedsam(path: str | Path | None = None) -> LiteMedSAM:
    """The model in eval mode from the project's safetensors checkpoint (default
    :data:`LITEMEDSAM_WEIGHTS`). Its record must name :data:`ARCH` with :data:`CONFIG`, and its
    tensors must be exactly the model's (strict load), else :class:`WeightsError`. The returned
    module carries ``.record`` (with the file's ``sha256``)."""
    path = Path(path) if path is not None else LITEMEDSAM_WEIGHTS
    record, state = load_checkpoint(path)
    if record.get("arch") != ARCH or record.get("config") != CONFIG:
        raise WeightsError(f"{path.name} is not a LiteMedSAM checkpoint (its record names {record.get('arch')!r})")
    model = _strict(state, path.name)
    model.record = record
    return model.eval()


def convert_checkpoint(pth: str | Path, out: str | Path = LITEMEDSAM_WEIGHTS, **record: Any) -> dict[str, Any]:
    """Convert the published ``lite_medsam.pth`` to the project's safetensors checkpoint, once.

    The .pth is read with ``torch.load(weights_only=True)`` (tensors only; no code is unpickled),
    must load strictly into :class:`LiteMedSAM`, and is written by the project's
    :func:`~seqpatch_core.method.models.save_checkpoint` (floating tensors in float16, half the bytes:
    19.7 MB instead of 39.3; widened to float32 on load, where the model computes) with its record
    (``record`` plus the architecture and the .pth's name, size and SHA-256); the same record, with the
    new file's SHA-256, goes to ``<out stem>.json`` beside it. Returns that record.
    """
    pth = Path(pth)
    try:
        state = torch.load(pth, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise WeightsError(f"cannot read {pth.name} as a tensors-only checkpoint ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    model = _strict(state, pth.name)
    full = {
        "name": ARCH,
        "arch": ARCH,
        "config": CONFIG,
        **record,
        "converted_from": {"file": pth.name, "bytes": pth.stat().st_size, "sha256": file_sha256(pth)},
        "dtype": "float16 (stored; computed in float32)",
    }
    model.record = full
    out = Path(out)
    save_checkpoint(model, out)
    full = {**full, "sha256": file_sha256(out)}
    out.with_suffix(".json").write_text(json.dumps(full, indent=1) + "\n")
    return full
