"""Helpers shared by test modules (imported as ``from helpers import ...``; tests/ is on sys.path)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method.models import DEFAULT_WEIGHTS, build_model, save_checkpoint

#: The project root and its bundled examples.
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

#: Skips a test when the shipped weights (weights/seqpatch.safetensors, weights/unet.safetensors) are absent.
needs_shipped_weights = pytest.mark.skipif(
    not all(DEFAULT_WEIGHTS[m].is_file() for m in ("seqpatch", "unet")), reason="shipped weights absent"
)


def example(name: str) -> tuple[Path, Path]:
    """(image, label) paths of a bundled example, e.g. ``example("lung2_ct_crop")``."""
    return EXAMPLES / f"{name}.nii.gz", EXAMPLES / f"{name}_label.nii.gz"


def free_port() -> int:
    """A free TCP port on the loopback interface, for a test server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_dicom_series(folder: Path, arr: np.ndarray, uid: str, modality: str = "CT") -> None:
    """One file per slice, as in SimpleITK's "Dicom Series From Array" example."""
    folder.mkdir(parents=True, exist_ok=True)
    vol = sitk.GetImageFromArray(arr.astype(np.int16))
    vol.SetSpacing((0.8, 0.8, 3.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i in range(vol.GetDepth()):
        sl = vol[:, :, i]
        tags = {
            "0008|0060": modality,
            "0020|000e": uid,
            "0020|000d": uid + ".1",
            "0020|0032": "\\".join(map(str, vol.TransformIndexToPhysicalPoint((0, 0, i)))),
            "0020|0013": str(i + 1),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "0.8\\0.8",
            "0018|0050": "3.0",
            "0008|0018": f"{uid}.{i + 1}",
        }
        for k, v in tags.items():
            sl.SetMetaData(k, v)
        writer.SetFileName(str(folder / f"IM{i:04d}.dcm"))
        writer.Execute(sl)


# ----------------------------------------------------------------------------- propagation, evaluation, robustness
# a bright sphere in noise, tiny random-weight checkpoints, and BrightNet: a stand-in network whose
# likelihood is the windowed intensity itself (bright = object), so the whole real pipeline
# (window, rays, fusion, threshold, component) runs in milliseconds and gives a predictable answer


class BrightNet(nn.Module):
    """Logits ``40 * (x - 0.5)`` of the windowed input: segments whatever is brighter than mid-window.

    ``arch`` "seqpatch" takes (B, K, 1, P, P) sequences, "unet" (N, 1, S, S) fields of view; both
    map any shape to the same shape, so one class serves both.
    """

    def __init__(self, arch: str = "seqpatch"):
        super().__init__()
        self.record = {"name": arch, "arch": arch, "config": {}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40.0 * (x - 0.5)


class BrightBoxNet(nn.Module):
    """A stand-in for LiteMedSAM's :meth:`encode` and :meth:`decode`: the "embedding" is the input image
    itself (B, 1, 256, 256), and a box's logits are ``40 * (x - level)`` inside the box and -40 outside:
    the part of the box brighter than ``level`` of the slice's range (LiteMedSAM's input is stretched
    to [0, 1] on each slice), so its answer is known."""

    def __init__(self, level: float = 0.65):
        super().__init__()
        self.level = level
        self.record = {"name": "bright-box", "arch": "litemedsam", "config": {}}

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        return image[:, :1].clone()

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        size = embedding.shape[-1]
        yy, xx = torch.arange(size).view(1, size, 1), torch.arange(size).view(1, 1, size)
        x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
        inside = (xx >= x0) & (xx <= x1) & (yy >= y0) & (yy <= y1)
        return torch.where(inside, 40.0 * (embedding[0, 0] - self.level), torch.tensor(-40.0))[:, None]


def sphere_arrays(
    shape=(12, 64, 64), centre=(6.0, 32.0, 30.0), radius_mm=9.0, spacing_zyx=(2.0, 1.0, 1.0), seed=0
) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like (z, y, x) int16 volume (0 ± 10 HU, a 150 HU ball, an air corner) and its uint8 label."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    d = np.sqrt(sum(((a - c) * s) ** 2 for a, c, s in zip((zz, yy, xx), centre, spacing_zyx, strict=True)))
    label = (d < radius_mm).astype(np.uint8)
    image = rng.normal(0.0, 10.0, shape) + 150.0 * label
    image[:, :2, :2] = -1000.0  # air: read as CT, auto window "soft"
    return image.astype(np.int16), label


def write_case(tmp_path: Path, **kw) -> tuple[Path, Path]:
    """Write ``sphere_arrays(**kw)`` as image.nrrd and label.nrrd in ``tmp_path``; returns both paths."""
    spacing = kw.get("spacing_zyx", (2.0, 1.0, 1.0))
    paths = []
    for name, arr in zip(("image", "label"), sphere_arrays(**kw), strict=True):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(tuple(float(s) for s in reversed(spacing)))
        sitk.WriteImage(img, str(tmp_path / f"{name}.nrrd"))
        paths.append(tmp_path / f"{name}.nrrd")
    return paths[0], paths[1]


def write_checkpoints(tmp_path: Path) -> dict[str, Path]:
    """Random-weight checkpoints: a tiny sequential net (narrow: fast on CPU) and the U-net."""
    out = {"seqpatch": tmp_path / "seqpatch.safetensors", "unet": tmp_path / "unet.safetensors"}
    save_checkpoint(build_model("seqpatch", widths=(8, 8, 8)), out["seqpatch"])
    save_checkpoint(build_model("unet", base=8), out["unet"])
    return out


def bright_predictor(**kw) -> Predictor:
    """A Predictor with BrightNet as "seqpatch" and "unet", holding ``sphere_arrays(**kw)``."""
    image, _ = sphere_arrays(**kw)
    vol = volume_from_array(image, spacing=kw.get("spacing_zyx", (2.0, 1.0, 1.0)), modality="CT")
    pred = Predictor({"seqpatch": BrightNet("seqpatch"), "unet": BrightNet("unet")}, device="cpu")
    pred.set_volume(vol)
    return pred


# ----------------------------------------------------------------------------- propagation, real pipeline
