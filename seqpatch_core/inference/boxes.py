"""Answering boxes with LiteMedSAM: :class:`BoxPredictor`, the box-prompted counterpart of the
click :class:`~seqpatch_core.inference.predictor.Predictor`.

Like SAM's ``SamPredictor``, the image encoder (about 20 times the decoder's cost) runs once per
slice and its embedding is kept (the most recent few slices); a new box on a slice already seen runs
only the prompt encoder and the mask decoder. Boxes are voxel indices in the volume's array order,
``(z, y0, x0, y1, x1)``, corners inclusive (:func:`check_box`); the recipe that turns a slice and a
box into the network's input is :mod:`seqpatch_core.method.box_prompt`.

On a CPU the encoder may run compiled by OpenVINO or ONNX Runtime (:func:`choose_encoder`, the rule of
:mod:`seqpatch_core.inference.engines`: the fastest path whose box answers agree with float32
PyTorch); :func:`on_path` gives the model whose :meth:`~LiteMedSAM.encode` runs on a path, which the
predictor then uses like any other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.lru import LRU
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference import engines
from seqpatch_core.inference.engines import Choice, CompiledModule, EngineSpec
from seqpatch_core.method import box_prompt
from seqpatch_core.method.models.litemedsam import ARCH, LiteMedSAM, load_litemedsam

if TYPE_CHECKING:
    from seqpatch_core.images.volume import Volume

__all__ = [
    "ENCODER_INPUT",
    "Box",
    "BoxPredictor",
    "BoxResult",
    "box_around",
    "check_answers",
    "check_box",
    "choose_encoder",
    "encoder_path",
    "on_path",
]

#: The image encoder's input, one slice: (1, 3, 256, 256) float32 (:func:`box_prompt.prepare_slice`).
ENCODER_INPUT = (1, 3, box_prompt.IMAGE_SIZE, box_prompt.IMAGE_SIZE)
#: The boxes of each check slice: its label's tight box and that box this many px wider (a prompt
#: from a rough drawing or from SeqPatch's mask plus a margin, as the page makes them).
CHECK_MARGINS = (0, 8)


@dataclass(frozen=True)
class Box:
    """A box on slice ``z``: rows ``y0..y1`` and columns ``x0..x1``, both ends inclusive (voxel indices)."""

    z: int
    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the model's order."""
        return self.x0, self.y0, self.x1, self.y1

    def as_list(self) -> list[int]:
        """[z, y0, x0, y1, x1], as given on the command line."""
        return [self.z, self.y0, self.x0, self.y1, self.x1]


def check_box(box: Sequence[float], shape: tuple[int, int, int]) -> Box:
    """A :class:`Box` from ``(z, y0, x0, y1, x1)`` on a volume of ``shape`` (z, y, x), or InputError.

    Values must be whole voxel indices (2.0 is fine, 2.5 is not); corners may come in either order.
    A box must lie inside the slice and span at least two pixels in y and in x (a line or a point
    has no area to segment).
    """
    values = [float(v) for v in box]
    if len(values) != 5:
        raise InputError(f"a box needs 5 numbers (z, y0, x0, y1, x1), got {len(values)}")
    if not all(np.isfinite(values)) or any(v != round(v) for v in values):
        raise InputError(f"a box takes whole voxel indices (z, y0, x0, y1, x1), got {_box_text(values)}")
    z, y0, x0, y1, x1 = (int(round(v)) for v in values)
    y0, y1 = sorted((y0, y1))
    x0, x1 = sorted((x0, x1))
    nz, ny, nx = shape
    if not 0 <= z < nz:
        raise InputError(f"box slice z={z} is outside the volume (0..{nz - 1})")
    if y0 < 0 or x0 < 0 or y1 >= ny or x1 >= nx:
        raise InputError(f"box {_box_text(values)} is outside the slice of {ny}×{nx} (y×x, indices from 0)")
    if y1 == y0 or x1 == x0:
        raise InputError(f"box {_box_text(values)} has no area: its corners must differ in both y and x")
    return Box(z, y0, x0, y1, x1)


def _box_text(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def box_around(mask: np.ndarray, z: int, margin: int = 0) -> Box | None:
    """The tight box of a slice mask (H, W), grown by ``margin`` px on each side and kept inside the
    slice; None when the mask is empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    h, w = mask.shape
    return Box(
        int(z),
        max(0, int(ys.min()) - margin),
        max(0, int(xs.min()) - margin),
        min(h - 1, int(ys.max()) + margin),
        min(w - 1, int(xs.max()) + margin),
    )


@dataclass
class BoxResult:
    """LiteMedSAM's answer to one box.

    mask: (H, W) bool on the slice; prob: (H, W) float32, the sigmoid of the logits on the slice;
    encoder_ms: the encoder's time for this answer (0.0 when the slice's embedding was cached);
    decoder_ms: prompt encoder, mask decoder and the resampling to the slice.
    """

    box: Box
    mask: np.ndarray
    prob: np.ndarray
    encoder_ms: float
    decoder_ms: float

    @property
    def cached(self) -> bool:
        return self.encoder_ms == 0.0


class BoxPredictor:
    """Set a volume once, then answer boxes on its slices; one per session, like the Predictor.

    ``model``: a :class:`LiteMedSAM` (default: the shipped weights, :func:`load_litemedsam`);
    ``device``: a torch device; ``cache_slices``: how many slice embeddings (1 MB each) are kept.
    ``encoder_runs`` counts the encoder passes (what the cache saves). Safe to call from several
    threads: one lock per predictor serialises the passes.
    """

    def __init__(self, model: LiteMedSAM | None = None, device: torch.device | str = "cpu", cache_slices: int = 8):
        self.device = torch.device(device)
        self.model = (model if model is not None else load_litemedsam()).to(self.device).eval()
        self.volume: Volume | None = None
        self._u8: np.ndarray | None = None
        self._embeddings = LRU(cache_slices)
        self._lock = threading.Lock()
        self.encoder_runs = 0

    def set_volume(self, volume: Volume, windowed: np.ndarray | None = None) -> None:
        """Window the whole volume as LiteMedSAM's training data were (:func:`box_prompt.window_255`;
        the MR percentiles are the volume's) and forget the previous volume's embeddings.

        ``windowed``: the volume already windowed to [0, 1], float (z, y, x) of its shape, for images
        that hold no raw intensities (the evaluation's synthetic and atlas slices): it is taken as
        LiteMedSAM's window (:func:`box_prompt.to_255`) instead of windowing ``volume.array`` again.
        """
        if windowed is not None and np.shape(windowed) != volume.shape:
            raise InputError(f"windowed image of shape {np.shape(windowed)} for a volume of {volume.shape}")
        with self._lock:
            if windowed is None:
                self._u8 = box_prompt.window_255(volume.array, volume.is_ct)
            else:
                self._u8 = box_prompt.to_255(windowed)
            self.volume = volume
            self._embeddings.clear()

    def _shape(self) -> tuple[int, int, int]:
        if self._u8 is None:
            raise InputError("no image loaded: load an image before giving a box")
        return self._u8.shape

    def check_box(self, box: Sequence[float]) -> Box:
        """:func:`check_box` on the loaded volume (InputError without one)."""
        return check_box(box, self._shape())

    def _embedding(self, z: int) -> tuple[torch.Tensor, tuple[int, int], float]:
        """(embedding (1, 256, 64, 64), resized size, encoder ms: 0.0 when cached) of slice z; lock held."""
        hit = self._embeddings.get(z)
        if hit is not None:
            return hit[0], hit[1], 0.0
        t0 = time.perf_counter()
        image, resized = box_prompt.prepare_slice(self._u8[z])
        with torch.inference_mode():
            emb = self.model.encode(image.to(self.device))
        self.encoder_runs += 1
        self._embeddings.put(z, (emb, resized))
        return emb, resized, (time.perf_counter() - t0) * 1e3

    def set_slice(self, z: int) -> float:
        """Encode slice ``z`` unless its embedding is cached; returns the encoder's ms (0.0 if cached)."""
        nz = self._shape()[0]
        if not 0 <= int(z) < nz:
            raise InputError(f"slice z={z} is outside the volume (0..{nz - 1})")
        with self._lock:
            return self._embedding(int(z))[2]

    def predict_many(self, boxes: Sequence[Sequence[float]]) -> list[BoxResult]:
        """Answer boxes ``(z, y0, x0, y1, x1)``, all checked before any work; the boxes of one slice
        share one encoder pass (the first answer on a slice carries its time) and one decoder batch."""
        checked = [self.check_box(b) for b in boxes]
        out: dict[int, BoxResult] = {}
        with self._lock:
            for z in dict.fromkeys(b.z for b in checked):
                idx = [i for i, b in enumerate(checked) if b.z == z]
                emb, resized, enc_ms = self._embedding(z)
                t0 = time.perf_counter()
                hw = self._u8.shape[1:]
                boxes256 = box_prompt.scale_boxes(np.array([checked[i].xyxy for i in idx]), hw)
                with torch.inference_mode():
                    logits = self.model.decode(emb, boxes256.to(self.device))
                prob = box_prompt.logits_to_slice(logits, resized, hw)
                dec_ms = (time.perf_counter() - t0) * 1e3 / len(idx)
                for j, i in enumerate(idx):
                    out[i] = BoxResult(checked[i], prob[j] > 0.5, prob[j], enc_ms if j == 0 else 0.0, dec_ms)
        return [out[i] for i in range(len(checked))]

    def predict(self, box: Sequence[float]) -> BoxResult:
        """One box ``(z, y0, x0, y1, x1)``: the encoder runs only if slice z is not cached."""
        return self.predict_many([box])[0]

    @property
    def encoder_path(self) -> str:
        """What runs the image encoder: "torch-float32", "openvino-bfloat16", ... (:func:`encoder_path`)."""
        return encoder_path(self.model)


# ----------------------------------------------------------------------------- the encoder's paths


class _EncoderOnPath(LiteMedSAM):
    """LiteMedSAM whose :meth:`encode` runs a compiled copy of its image encoder. Its modules (the
    PyTorch encoder among them, the reference), weights and record are the source model's, shared."""

    def __init__(self, source: LiteMedSAM, encoder: CompiledModule):
        nn.Module.__init__(self)  # not LiteMedSAM's: it would build a second, random set of modules
        self.image_encoder = source.image_encoder
        self.prompt_encoder = source.prompt_encoder
        self.mask_decoder = source.mask_decoder
        self.record = getattr(source, "record", {})
        self.compiled = encoder  # not a module: outside the state dict, which stays the source's
        self.encoder_path = encoder.spec.label
        self.train(source.training)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, 256, 256) float32 -> (1, 256, 64, 64) float32 on ``image``'s device."""
        return self.compiled(image).to(image.device)


def encoder_path(model: LiteMedSAM) -> str:
    """The path ``model``'s encoder runs on: "torch-float32" for a plain LiteMedSAM."""
    return getattr(model, "encoder_path", "torch-float32")


def on_path(model: LiteMedSAM, spec: EngineSpec | None) -> LiteMedSAM:
    """``model`` with its image encoder on ``spec``'s path (exported once for
    :data:`ENCODER_INPUT`, cached by its weights' digest, compiled here); None or a "torch" spec:
    the PyTorch model. The prompt encoder and the mask decoder stay PyTorch (a tenth of a pass)."""
    if spec is None or spec.engine == "torch":
        return model
    compiled = CompiledModule(model.image_encoder, spec, ENCODER_INPUT, f"{ARCH}_encoder")
    return _EncoderOnPath(model, compiled)


def check_answers(model: LiteMedSAM, slices: list) -> tuple[list[np.ndarray], list[float]]:
    """``model``'s box answers on generated slices (:func:`engines.check_slices`: windowed images
    (H, W) in [0, 1] with a label), through a :class:`BoxPredictor` as the page runs it: the boxes
    of :data:`CHECK_MARGINS` around each label. Returns their masks ((H, W) bool, slice by slice, box
    by box) and each slice's encoder ms (the first pass includes any warm-up)."""
    images = np.stack([s.image for s in slices]).astype(np.float32)
    spacing = float(slices[0].spacing_mm)
    pred = BoxPredictor(model, cache_slices=len(slices))
    pred.set_volume(volume_from_array(images, spacing=(spacing, spacing, spacing), modality="CT"), windowed=images)
    encoder_ms = [pred.set_slice(z) for z in range(len(slices))]
    boxes = [box_around(s.label, z, m).as_list() for z, s in enumerate(slices) for m in CHECK_MARGINS]
    return [r.mask for r in pred.predict_many(boxes)], encoder_ms


def _typical_ms(encoder_ms: list[float]) -> float:
    """The median encoder pass after the first (a compiled graph's first run is slower)."""
    return round(float(np.median(encoder_ms[1:] or encoder_ms)), 1)


def choose_encoder(model: LiteMedSAM, engine: str = "auto", slices: list | None = None) -> Choice:
    """The fastest path for LiteMedSAM's image encoder on this CPU: float32 PyTorch or one of
    ``engines.candidates(engine)`` whose box answers agree with it (mean Dice >= engines.AGREEMENT
    over :func:`check_answers`, default 4 generated slices, 2 boxes each); ms: the median encoder
    pass. The choice's ``net`` is the model on that path (:func:`on_path`).

    ``engine`` "torch", or a model on another device than the CPU, returns the model at once; an
    engine that is missing, fails or disagrees leaves the encoder in PyTorch, with a warning.
    """
    if engine == "torch" or next(model.parameters()).device.type != "cpu":
        return Choice(model, "torch", {})
    slices = slices if slices is not None else engines.check_slices()
    reference, encoder_ms = check_answers(model, slices)
    start = Choice(model, "torch-float32", {"torch-float32": {"ms": _typical_ms(encoder_ms)}})

    def measure(fast: LiteMedSAM) -> dict[str, float]:
        answers, ms = check_answers(fast, slices)
        return {"ms": _typical_ms(ms), **engines.mask_agreement(reference, answers)}

    return engines.fastest_agreeing(
        start, engines.candidates(engine), lambda spec: on_path(model, spec), measure, f"{ARCH} encoder"
    )
