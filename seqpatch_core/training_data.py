"""Training data: the batches every model trains on and the held-out validation slices.

A batch is ``n`` slices sharing one ray preset, from the synthetic generator (``seqpatch_core.synth``),
optionally mixed with labelled pairs (``seqpatch_core.datasets``) and real atlas structures
(``seqpatch_core.atlases``); clicks are the mass centre plus jitter up to 30 % of the object's radius,
with a flip and intensity augmentation. :func:`targets_for` turns a batch into network inputs and soft
targets: the 16 ray sequences of each slice for the sequential net, the square field of view around the
click that the same preset covers for the U-net. The training loop is :mod:`seqpatch_core.training`.

**Seed streams.** The data do not depend on how many processes or loader workers make them: step s
draws its preset from ``SeedSequence([seed, 2, s])`` and slice i of its batch (i < ``--batch``, the
global batch) is a one-slice ``make_batch`` on ``SeedSequence([seed, 3, s, i])``. A resumed run goes
on from its step count, so it sees new slices, the ones an uninterrupted run would have seen.
:class:`SliceStream` hands these batches to a DataLoader, steps spread over its workers.

Validation slices (:func:`validation_set`) come from ``synth.benchmark_set`` (its own seed stream,
``val_seed``, and the background bank's held-out split) and the atlas bank's validation split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from seqpatch_core import rays, synth
from seqpatch_core.backgrounds import BackgroundBank

#: Presets a batch draws from, with their probabilities, and the spacing range (mm) of generated slices.
TRAIN_PRESETS = {"ct": 0.4, "promise12": 0.4, "mr": 0.2}
SPACING_RANGE = (0.6, 1.1)
SLICE_SIZE = 192


def _augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Intensity augmentation on a [0, 1] display slice: gamma and contrast/brightness jitter."""
    if rng.random() < 0.5:
        img = img ** float(np.exp(rng.uniform(-0.35, 0.35)))
    if rng.random() < 0.5:
        img = (img - 0.5) * rng.uniform(0.8, 1.25) + 0.5 + rng.uniform(-0.08, 0.08)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def make_batch(
    rng: np.random.Generator, n: int, bank, pairs=None, rays_per_slice: int = 0, atlases=None,
    atlas_ratio: float = 0.0,
) -> dict:
    """One training batch of ``n`` slices sharing a preset: images, labels (n, H, W) float32, clicks (n, 2).

    ``rays_per_slice`` > 0 also draws that many distinct ray indices per slice (``"rays"``, (n, R)
    int64) for the sequential net to train on; 0 keeps all of them. With an ``atlases`` bank
    (:class:`seqpatch_core.atlases.AtlasBank`) a slice is a real atlas object (train split, the
    batch's spacing) with probability ``atlas_ratio``, else as before.
    """
    names = list(TRAIN_PRESETS)
    preset = names[rng.choice(len(names), p=list(TRAIN_PRESETS.values()))]
    spacing = float(rng.uniform(*SPACING_RANGE))
    imgs, labs, clicks = [], [], []
    for _ in range(n):
        if atlases is not None and atlas_ratio > 0 and rng.random() < atlas_ratio:
            s = atlases.sample(rng, SLICE_SIZE, "train", spacing_mm=spacing)
        elif pairs is not None and rng.random() < 0.5:
            s = pairs.sample(rng, SLICE_SIZE)
        else:
            s = synth.make_slice(rng, size=SLICE_SIZE, spacing_mm=spacing, backgrounds=bank)
        img = s.image
        lab = s.label.astype(np.float32)
        click = np.asarray(s.click, dtype=np.float64)
        if rng.random() < 0.8:
            click = np.asarray(synth.jitter_click(s.click, s.label, rng, max_frac=0.3), dtype=np.float64)
        # flips: the generator is already rotation/flip-randomised; one more flip is cheap
        if rng.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
            click[1] = img.shape[1] - 1 - click[1]
        imgs.append(_augment(np.ascontiguousarray(img), rng))
        labs.append(np.ascontiguousarray(lab))
        clicks.append(click)
    batch = {
        "images": torch.from_numpy(np.stack(imgs)),
        "labels": torch.from_numpy(np.stack(labs)),
        "clicks": torch.from_numpy(np.stack(clicks)),
        "preset": preset,
    }
    n_rays = rays.get_preset(preset).n_rays
    if 0 < rays_per_slice < n_rays:
        batch["rays"] = torch.from_numpy(
            np.stack([rng.choice(n_rays, rays_per_slice, replace=False) for _ in range(n)])
        )
    return batch


#: Tags of the training seed streams: a step's preset is drawn from SeedSequence([seed, STEP_STREAM,
#: step]), slice i of the step's global batch from SeedSequence([seed, SLICE_STREAM, step, i]).
STEP_STREAM, SLICE_STREAM = 2, 3


def step_batch(seed: int, step: int, slices: range, make_one) -> dict:
    """Slices ``slices`` (indices into the global batch) of training step ``step``, as one batch.

    The step's ray preset comes from its own stream and is the same for every slice (and on every
    process); each slice is ``make_one(rng)`` (a one-slice ``make_batch``) on its own stream, so a
    slice's content depends only on (seed, step, i), never on how the global batch is split.
    """
    header = np.random.default_rng(np.random.SeedSequence([seed, STEP_STREAM, step]))
    names = list(TRAIN_PRESETS)
    preset = names[header.choice(len(names), p=list(TRAIN_PRESETS.values()))]
    parts = [make_one(np.random.default_rng(np.random.SeedSequence([seed, SLICE_STREAM, step, i]))) for i in slices]
    batch = {}
    for key, first in parts[0].items():
        if isinstance(first, torch.Tensor):
            batch[key] = torch.cat([part[key] for part in parts])
        elif isinstance(first, list):
            batch[key] = [v for part in parts for v in part[key]]
        else:
            batch[key] = first
    batch["preset"] = preset  # the slice's own draw of a preset is not used
    if "rays" in batch and int(batch["rays"].max()) >= rays.get_preset(preset).n_rays:
        raise ValueError("the ray presets differ in their number of rays: draw the ray subset per step")
    return batch


class SliceStream(torch.utils.data.IterableDataset):
    """Endless batches, one per step from ``start_step``: slices ``first_slice`` .. ``first_slice + n - 1``
    of each step's global batch (:func:`step_batch`). DataLoader worker w of W makes steps
    start_step + w, start_step + w + W, ... (the loader hands them out in step order), so the stream
    depends neither on the number of workers nor on the number of processes.
    """

    def __init__(
        self, seed: int, n: int, bank_path: str | None, round_: int, data: str | None = None, rays_per_slice: int = 0,
        *, start_step: int = 0, first_slice: int = 0,
        atlas_bank: str | None = None, atlas_ratio: float = 0.0,
    ):
        self.seed, self.n, self.bank_path, self.round, self.data = seed, n, bank_path, round_, data
        self.rays_per_slice = rays_per_slice
        self.atlas_bank, self.atlas_ratio = atlas_bank, atlas_ratio
        self.start_step, self.first_slice = start_step, first_slice

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        torch.set_num_threads(1)
        bank = load_bank(self.bank_path, "train")
        pairs = None
        if self.data:
            from seqpatch_core.datasets import LabelledPairs

            pairs = LabelledPairs(self.data)
        atlases = load_atlases(self.atlas_bank) if self.atlas_ratio > 0 else None

        def draw(rng, n, *args):  # make_batch with this stream's atlas mix
            return make_batch(rng, n, *args, atlases=atlases, atlas_ratio=self.atlas_ratio)

        slices = range(self.first_slice, self.first_slice + self.n)
        step = self.start_step + wid
        while True:
            yield step_batch(self.seed, step, slices, lambda rng: draw(rng, 1, bank, pairs, self.rays_per_slice))
            step += n_workers


def load_bank(path: str | None, split: str):
    """A BackgroundBank from a folder of volumes or an .npz cache; None (phantoms only) if no path."""
    if not path:
        return None
    p = Path(path)
    if p.suffix == ".npz":
        return BackgroundBank.load(p, split=split)
    return BackgroundBank.from_dir(p).with_split(split)


def load_atlases(path: str | None):
    """An AtlasBank from ``prepare-atlases`` output (default folder when no path)."""
    from seqpatch_core.atlases import DEFAULT_DIR, AtlasBank

    return AtlasBank(path or DEFAULT_DIR)


def targets_for(arch: str, batch: dict, cfg: rays.RayConfig, device: torch.device):
    """Network inputs and soft targets for a batch, sampled on ``device``."""
    images = batch["images"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)
    clicks = batch["clicks"]
    if arch == "seqpatch":
        # offsets are small (n_rays, K, P, P, 2); the big broadcast add happens on the device
        offsets = torch.tensor(rays.patch_offsets(cfg), dtype=torch.float32, device=device)
        if "rays" in batch:
            # a subset of each slice's rays: rays of one slice are alike, so for the same compute
            # more distinct slices per step; every ray is still one whole inside -> outside sequence
            offsets = offsets[batch["rays"].to(device)]  # (n, R, K, P, P, 2)
        grid = clicks.to(device, torch.float32)[:, None, None, None, None, :] + offsets
    else:
        grid = torch.as_tensor(rays.fov_grid(clicks.numpy(), cfg), dtype=torch.float32, device=device)
    x = rays.sample_patches(images, grid)
    y = rays.sample_patches(labels, grid)
    if arch == "seqpatch":
        b, r, k, p, _ = x.shape
        return x.reshape(b * r, k, 1, p, p), y.reshape(b * r, k, 1, p, p)
    return x[:, None], y[:, None]


def validation_set(
    n: int, seed: int, bank_path: str | None, atlas_ratio: float = 0.0, atlas_bank: str | None = None
) -> list[tuple]:
    """Held-out slices: (slice, preset). Half at 1.0 mm with ``ct``, half at 0.625 mm with ``promise12``.

    With ``atlas_ratio`` > 0, that share of the ``n`` slices (rounded) are atlas objects of the
    bank's validation split (the other hemisphere from training's), at 0.625 mm with ``promise12``,
    drawn from their own seed stream: the checkpoint is chosen on both kinds of object.
    """
    bank = load_bank(bank_path, "val")
    n_atlas = round(n * atlas_ratio) if atlas_ratio > 0 else 0
    n_synth = n - n_atlas
    half = n_synth // 2
    a = synth.benchmark_set(half, seed, bank, spacing_mm=1.0, size=SLICE_SIZE)
    b = synth.benchmark_set(n_synth - half, seed + 1, bank, spacing_mm=0.625, size=SLICE_SIZE)
    out = [(s, "ct") for s in a] + [(s, "promise12") for s in b]
    if n_atlas:
        atlases = load_atlases(atlas_bank)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
        out += [(atlases.sample(rng, SLICE_SIZE, "val", 0.625), "promise12") for _ in range(n_atlas)]
    return out

