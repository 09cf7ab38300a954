"""SeqPatch core: one-click sequential patch-based segmentation of CT and MR slices.

No UI imports here. Arrays are (z, y, x) everywhere; see :mod:`seqpatch_core.images.volume`.

The subpackages are layers, each importing only those before it (the import-linter contract in
``pyproject.toml`` keeps it so):

1. ``base``: errors, metrics, the progress type, markdown tables;
2. ``images``: the Volume type, reading files and writing masks, display windows;
3. ``method``: rays and patches, the networks and checkpoints, one network pass;
4. ``data``: synthetic slices, background bank, atlas structures, examples;
5. ``inference``: the per-session Predictor, 3D propagation, compiled engines;
6. ``training``: options, batches, the loop;
7. ``evaluation``: evaluation, click robustness, the second-pass calibration;
8. ``bench``: speed;
9. ``cli``: ``python -m seqpatch_core``.

The names most callers need are importable from here::

    from seqpatch_core import Predictor, load_models, read_volume, write_mask

    pred = Predictor(load_models(["seqpatch", "unet"]), device="cpu")
    pred.set_volume(read_volume("ct.nii.gz"))
    result = pred.predict((z, y, x))  # a voxel index, array order

They load on first use, so importing ``seqpatch_core.base`` pulls in neither torch nor SimpleITK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from seqpatch_core.base.errors import InputError, SeqPatchError, WeightsError

if TYPE_CHECKING:
    from seqpatch_core.images.io import read_volume, write_mask
    from seqpatch_core.images.volume import Volume
    from seqpatch_core.inference.predictor import Predictor, Result
    from seqpatch_core.method.models import load_models

#: public name -> the module that defines it
_LAZY = {
    "Predictor": "seqpatch_core.inference.predictor",
    "Result": "seqpatch_core.inference.predictor",
    "Volume": "seqpatch_core.images.volume",
    "load_models": "seqpatch_core.method.models",
    "read_volume": "seqpatch_core.images.io",
    "write_mask": "seqpatch_core.images.io",
}

__all__ = [
    "InputError",
    "Predictor",
    "Result",
    "SeqPatchError",
    "Volume",
    "WeightsError",
    "load_models",
    "read_volume",
    "write_mask",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'seqpatch_core' has no attribute {name!r}")
