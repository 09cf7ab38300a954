"""Training data: the batches every model trains on and the held-out validation slices.

A batch (:class:`Batch`) is ``n`` slices sharing one ray preset, from the synthetic generator
(``seqpatch_core.data.synth``), optionally mixed with labelled pairs (``seqpatch_core.data.datasets``) and
real atlas structures (``seqpatch_core.data.atlases``), made by one synthetic recipe
(:mod:`seqpatch_core.data.recipe`: each slice's working spacing, the objects' sizes and neighbours, the
click rule), with a flip and intensity augmentation. :func:`targets_for` turns a batch into network
inputs and soft targets: the 16 ray sequences of each slice for the sequential net, the square field of
view around the click that the same preset covers for the U-net. The training loop is
:mod:`seqpatch_core.training.loop`.

**Seed streams.** The data do not depend on how many processes or loader workers make them: step s
draws its preset from ``SeedSequence([seed, 2, s])`` and slice i of its batch (i < ``--batch``, the
global batch) is a one-slice ``make_batch`` on ``SeedSequence([seed, 3, s, i])``. A resumed run goes
on from its step count, so it sees new slices, the ones an uninterrupted run would have seen.
:class:`SliceStream` hands these batches to a DataLoader, steps spread over its workers.

With ``train --generator torch`` (the default on an accelerator) :class:`DeviceStream` makes each
step's synthetic slices as one batch on the training device (``seqpatch_core.data.synth_torch``); real
slices (atlas structures, labelled pairs) are still picked and augmented on the CPU.

Validation slices (:func:`validation_set`) come from ``synth.benchmark_set`` (its own seed stream,
``val_seed``, and the background bank's held-out split) and the atlas bank's validation split.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from seqpatch_core.data import synth
from seqpatch_core.data.backgrounds import BackgroundBank
from seqpatch_core.data.recipe import LESIONS, Recipe
from seqpatch_core.method import rays

#: Presets a batch draws from, with their probabilities (the working spacings are the recipe's).
TRAIN_PRESETS = {"ct": 0.4, "promise12": 0.4, "mr": 0.2}
SLICE_SIZE = 192


@dataclass
class Batch:
    """One training step's slices (or one process's share of them).

    Attributes:
        images: (n, H, W) float32 in [0, 1], the slices as displayed, each on its own working grid.
        labels: (n, H, W) float32, 1 on the target object.
        clicks: (n, 2) float64 (y, x) pixels of the slice grid, on the CPU (the ray geometry's side).
        preset: the ray preset (``rays.get_preset``) of every slice of the step.
        rays: (n, R) int64 distinct ray indices per slice that the sequential net trains on, or
            ``None``: all of them.
    """

    images: torch.Tensor
    labels: torch.Tensor
    clicks: torch.Tensor
    preset: str
    rays: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def pin_memory(self) -> Batch:
        """The batch with its tensors in pinned memory (the DataLoader calls this with ``pin_memory``)."""
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.clicks.pin_memory(), self.preset,
                     None if self.rays is None else self.rays.pin_memory())  # fmt: skip

    @classmethod
    def cat(cls, parts: list[Batch], preset: str) -> Batch:
        """The slices of ``parts`` in order, as one batch with ``preset`` (the parts' own draws are not used)."""
        rays_ = [p.rays for p in parts]
        if any(r is None for r in rays_) and not all(r is None for r in rays_):
            raise ValueError("some parts choose ray subsets and some do not")
        return cls(
            images=torch.cat([p.images for p in parts]),
            labels=torch.cat([p.labels for p in parts]),
            clicks=torch.cat([p.clicks for p in parts]),
            preset=preset,
            rays=None if rays_[0] is None else torch.cat(rays_),
        )


def _augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Intensity augmentation on a [0, 1] display slice: gamma and contrast/brightness jitter."""
    if rng.random() < 0.5:
        img = img ** float(np.exp(rng.uniform(-0.35, 0.35)))
    if rng.random() < 0.5:
        img = (img - 0.5) * rng.uniform(0.8, 1.25) + 0.5 + rng.uniform(-0.08, 0.08)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def augment_slice(
    s, rng: np.random.Generator, recipe: Recipe = LESIONS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A slice as training sees it: image, label (H, W) float32 and click (2,) float64 (y, x), the click
    moved by the recipe's rule (``synth.move_click``), all flipped left-right (50 %), then :func:`_augment`."""
    img = s.image
    lab = s.label.astype(np.float32)
    click = np.asarray(synth.move_click(s.click, s.label, rng, recipe), dtype=np.float64)
    # flips: the generator is already rotation/flip-randomised; one more flip is cheap
    if rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
        click[1] = img.shape[1] - 1 - click[1]
    return _augment(np.ascontiguousarray(img), rng), np.ascontiguousarray(lab), click


def make_batch(
    rng: np.random.Generator, n: int, bank, pairs=None, rays_per_slice: int = 0, atlases=None,
    atlas_ratio: float = 0.0, recipe: Recipe = LESIONS,
) -> Batch:
    """One training batch of ``n`` slices sharing a preset and a working spacing (``recipe.draw_spacing``).

    ``rays_per_slice`` > 0 also draws that many distinct ray indices per slice (``Batch.rays``) for
    the sequential net to train on; 0 keeps all of them. With an ``atlases`` bank
    (:class:`seqpatch_core.data.atlases.AtlasBank`) a slice is a real atlas object (train split, the
    batch's spacing, made no coarser than ``recipe.atlas_max_spacing_mm``) with probability
    ``atlas_ratio``, else as before.
    """
    names = list(TRAIN_PRESETS)
    preset = names[rng.choice(len(names), p=list(TRAIN_PRESETS.values()))]
    spacing = recipe.draw_spacing(rng)
    imgs, labs, clicks = [], [], []
    for _ in range(n):
        if atlases is not None and atlas_ratio > 0 and rng.random() < atlas_ratio:
            s = atlases.sample(rng, SLICE_SIZE, "train", spacing_mm=recipe.atlas_spacing(spacing))
        elif pairs is not None and rng.random() < 0.5:
            s = pairs.sample(rng, SLICE_SIZE)
        else:
            s = synth.make_slice(rng, size=SLICE_SIZE, spacing_mm=spacing, backgrounds=bank, recipe=recipe)
        img, lab, click = augment_slice(s, rng, recipe)
        imgs.append(img)
        labs.append(lab)
        clicks.append(click)
    n_rays = rays.get_preset(preset).n_rays
    subset = None
    if 0 < rays_per_slice < n_rays:
        subset = torch.from_numpy(np.stack([rng.choice(n_rays, rays_per_slice, replace=False) for _ in range(n)]))
    return Batch(
        images=torch.from_numpy(np.stack(imgs)),
        labels=torch.from_numpy(np.stack(labs)),
        clicks=torch.from_numpy(np.stack(clicks)),
        preset=preset,
        rays=subset,
    )


#: Tags of the training seed streams: a step's preset is drawn from SeedSequence([seed, STEP_STREAM,
#: step]), slice i of the step's global batch from SeedSequence([seed, SLICE_STREAM, step, i]).
STEP_STREAM, SLICE_STREAM = 2, 3


def step_batch(seed: int, step: int, slices: range, make_one) -> Batch:
    """Slices ``slices`` (indices into the global batch) of training step ``step``, as one batch.

    The step's ray preset comes from its own stream and is the same for every slice (and on every
    process); each slice is ``make_one(rng)`` (a one-slice ``make_batch``) on its own stream, so a
    slice's content depends only on (seed, step, i), never on how the global batch is split.
    """
    header = np.random.default_rng(np.random.SeedSequence([seed, STEP_STREAM, step]))
    names = list(TRAIN_PRESETS)
    preset = names[header.choice(len(names), p=list(TRAIN_PRESETS.values()))]
    parts = [make_one(np.random.default_rng(np.random.SeedSequence([seed, SLICE_STREAM, step, i]))) for i in slices]
    batch = Batch.cat(parts, preset)  # the slice's own draw of a preset is not used
    if batch.rays is not None and int(batch.rays.max()) >= rays.get_preset(preset).n_rays:
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
        atlas_bank: str | None = None, atlas_ratio: float = 0.0, recipe: Recipe = LESIONS,
    ):
        self.seed, self.n, self.bank_path, self.round, self.data = seed, n, bank_path, round_, data
        self.rays_per_slice, self.recipe = rays_per_slice, recipe
        self.atlas_bank, self.atlas_ratio = atlas_bank, atlas_ratio
        self.start_step, self.first_slice = start_step, first_slice

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        torch.set_num_threads(1)
        bank = load_bank(self.bank_path, "train")
        pairs = None
        if self.data:
            from seqpatch_core.data.datasets import LabelledPairs

            pairs = LabelledPairs(self.data)
        atlases = load_atlases(self.atlas_bank) if self.atlas_ratio > 0 else None

        def draw(rng, n, *args):  # make_batch with this stream's atlas mix and recipe
            return make_batch(rng, n, *args, atlases=atlases, atlas_ratio=self.atlas_ratio, recipe=self.recipe)

        slices = range(self.first_slice, self.first_slice + self.n)
        step = self.start_step + wid
        while True:
            yield step_batch(self.seed, step, slices, lambda rng: draw(rng, 1, bank, pairs, self.rays_per_slice))
            step += n_workers


#: Tags of the device generator's streams: a step's real slices and ray subsets come from
#: SeedSequence([seed, REAL_STREAM, step, first_slice]), its synthetic slices from a torch generator
#: seeded from SeedSequence([seed, DEVICE_STREAM, step, first_slice]).
REAL_STREAM, DEVICE_STREAM = 4, 5

#: Generators of the synthetic slices: numpy on CPU loader workers (``synth``) or torch on the training
#: device (``synth_torch``); ``auto`` is torch on an accelerator and numpy on a CPU, where numpy's
#: one-slice code is the faster (``bench --train-step``).
GENERATORS = ("auto", "numpy", "torch")


def resolve_generator(name: str, device: torch.device) -> str:
    """``numpy`` or ``torch`` for a ``--generator`` name on ``device``."""
    if name not in GENERATORS:
        raise ValueError(f"generator must be one of {', '.join(GENERATORS)}, got {name!r}")
    if name == "auto":
        return "numpy" if device.type == "cpu" else "torch"
    return name


class DeviceStream:
    """Endless batches like :class:`SliceStream`'s, made on the training ``device`` in one call per step.

    Each step's preset is :func:`step_batch`'s (the same on every process); the step's ``n`` slices
    share one spacing (``recipe.draw_spacing``). Of them, atlas structures (``atlas_ratio``) and
    labelled pairs (half the rest, with ``data``) are picked and augmented on the CPU as ``make_batch``
    does; the synthetic rest comes from :class:`seqpatch_core.data.synth_torch.DeviceSynth`. The stream
    depends on (seed, step, first_slice, n), so unlike SliceStream's it changes with the number of
    processes.
    """

    def __init__(
        self, seed: int, n: int, bank_path: str | None, device: torch.device, data: str | None = None,
        rays_per_slice: int = 0, *, start_step: int = 0, first_slice: int = 0,
        atlas_bank: str | None = None, atlas_ratio: float = 0.0, recipe: Recipe = LESIONS,
    ):
        from seqpatch_core.data.synth_torch import DeviceSynth

        self.seed, self.n, self.device, self.rays_per_slice = seed, n, device, rays_per_slice
        self.step, self.first_slice, self.recipe = start_step, first_slice, recipe
        self.synth = DeviceSynth(device, SLICE_SIZE, load_bank(bank_path, "train"), recipe)
        self.pairs = None
        if data:
            from seqpatch_core.data.datasets import LabelledPairs

            self.pairs = LabelledPairs(data)
        self.atlases = load_atlases(atlas_bank) if atlas_ratio > 0 else None
        self.atlas_ratio = atlas_ratio

    def __iter__(self):
        while True:
            yield self.batch(self.step)
            self.step += 1

    def batch(self, step: int) -> Batch:
        """Step ``step``'s batch: images, labels on the device, clicks on the CPU (:class:`Batch`)."""
        header = np.random.default_rng(np.random.SeedSequence([self.seed, STEP_STREAM, step]))
        names = list(TRAIN_PRESETS)
        preset = names[header.choice(len(names), p=list(TRAIN_PRESETS.values()))]
        spacing = self.recipe.draw_spacing(header)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, REAL_STREAM, step, self.first_slice]))
        real = []
        for _ in range(self.n):
            if self.atlases is not None and rng.random() < self.atlas_ratio:
                s = self.atlases.sample(rng, SLICE_SIZE, "train", spacing_mm=self.recipe.atlas_spacing(spacing))
                real.append(augment_slice(s, rng, self.recipe))
            elif self.pairs is not None and rng.random() < 0.5:
                real.append(augment_slice(self.pairs.sample(rng, SLICE_SIZE), rng, self.recipe))
        n_synth = self.n - len(real)
        images, labels, clicks = [], [], []
        if n_synth:
            state = np.random.SeedSequence([self.seed, DEVICE_STREAM, step, self.first_slice]).generate_state(1)
            b = self.synth.batch(n_synth, spacing, int(state[0]))
            images.append(b.images), labels.append(b.labels), clicks.append(b.clicks)
        if real:
            images.append(torch.from_numpy(np.stack([r[0] for r in real])).to(self.device))
            labels.append(torch.from_numpy(np.stack([r[1] for r in real])).to(self.device))
            clicks.append(torch.from_numpy(np.stack([r[2] for r in real])))
        n_rays = rays.get_preset(preset).n_rays
        subset = None
        if 0 < self.rays_per_slice < n_rays:
            subset = torch.from_numpy(
                np.stack([rng.choice(n_rays, self.rays_per_slice, replace=False) for _ in range(self.n)])
            )
        return Batch(torch.cat(images), torch.cat(labels), torch.cat(clicks), preset, subset)


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
    from seqpatch_core.data.atlases import DEFAULT_DIR, AtlasBank

    return AtlasBank(path or DEFAULT_DIR)


def targets_for(arch: str, batch: Batch, cfg: rays.RayConfig, device: torch.device):
    """Network inputs and soft targets for a batch, sampled on ``device``."""
    images = batch.images.to(device, non_blocking=True)
    labels = batch.labels.to(device, non_blocking=True)
    clicks = batch.clicks
    if arch == "seqpatch":
        # offsets are small (n_rays, K, P, P, 2); the big broadcast add happens on the device
        offsets = torch.tensor(rays.patch_offsets(cfg), dtype=torch.float32, device=device)
        if batch.rays is not None:
            # a subset of each slice's rays: rays of one slice are alike, so for the same compute
            # more distinct slices per step; every ray is still one whole inside -> outside sequence
            offsets = offsets[batch.rays.to(device)]  # (n, R, K, P, P, 2)
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
    n: int, seed: int, bank_path: str | None, atlas_ratio: float = 0.0, atlas_bank: str | None = None,
    recipe: Recipe = LESIONS,
) -> list[tuple]:
    """Held-out slices: (slice, preset). Half at 1.0 mm with ``ct``, half at 0.625 mm with ``promise12``.

    With ``atlas_ratio`` > 0, that share of the ``n`` slices (rounded) are atlas objects of the
    bank's validation split (the other hemisphere from training's), at 0.625 mm with ``promise12``,
    drawn from their own seed stream: the checkpoint is chosen on both kinds of object. With a
    recipe whose ``val_large_share`` > 0, that share of the synthetic slices are large objects
    (``val_large_radius_mm`` at ``val_large_spacing_mm``, ``ct``, seed ``seed + 2``), the rest as
    above: the checkpoint is chosen on large objects too. All synthetic slices are drawn by the
    evaluation recipe (``synth.benchmark_set``); only the radius range changes. With a recipe whose
    training clicks go anywhere in the object's inner half (``click_rule`` "inner"), every slice is
    also clicked there once (:func:`~seqpatch_core.data.synth.inner_click`, seeded): ``2 n`` entries,
    the centre clicks first, so the checkpoint is chosen for the clicks a user may make.
    """
    bank = load_bank(bank_path, "val")
    n_atlas = round(n * atlas_ratio) if atlas_ratio > 0 else 0
    n_large = round((n - n_atlas) * recipe.val_large_share)
    n_synth = n - n_atlas - n_large
    half = n_synth // 2
    a = synth.benchmark_set(half, seed, bank, spacing_mm=1.0, size=SLICE_SIZE)
    b = synth.benchmark_set(n_synth - half, seed + 1, bank, spacing_mm=0.625, size=SLICE_SIZE)
    out = [(s, "ct") for s in a] + [(s, "promise12") for s in b]
    if n_large:
        large = synth.benchmark_set(n_large, seed + 2, bank, spacing_mm=recipe.val_large_spacing_mm,
                                    size=SLICE_SIZE, radius_mm=recipe.val_large_radius_mm)  # fmt: skip
        out += [(s, "ct") for s in large]
    if n_atlas:
        atlases = load_atlases(atlas_bank)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
        out += [(atlases.sample(rng, SLICE_SIZE, "val", 0.625), "promise12") for _ in range(n_atlas)]
    if recipe.click_rule == "inner":
        rng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
        out += [(replace(s, click=synth.inner_click(s.click, s.label, rng, recipe.click_frac)), p) for s, p in out]
    return out

