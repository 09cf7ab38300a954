"""Rebuild the bundled examples: crops of the two real labelled cases and three synthetic slices.

The synthetic ones: a CT and an MR slice with a lesion-sized object, and ``synthetic_ct_large``, a CT
slice of 384 px at 1.0 mm with an object of organ size (equivalent radius 49 mm), for the scale
rule: a click there climbs the grids and SeqPatch answers on the 2-mm one.

Run from the project root: ``python -m seqpatch_core make-examples [--real ../shared/data/real]``.
The real cases come from pyradiomics' test data (BSD-3-Clause, see LICENSE-pyradiomics.txt here);
crops keep their physical geometry (SimpleITK slicing moves the origin, never the spacing/direction).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from seqpatch_core.base.paths import EXAMPLES_DIR
from seqpatch_core.data import synth
from seqpatch_core.images.intensity import CT_PRESETS

# (name, x range, y range, z range) in SimpleITK index order, chosen around each labelled lesion
CROPS = {
    "lung2_ct_crop": ("lung2", (233, 489), (237, 493), (12, 29)),
    "brain1_mr_crop": ("brain1", (0, 256), (0, 256), (8, 21)),
}


def crop_real(real: Path) -> None:
    for out, (case, xr, yr, zr) in CROPS.items():
        img = sitk.ReadImage(str(real / f"{case}_image.nrrd"))
        lab = sitk.ReadImage(str(real / f"{case}_label.nrrd"))
        sl = (slice(*xr), slice(*yr), slice(*zr))
        sitk.WriteImage(img[sl], str(EXAMPLES_DIR / f"{out}.nii.gz"), useCompression=True)
        label_path = str(EXAMPLES_DIR / f"{out}_label.nii.gz")
        sitk.WriteImage(sitk.Cast(lab[sl] > 0, sitk.sitkUInt8), label_path, useCompression=True)
        logging.info("wrote %s", out)


def synthetic(
    name: str,
    modality: str,
    seed: int,
    *,
    size: int = 192,
    radius_mm: tuple[float, float] | None = None,
) -> None:
    """One generated slice (phantom background) as a one-slice volume (1, size, size): CT in HU, MR in
    arbitrary units; pixels 1.0 mm (CT) or 0.8 mm (MR), 5 mm thick. ``radius_mm``: (lo, hi) of the
    object's nominal radius (:func:`seqpatch_core.data.synth.make_slice`); ``None``: the recipe's."""
    spacing_mm = 1.0 if modality == "CT" else 0.8
    s = synth.make_slice(np.random.default_rng(seed), size=size, spacing_mm=spacing_mm, radius_mm=radius_mm)
    if modality == "CT":
        width, level = CT_PRESETS["soft"]
        arr = level - width / 2 + s.image * width
        arr = np.where(s.image <= 0.01, -1000.0, arr).astype(np.int16)  # air outside the body, as in real CT
    else:
        arr = (s.image * 1000).astype(np.int16)
    img = sitk.GetImageFromArray(arr[None])
    img.SetSpacing((s.spacing_mm, s.spacing_mm, 5.0))
    lab = sitk.GetImageFromArray(s.label[None].astype(np.uint8))
    lab.CopyInformation(img)
    sitk.WriteImage(img, str(EXAMPLES_DIR / f"{name}.nii.gz"), useCompression=True)
    sitk.WriteImage(lab, str(EXAMPLES_DIR / f"{name}_label.nii.gz"), useCompression=True)
    logging.info("wrote %s (%s)", name, s.kind)


def make_examples(real: str | Path) -> None:
    """Write all five examples (with labels) into ``examples/``."""
    EXAMPLES_DIR.mkdir(exist_ok=True)
    crop_real(Path(real))
    synthetic("synthetic_ct", "CT", 11)
    synthetic("synthetic_mr", "MR", 12)
    synthetic("synthetic_ct_large", "CT", 13, size=384, radius_mm=(45, 55))
