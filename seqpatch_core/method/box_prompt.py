"""How LiteMedSAM sees a slice and a box: the recipe it was trained with, and its answer on the slice.

From ``pre_CT_MR.py`` and ``CVPR24_LiteMedSAM_infer.py`` (bowang-lab/MedSAM, branch LiteMedSAM):

1. :func:`window_255`: the volume windowed to 0..255 and stored as uint8 (the training data were);
   CT at level 40, width 400; MR (anything not CT) clipped to the 0.5 / 99.5 percentiles of its
   non-zero voxels, voxels that were 0 staying 0.
2. :func:`prepare_slice`: one slice as three equal channels, the longest side resized to 256 with
   area interpolation (:func:`area_resize`, OpenCV's ``INTER_AREA`` on uint8), min-max to [0, 1],
   zero-padded at the bottom and right to 256 x 256.
3. :func:`scale_boxes`: a box in slice pixels scaled by 256 / max(H, W).
4. :func:`logits_to_slice`: the logits cropped to the resized size, bilinear back to the slice,
   sigmoid; the mask is probability > 0.5.

Slices are (H, W) arrays in the volume's (y, x) order; boxes here are (x0, y0, x1, y1), the model's
order, with corners on pixel indices (inclusive).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from seqpatch_core.images.intensity import Window, apply_window, mr_window
from seqpatch_core.method.models.litemedsam import IMAGE_SIZE

__all__ = [
    "CT_WINDOW",
    "area_resize",
    "logits_to_slice",
    "prepare_slice",
    "resized_shape",
    "scale_boxes",
    "to_255",
    "window_255",
]

#: LiteMedSAM's CT window (width 400, level 40 HU), the one its CT training data were cut with.
CT_WINDOW = Window.from_width_level(400, 40, "litemedsam-ct")


def window_255(array: np.ndarray, is_ct: bool) -> np.ndarray:
    """The volume (z, y, x), any float dtype, as LiteMedSAM's training data: uint8 of the same shape.

    CT: :data:`CT_WINDOW`. MR: clipped to the 0.5 / 99.5 percentiles of the non-zero voxels of the
    whole array (:func:`mr_window`, which subsamples very large volumes), zero voxels kept 0.
    Values are truncated to integers, as ``np.uint8`` did to the training data.
    """
    array = np.asarray(array)
    if is_ct:
        window = CT_WINDOW
    else:
        nonzero = array[array != 0]
        window = mr_window(nonzero if nonzero.size else array)
    out = to_255(apply_window(array, window))
    if not is_ct:
        out[array == 0] = 0
    return out


def to_255(windowed: np.ndarray) -> np.ndarray:
    """An image already windowed to [0, 1] (any shape, float) as uint8 0..255 of the same shape,
    truncated as ``np.uint8`` did to the training data (values outside [0, 1] clipped)."""
    return (np.clip(np.asarray(windowed, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def resized_shape(h: int, w: int, target: int = IMAGE_SIZE) -> tuple[int, int]:
    """(h', w'): the slice's size with its longest side at ``target``, rounded half up."""
    scale = target / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64: the share of each input pixel in each output pixel, rows summing to 1.
    Output pixel i covers input [i * s, (i + 1) * s) with s = n_in / n_out, down- or upsampling."""
    s = n_in / n_out
    lo = np.arange(n_out)[:, None] * s
    hi = lo + s
    left = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, left + 1) - np.maximum(lo, left), 0.0, None)
    return overlap / s


def area_resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 -> (h, w) uint8 by pixel-area averaging: OpenCV's ``INTER_AREA`` (the exact
    coverage weights; results rounded half to even, as OpenCV rounds into uint8)."""
    wy = _area_weights(image.shape[0], shape[0])
    wx = _area_weights(image.shape[1], shape[1])
    out = wy @ image.astype(np.float64) @ wx.T
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def prepare_slice(slice_255: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """One slice (H, W) uint8 of :func:`window_255` -> (the network input (1, 3, 256, 256) float32,
    in [0, 1], zero-padded at the bottom and right; the resized size (h', w') inside it)."""
    h, w = slice_255.shape
    nh, nw = resized_shape(h, w)
    small = area_resize(slice_255, (nh, nw)).astype(np.float32)
    small = (small - small.min()) / max(float(small.max() - small.min()), 1e-8)
    image = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    image[:nh, :nw] = small
    tensor = torch.from_numpy(image)[None, None].expand(1, 3, IMAGE_SIZE, IMAGE_SIZE).contiguous()
    return tensor, (nh, nw)


def scale_boxes(boxes_xyxy: np.ndarray, slice_shape: tuple[int, int]) -> torch.Tensor:
    """(N, 4) boxes (x0, y0, x1, y1) in slice pixels -> (N, 4) float32 in the 256 x 256 input frame."""
    scale = IMAGE_SIZE / max(slice_shape)
    return torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float64) * scale, dtype=torch.float32).reshape(-1, 4)


def logits_to_slice(logits: torch.Tensor, resized: tuple[int, int], slice_shape: tuple[int, int]) -> np.ndarray:
    """(N, 1, 256, 256) logits in the input frame -> (N, H, W) float32 probabilities on the slice
    (cropped to the resized size, bilinear, then sigmoid); the mask is probability > 0.5."""
    nh, nw = resized
    up = F.interpolate(logits[..., :nh, :nw].float(), size=tuple(slice_shape), mode="bilinear", align_corners=False)
    return torch.sigmoid(up)[:, 0].cpu().numpy()
