"""Training data: the batches every model trains on and the held-out validation slices.

A batch is ``n`` slices sharing one ray preset, from the synthetic generator (``seqpatch_core.data.synth``),
optionally mixed with labelled pairs (``seqpatch_core.data.datasets``) and real atlas structures
(``seqpatch_core.data.atlases``); clicks are the mass centre plus jitter up to 30 % of the object's radius,
with a flip and intensity augmentation. :func:`targets_for` turns a batch into network inputs and soft
targets: the 16 ray sequences of each slice for the sequential net, the square field of view around the
click that the same preset covers for the U-net. The training loop is :mod:`seqpatch_core.training`.

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

from pathlib import Path

import numpy as np
import torch

from seqpatch_core.data import synth
from seqpatch_core.data.backgrounds import BackgroundBank
from seqpatch_core.method import rays

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


def augment_slice(s, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A slice as training sees it: image, label (H, W) float32 and click (2,) float64 (y, x), the click
    jittered (80 %), all flipped left-right (50 %), then :func:`_augment`."""
    img = s.image
    lab = s.label.astype(np.float32)
    click = np.asarray(s.click, dtype=np.float64)
    if rng.random() < 0.8:
        click = np.asarray(synth.jitter_click(s.click, s.label, rng, max_frac=0.3), dtype=np.float64)
    # flips: the generator is already rotation/flip-randomised; one more flip is cheap
    if rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
        click[1] = img.shape[1] - 1 - click[1]
    return _augment(np.ascontiguousarray(img), rng), np.ascontiguousarray(lab), click


def make_batch(
    rng: np.random.Generator, n: int, bank, pairs=None, rays_per_slice: int = 0, atlases=None,
    atlas_ratio: float = 0.0,
) -> dict:
    """One training batch of ``n`` slices sharing a preset: images, labels (n, H, W) float32, clicks (n, 2).

    ``rays_per_slice`` > 0 also draws that many distinct ray indices per slice (``"rays"``, (n, R)
    int64) for the sequential net to train on; 0 keeps all of them. With an ``atlases`` bank
    (:class:`seqpatch_core.data.atlases.AtlasBank`) a slice is a real atlas object (train split, the
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
        img, lab, click = augment_slice(s, rng)
        imgs.append(img)
        labs.append(lab)
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
            from seqpatch_core.data.datasets import LabelledPairs

            pairs = LabelledPairs(self.data)
        atlases = load_atlases(self.atlas_bank) if self.atlas_ratio > 0 else None

        def draw(rng, n, *args):  # make_batch with this stream's atlas mix
            return make_batch(rng, n, *args, atlases=atlases, atlas_ratio=self.atlas_ratio)

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
    share one spacing. Of them, atlas structures (``atlas_ratio``) and labelled pairs (half the rest,
    with ``data``) are picked and augmented on the CPU as ``make_batch`` does; the synthetic rest comes
    from :class:`seqpatch_core.data.synth_torch.DeviceSynth`. The stream depends on (seed, step, first_slice,
    n), so unlike SliceStream's it changes with the number of processes.
    """

    def __init__(
        self, seed: int, n: int, bank_path: str | None, device: torch.device, data: str | None = None,
        rays_per_slice: int = 0, *, start_step: int = 0, first_slice: int = 0,
        atlas_bank: str | None = None, atlas_ratio: float = 0.0,
    ):
        from seqpatch_core.data.synth_torch import DeviceSynth

        self.seed, self.n, self.device, self.rays_per_slice = seed, n, device, rays_per_slice
        self.step, self.first_slice = start_step, first_slice
        self.synth = DeviceSynth(device, SLICE_SIZE, load_bank(bank_path, "train"))
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

    def batch(self, step: int) -> dict:
        """Step ``step``'s batch: images, labels (n, H, W) float32 on the device, clicks (n, 2) float64."""
        header = np.random.default_rng(np.random.SeedSequence([self.seed, STEP_STREAM, step]))
        names = list(TRAIN_PRESETS)
        preset = names[header.choice(len(names), p=list(TRAIN_PRESETS.values()))]
        spacing = float(header.uniform(*SPACING_RANGE))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, REAL_STREAM, step, self.first_slice]))
        real = []
        for _ in range(self.n):
            if self.atlases is not None and rng.random() < self.atlas_ratio:
                real.append(augment_slice(self.atlases.sample(rng, SLICE_SIZE, "train", spacing_mm=spacing), rng))
            elif self.pairs is not None and rng.random() < 0.5:
                real.append(augment_slice(self.pairs.sample(rng, SLICE_SIZE), rng))
        n_synth = self.n - len(real)
        images, labels, clicks = [], [], []
        if n_synth:
            state = np.random.SeedSequence([self.seed, DEVICE_STREAM, step, self.first_slice]).generate_state(1)
            b = self.synth.batch(n_synth, spacing, int(state[0]))
            images.append(b["images"]), labels.append(b["labels"]), clicks.append(b["clicks"])
        if real:
            images.append(torch.from_numpy(np.stack([r[0] for r in real])).to(self.device))
            labels.append(torch.from_numpy(np.stack([r[1] for r in real])).to(self.device))
            clicks.append(torch.from_numpy(np.stack([r[2] for r in real])))
        batch = {"images": torch.cat(images), "labels": torch.cat(labels), "clicks": torch.cat(clicks),
                 "preset": preset}  # fmt: skip
        n_rays = rays.get_preset(preset).n_rays
        if 0 < self.rays_per_slice < n_rays:
            batch["rays"] = torch.from_numpy(
                np.stack([rng.choice(n_rays, self.rays_per_slice, replace=False) for _ in range(self.n)])
            )
        return batch


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

