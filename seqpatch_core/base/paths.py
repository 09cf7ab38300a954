"""Where the project's own files are: its root and the folders in it (weights, examples).

The one place a path is derived from this package's location; everything else names these.
"""

from __future__ import annotations

from pathlib import Path

#: The project root: the folder holding ``seqpatch_core/``, ``weights/`` and ``examples/``.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: The shipped checkpoints (``seqpatch.safetensors``, ``unet.safetensors``, ``ablations/``).
WEIGHTS_DIR = PROJECT_ROOT / "weights"
#: The bundled example volumes and their labels.
EXAMPLES_DIR = PROJECT_ROOT / "examples"
#: The data folder beside a checkout (``../shared/data``): the default of the commands that read it.
SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"

__all__ = ["EXAMPLES_DIR", "PROJECT_ROOT", "SHARED_DATA_DIR", "WEIGHTS_DIR"]
