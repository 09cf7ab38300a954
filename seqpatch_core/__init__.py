"""SeqPatch core: one-click sequential patch-based segmentation of CT and MR slices.

No UI imports here. Arrays are (z, y, x) everywhere; see :mod:`seqpatch_core.io`.
"""

from seqpatch_core.errors import InputError, SeqPatchError, WeightsError

__all__ = ["InputError", "SeqPatchError", "WeightsError"]
__version__ = "0.1.0"
