"""The options of a training run (:class:`TrainConfig`) and the losses it can take.

Apart from :mod:`seqpatch_core.training` so that the command line reads the defaults of ``train``
from here without importing the training stack: ``python -m seqpatch_core train --help`` and every
other command build the parser, and the dataclass is the one place for those defaults.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    model: str = "seqpatch"
    minutes: float = 60.0
    out: str = "weights/seqpatch.safetensors"
    seed: int = 0
    #: Seed of the validation slices, apart from ``seed`` so that runs with different training
    #: streams pick and report their checkpoints on the same slices.
    val_seed: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1e-5
    slices_per_batch: int = 8
    workers: int = 1
    eval_every_s: float = 120.0
    val_slices: int = 48
    patience: int = 8
    backgrounds: str | None = None
    data: str | None = None
    device: str = "auto"
    amp: bool = True
    resume: bool = False
    threads: int = 0
    init: str | None = None
    rays_per_slice: int = 0
    loss: str = "bce"
    #: Stop after this many optimisation steps in all (a resumed run counts the earlier ones); 0: none.
    max_steps: int = 0
    #: Architecture overrides for ``build_model`` (e.g. ``{"widths": [8, 16, 32]}``, a narrow test net).
    model_config: dict | None = None
    #: Share of training slices that are real atlas structures (``atlas_bank``, prepared by
    #: ``prepare-atlases``; seqpatch_core.data.atlases) instead of synthetic lesions; 0: none.
    atlas_ratio: float = 0.0
    atlas_bank: str | None = None
    #: Where synthetic slices are drawn: ``numpy`` (``synth``, in DataLoader workers on the CPU),
    #: ``torch`` (``synth_torch``, batched on the training device) or ``auto`` (torch on an accelerator).
    generator: str = "auto"
    #: The synthetic recipe (``seqpatch_core.data.recipe.RECIPES``): ``all-sizes`` (objects of 3-80 mm
    #: radius on the 1-8 mm grids, organ-like neighbours and inner vessels, clicks in the inner half)
    #: or ``lesions`` (the recipe of the phase 1-9 weights and of the evaluation sets).
    recipe: str = "all-sizes"


#: Training losses: the paper's binary cross-entropy, or that plus a soft Dice term.
LOSSES = ("bce", "bce+dice")
