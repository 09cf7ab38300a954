"""Real anatomy for synthetic backgrounds: :class:`BackgroundBank`, its reading, storage and splits.

Slices keep their raw intensities (HU for CT, scanner units for MR) and are windowed only when a crop
is drawn (:meth:`BackgroundBank.sample`), with a random CT preset or percentile window. The split is by
relative z-position in the source volume, measured over the span of tissue-bearing slices: ``"train"``
below 0.8, ``"val"`` (anatomy training never sees; :func:`seqpatch_core.data.synth.benchmark_set`) the rest.

Arrays are (y, x) per slice; volumes read from disk are (z, y, x) and only axial array slices (index z)
are kept. Nothing runs on import.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from seqpatch_core.base.errors import InputError
from seqpatch_core.images.formats import VOLUME_SUFFIXES
from seqpatch_core.images.intensity import CT_PRESETS, Window, apply_window
from seqpatch_core.images.volume import looks_like_ct

logger = logging.getLogger(__name__)

__all__ = ["BackgroundBank"]

# Soft-tissue and lung windows are where lesions are segmented most often.
_CT_PRESET_PROBS: dict[str, float] = {"soft": 0.4, "lung": 0.3, "bone": 0.15, "brain": 0.15}

_TRAIN_MAX_REL_Z = 0.8  # relative z below this -> "train", else "val"
_MIN_CONTENT_FRAC = 0.3  # a kept slice needs at least this fraction of non-air pixels

_F32 = np.float32


def _window01(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """clip((a - lo) / (hi - lo), 0, 1) as float32 (:func:`~seqpatch_core.images.intensity.apply_window`)."""
    return apply_window(a, Window(float(lo), max(float(hi), float(lo) + 1e-6), "bank"))


def _content_threshold(a: np.ndarray, modality: str) -> float:
    """Raw-intensity threshold separating air / background from tissue for one volume or slice."""
    if modality == "CT":
        return -500.0
    # Percentiles, not min/max: templates can have a few negative voxels inside tissue while the
    # background is exactly 0.
    lo, hi = (float(v) for v in np.percentile(a, [1, 99]))
    return lo + 0.1 * (hi - lo)


def _storage_dtype(modality: str, a: np.ndarray) -> np.dtype:
    if modality == "CT":
        return np.dtype(np.int16)
    return np.dtype(np.float16) if float(np.max(np.abs(a))) < 60000 else np.dtype(np.float32)


def _to_storage(a: np.ndarray, modality: str) -> np.ndarray:
    dt = _storage_dtype(modality, a)
    if a.dtype == dt:
        return a
    if dt == np.int16:
        return np.clip(np.rint(a), -32768, 32767).astype(np.int16)
    return a.astype(dt)


def _read_volume_any(path: Path):  # -> seqpatch_core.images.io.Volume
    # Lazy import: SimpleITK (behind io) is absent on the training machine, which only loads npz caches.
    from seqpatch_core.images.io import read_volume

    return read_volume(path)


def _split_indices(rel_z: Sequence[float], split: str) -> np.ndarray:
    """Indices (int64) of the slices in ``split``: "train" rel_z < 0.8, "val" the rest, or "all"."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', not {split!r}")
    keep = [i for i, r in enumerate(rel_z) if split == "all" or (r < _TRAIN_MAX_REL_Z) == (split == "train")]
    return np.array(keep, dtype=np.int64)


class BackgroundBank:
    """Real anatomy slices (raw intensities) for synthetic backgrounds.

    Each slice is a 2-D (y, x) array of raw intensities (HU, stored int16, for CT; arbitrary units,
    stored float16 or float32, for MR) with its in-plane spacing (sy, sx) in mm, its modality
    ("CT" or "MR"), its relative z-position in its volume (0..1, over the span of kept tissue slices;
    see :meth:`from_dir`) and its source name.

    The bank keeps all slices; ``split`` selects which ones :meth:`sample` draws from: ``"train"``
    (relative z < 0.8), ``"val"`` (the rest) or ``"all"``. :meth:`save` always writes all slices.
    """

    def __init__(
        self,
        slices: Sequence[np.ndarray],
        spacings: Sequence[tuple[float, float]],
        modalities: Sequence[str],
        rel_z: Sequence[float],
        names: Sequence[str] | None = None,
        split: str = "all",
    ) -> None:
        n = len(slices)
        if not (len(spacings) == len(modalities) == len(rel_z) == n):
            raise ValueError("slices, spacings, modalities and rel_z must have the same length")
        for m in modalities:
            if m not in ("CT", "MR"):
                raise ValueError(f"modality must be 'CT' or 'MR', not {m!r}")
        self.modalities = [str(m) for m in modalities]
        self.slices = [_to_storage(np.asarray(s), m) for s, m in zip(slices, self.modalities, strict=True)]
        self.spacings = [(float(s[0]), float(s[1])) for s in spacings]
        self.rel_z = [float(r) for r in rel_z]
        self.names = [str(x) for x in names] if names is not None else ["slice"] * n
        self.split = split
        # Per-slice air threshold, used to centre crops on tissue.
        self._thresh = [_content_threshold(s, m) for s, m in zip(self.slices, self.modalities, strict=True)]
        self._active = _split_indices(self.rel_z, split)

    def __len__(self) -> int:
        """Number of slices in the active split."""
        return int(self._active.size)

    def with_split(self, split: str) -> BackgroundBank:
        """The same slices (shared, not copied) with another active ``split``."""
        new = object.__new__(BackgroundBank)
        new.__dict__.update(self.__dict__)
        new.split = split
        new._active = _split_indices(self.rel_z, split)
        return new

    # ---- construction / persistence --------------------------------------------------------------
    @classmethod
    def from_dir(
        cls, path: str | Path, split: str = "all", every: int = 2, min_content: float = _MIN_CONTENT_FRAC
    ) -> BackgroundBank:
        """Read every volume file in folder ``path`` and keep every ``every``-th axial slice (array z)
        whose fraction of non-air pixels is at least ``min_content``.

        Uses :func:`seqpatch_core.images.io.read_volume` (needs SimpleITK). Modality comes from the Volume;
        when it is "unknown", a volume whose minimum is <= -500 is taken as CT (HU), else MR.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise InputError(f"background folder not found: {folder}")
        files = sorted(p for p in folder.iterdir() if p.name.lower().endswith(VOLUME_SUFFIXES))
        slices: list[np.ndarray] = []
        spacings: list[tuple[float, float]] = []
        mods: list[str] = []
        rel: list[float] = []
        names: list[str] = []
        for f in files:
            vol = _read_volume_any(f)
            arr = np.asarray(vol.array)
            if arr.ndim != 3:
                logger.warning("skipping %s: not a 3-D volume (shape %s)", f.name, arr.shape)
                continue
            mod = vol.modality
            if mod not in ("CT", "MR"):
                mod = "CT" if looks_like_ct(arr.min()) else "MR"
            thr = _content_threshold(arr, mod)
            nz = arr.shape[0]
            keep = [z for z in range(0, nz, every) if float(np.mean(arr[z] > thr)) >= min_content]
            # Relative z is measured over the span of kept (tissue) slices, not the whole array: in
            # head volumes the last 20 % of the array is mostly air, which would leave "val" empty.
            z0, z1 = (keep[0], keep[-1]) if keep else (0, 1)
            for z in keep:
                slices.append(_to_storage(arr[z], mod))
                spacings.append((float(vol.spacing[1]), float(vol.spacing[2])))
                mods.append(mod)
                rel.append((z - z0) / max(z1 - z0, 1))
                names.append(f"{f.name.split('.')[0]}:z{z}")
            kept = len(keep)
            logger.info("background %s (%s, %s): kept %d of %d slices", f.name, mod, arr.shape, kept, nz)
        if not slices:
            raise InputError(f"no usable background slices in {folder}")
        return cls(slices, spacings, mods, rel, names, split=split)

    def save(self, path: str | Path) -> None:
        """Write all slices to a compressed ``.npz`` (no pickles; loadable without SimpleITK)."""
        arrays = {f"slice_{i:05d}": s for i, s in enumerate(self.slices)}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            spacing=np.asarray(self.spacings, dtype=np.float64).reshape(-1, 2),
            modality=np.asarray(self.modalities, dtype="U2"),
            rel_z=np.asarray(self.rel_z, dtype=np.float64),
            names=np.asarray(self.names, dtype=str),
            **arrays,
        )

    @classmethod
    def load(cls, path: str | Path, split: str = "all") -> BackgroundBank:
        """Read a bank written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as z:
            n = int(z["rel_z"].shape[0])
            slices = [z[f"slice_{i:05d}"] for i in range(n)]
            return cls(
                slices,
                [tuple(s) for s in z["spacing"].tolist()],
                [str(m) for m in z["modality"]],
                z["rel_z"].tolist(),
                [str(x) for x in z["names"]],
                split=split,
            )

    # ---- sampling --------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, size: int, spacing_mm: float) -> tuple[np.ndarray, str]:
        """A random windowed crop: (float32 (size, size) in [0, 1], modality "CT"/"MR")."""
        img, mod, _ = self._sample(rng, size, spacing_mm)
        return img, mod

    def _sample(self, rng: np.random.Generator, size: int, spacing_mm: float) -> tuple[np.ndarray, str, str]:
        if len(self) == 0:
            raise InputError(f"background bank has no slices in split {self.split!r}")
        i = int(self._active[rng.integers(len(self))])
        sl, (sy, sx), mod = self.slices[i], self.spacings[i], self.modalities[i]
        h, w = sl.shape
        # Crop centre well inside tissue (the point and 4 probes 15 mm away): the target is placed near
        # the image centre and should not float in air. Keep the best of 30 tries.
        ry, rx = 15.0 / sy, 15.0 / sx
        best, cy, cx = -1, h / 2, w / 2
        for _ in range(30):
            py, px_ = rng.uniform(0, h), rng.uniform(0, w)
            probes = [(py, px_), (py - ry, px_), (py + ry, px_), (py, px_ - rx), (py, px_ + rx)]
            thr = self._thresh[i]
            score = sum(1 for qy, qx in probes if 0 <= qy < h and 0 <= qx < w and sl[int(qy), int(qx)] > thr)
            if score > best:
                best, cy, cx = score, py, px_
            if score == len(probes):
                break
        ch, cw = size * spacing_mm / sy, size * spacing_mm / sx  # crop size in source pixels
        y0, x0 = int(round(cy - ch / 2)), int(round(cx - cw / 2))
        sy0, sx0 = max(y0, 0), max(x0, 0)
        sy1, sx1 = min(int(round(y0 + ch)), h), min(int(round(x0 + cw)), w)
        sub = sl[sy0:sy1, sx0:sx1].astype(_F32)
        zoomed = ndi.zoom(sub, (sy / spacing_mm, sx / spacing_mm), order=1, output=_F32, grid_mode=False)
        if mod == "CT":
            name = str(rng.choice(list(_CT_PRESET_PROBS), p=list(_CT_PRESET_PROBS.values())))
            width, level = CT_PRESETS[name]
            width *= 1.0 + rng.uniform(-0.15, 0.15)
            level += rng.uniform(-0.1, 0.1) * width
            win = _window01(zoomed, level - width / 2, level + width / 2)
            wdesc = name
        else:
            plo, phi = rng.uniform(0.0, 2.0), rng.uniform(98.0, 100.0)
            lo, hi = np.percentile(zoomed, [plo, phi]) if zoomed.size else (0.0, 1.0)
            win = _window01(zoomed, float(lo), float(hi))
            wdesc = f"p{plo:.1f}-{phi:.1f}"
        # Paste into a zero canvas: crops running off the slice are padded with 0 (displayed black).
        out = np.zeros((size, size), dtype=_F32)
        oy, ox = int(round((sy0 - y0) * sy / spacing_mm)), int(round((sx0 - x0) * sx / spacing_mm))
        ph, pw = min(win.shape[0], size - oy), min(win.shape[1], size - ox)
        if ph > 0 and pw > 0:
            out[oy : oy + ph, ox : ox + pw] = win[:ph, :pw]
        if rng.random() < 0.5:
            out = out[:, ::-1]
        out = np.ascontiguousarray(np.rot90(out, int(rng.integers(4))))
        return out, mod, f"bank({self.names[i]},{mod},{wdesc})"
