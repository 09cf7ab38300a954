"""Real labelled image/label pairs as training slices (``train --data DIR``).

A folder holds pairs either as ``NAME_image.EXT`` with ``NAME_label.EXT`` (any format ``io`` reads), or
as ``images/NAME.EXT`` with ``labels/NAME.EXT`` (the layout of PROMISE12, KiTS19 or the Medical
Segmentation Decathlon after conversion to NIfTI). Each sample is one labelled axial slice: one
connected component of the label is the target, the slice is windowed as the app would show it
(``auto`` at the target's centre), resampled to the modality's working spacing and cropped around
the target; the click is the target's mass centre (nearest inside pixel if outside).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from seqpatch_core.base.errors import InputError
from seqpatch_core.data.synth import SynthSlice
from seqpatch_core.images.formats import VOLUME_SUFFIXES
from seqpatch_core.images.intensity import apply_window, auto_window
from seqpatch_core.method import rays

log = logging.getLogger(__name__)

_EXTS = VOLUME_SUFFIXES


def _stem(path: Path) -> str:
    name = path.name
    for ext in _EXTS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def find_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """(image, label) paths in ``folder`` by either layout; InputError when there are none."""
    folder = Path(folder)
    pairs = []
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        labels = {_stem(p): p for p in (folder / "labels").iterdir() if p.name.endswith(_EXTS)}
        pairs = [(p, labels[_stem(p)]) for p in sorted((folder / "images").iterdir()) if _stem(p) in labels]
    else:
        for img in sorted(folder.glob("*_image.*")):
            if not img.name.endswith(_EXTS):
                continue
            lab = [p for p in folder.glob(_stem(img)[: -len("_image")] + "_label.*") if p.name.endswith(_EXTS)]
            if lab:
                pairs.append((img, lab[0]))
    if not pairs:
        raise InputError(f"no image/label pairs in {folder} (expected *_image.* with *_label.*, or images/ + labels/)")
    return pairs


class LabelledPairs:
    """Loads every pair once and draws training slices from them."""

    def __init__(self, folder: str | Path):
        from seqpatch_core.images.io import read_label, read_volume

        self.cases = []
        for img_path, lab_path in find_pairs(folder):
            vol = read_volume(img_path)
            lab = read_label(lab_path, vol)
            zs = np.flatnonzero(lab.reshape(lab.shape[0], -1).any(1))
            if len(zs):
                self.cases.append((vol, lab, zs))
        if not self.cases:
            raise InputError(f"no labelled slices in {folder}")
        log.info("loaded %d labelled cases from %s", len(self.cases), folder)

    def sample(self, rng: np.random.Generator, size: int) -> SynthSlice:
        """One slice (size x size working pixels) with its target component and click."""
        vol, lab, zs = self.cases[rng.integers(len(self.cases))]
        z = int(rng.choice(zs))
        comps, n = ndimage.label(lab[z])
        target = comps == rng.integers(1, n + 1)
        ys, xs = np.nonzero(target)
        cy, cx = float(ys.mean()), float(xs.mean())
        window = auto_window(vol, (z, cy, cx))
        spacing = rays.WORKING_SPACING_MM.get(vol.modality, 1.0)
        grid = rays.SliceGrid(vol.array.shape[1:], (vol.spacing[1], vol.spacing[2]), spacing)
        image = rays.resample_to_working(apply_window(vol.array[z], window), grid)
        label = rays.resample_to_working(target.astype(np.float32), grid) >= 0.5
        centre = grid.to_working([cy, cx]) + rng.uniform(-15, 15, size=2)
        top = np.round(centre - size / 2).astype(int)
        crop = np.zeros((size, size), np.float32), np.zeros((size, size), np.uint8)
        h, w = image.shape
        y0, x0 = max(top[0], 0), max(top[1], 0)
        y1, x1 = min(top[0] + size, h), min(top[1] + size, w)
        crop[0][y0 - top[0] : y1 - top[0], x0 - top[1] : x1 - top[1]] = image[y0:y1, x0:x1]
        crop[1][y0 - top[0] : y1 - top[0], x0 - top[1] : x1 - top[1]] = label[y0:y1, x0:x1]
        if not crop[1].any():  # a target larger than the crop: fall back to the crop's centre
            crop[1][size // 2, size // 2] = 1
        ly, lx = np.nonzero(crop[1])
        my, mx = float(ly.mean()), float(lx.mean())
        if not crop[1][int(round(my)), int(round(mx))]:
            k = int(np.argmin((ly - my) ** 2 + (lx - mx) ** 2))
            my, mx = float(ly[k]), float(lx[k])
        return SynthSlice(crop[0], crop[1], (my, mx), spacing, f"real({vol.source},z={z},{window.name})")
