"""LiteMedSAM scored beside the click methods: one box per labelled slice.

Box modes (:func:`parse_box_mode`), one box per slice from :func:`slice_box`:

* ``label`` / ``label+N``: the reference's tight box on the slice, grown by N px (an oracle prompt:
  it comes from the answer);
* ``from-seqpatch`` / ``from-seqpatch+N``: the box of SeqPatch's mask from the same centre click the
  click methods get, grown by N px (default :data:`SEQPATCH_MARGIN_PX`): one click -> a box -> the
  foundation model. A slice where SeqPatch answers with an empty mask gets no box, and LiteMedSAM's
  answer there is an empty mask (scored as such).

Two sources of slices, as for the click methods:

* a real volume with its label (:func:`evaluate_boxes`, merged with
  :func:`~seqpatch_core.evaluation.evaluate.evaluate_volume`'s rows by :func:`with_boxes`);
* the synthetic and atlas slices (:class:`SliceBoxes`, the ``extra`` scorer of
  :func:`~seqpatch_core.evaluation.evaluate.evaluate_synthetic` and
  :func:`~seqpatch_core.evaluation.evaluate.evaluate_atlas`, which merge its rows themselves).

Each box gives one :class:`~seqpatch_core.evaluation.evaluate.Row` (click: the slice's centre click,
grid_mm: the pixel of LiteMedSAM's 256 x 256 input in mm, box: the mode), so the summary, the size
split and the paired comparison take all methods alike.
"""

from __future__ import annotations

import numpy as np

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import evaluate_masks, mask_click
from seqpatch_core.base.progress import Progress
from seqpatch_core.data.synth import SynthSlice
from seqpatch_core.evaluation.evaluate import Row, labelled_slices, paired_comparison, size_breakdown, summarize
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference.boxes import Box, BoxPredictor, box_around
from seqpatch_core.inference.predictor import Predictor, Result
from seqpatch_core.method.models.litemedsam import ARCH, IMAGE_SIZE

__all__ = [
    "SEQPATCH_MARGIN_PX",
    "SliceBoxes",
    "evaluate_boxes",
    "markdown_boxes",
    "needs_seqpatch",
    "parse_box_mode",
    "slice_box",
    "with_boxes",
]

#: Margin of a box around SeqPatch's mask, px: LiteMedSAM was trained with boxes jittered by up to
#: 5 px of its 256 x 256 input around the object, so a box a little larger than the object is what
#: it knows.
SEQPATCH_MARGIN_PX = 5
_SOURCES = {"label": 0, "from-seqpatch": SEQPATCH_MARGIN_PX}


def parse_box_mode(spec: str) -> tuple[str, int]:
    """``"label"`` -> ("label", 0); ``"label+3"`` -> ("label", 3); ``"from-seqpatch"`` ->
    ("from-seqpatch", 5); ``"from-seqpatch+N"``; else InputError."""
    text = str(spec).strip().lower()
    source, plus, margin = text.partition("+")
    if source in _SOURCES:
        if not plus:
            return source, _SOURCES[source]
        if margin.isdigit():
            return source, int(margin)
    raise InputError(f"unknown box mode {spec!r}; use label, label+N, from-seqpatch or from-seqpatch+N (N px >= 0)")


def needs_seqpatch(mode: str) -> bool:
    """Whether ``mode``'s boxes come from SeqPatch's masks (the SeqPatch network must be loaded)."""
    return parse_box_mode(mode)[0] == "from-seqpatch"


def slice_box(mode: str, z: int, label: np.ndarray, seqpatch: np.ndarray | None = None) -> Box | None:
    """The box LiteMedSAM gets on slice ``z`` under ``mode`` (:func:`parse_box_mode`), every path's one rule.

    label: the reference (H, W), non-zero = object; seqpatch: SeqPatch's mask (H, W) bool from the
    slice's centre click (``from-seqpatch`` only, else ignored). The tight box of the label or of that
    mask, grown by the mode's margin and kept inside the slice; None when the mask is empty.
    """
    source, margin = parse_box_mode(mode)
    if source == "label":
        return box_around(label != 0, z, margin)
    if seqpatch is None:
        raise InputError("--box from-seqpatch needs the SeqPatch network")
    return box_around(seqpatch, z, margin)


def _score(
    boxes: BoxPredictor,
    box: Box | None,
    label: np.ndarray,
    spacing_yx: tuple[float, float],
    click: tuple[float, float],
    mode: str,
    **where,
) -> tuple[Row, dict]:
    """(the Row, the prompt record ``{"box", "encoder_ms", "decoder_ms"}``) of LiteMedSAM's answer to
    ``box`` on the loaded slice ``box.z``, scored against ``label`` (H, W). ``where``: the Row's
    case, z and, for synthetic and atlas slices, preset, spacing_mm and kind."""
    h, w = label.shape
    grid_mm = round(max(h * spacing_yx[0], w * spacing_yx[1]) / IMAGE_SIZE, 3)
    if box is None:  # an empty SeqPatch mask: no prompt, an empty answer
        mask, enc, dec = np.zeros((h, w), dtype=bool), 0.0, 0.0
    else:
        res = boxes.predict(box.as_list())
        mask, enc, dec = res.mask, res.encoder_ms, res.decoder_ms
    row = Row(
        method=ARCH,
        click=(round(float(click[0]), 3), round(float(click[1]), 3)),
        click_kind="centre",
        grid_mm=grid_mm,
        coarsened=False,
        box=mode,
        **where,
        **evaluate_masks(mask, label, spacing_yx),
    )
    return row, {"box": box.as_list() if box else None, "encoder_ms": enc, "decoder_ms": dec}


def _timing(prompts: list[dict]) -> dict:
    """Median encoder and decoder ms over the prompts that had a box (None without any)."""
    timed = [p for p in prompts if p["box"] is not None]
    return {
        "encoder_ms": float(np.median([p["encoder_ms"] for p in timed])) if timed else None,
        "decoder_ms": float(np.median([p["decoder_ms"] for p in timed])) if timed else None,
    }


def _mode_text(mode: str) -> str:
    """The mode as parsed, margin spelt out: "label+0", "from-seqpatch+5"."""
    source, margin = parse_box_mode(mode)
    return f"{source}+{margin}"


def evaluate_boxes(
    boxes: BoxPredictor,
    label: np.ndarray,
    mode: str = "label",
    clicks: Predictor | None = None,
    threshold: float = 0.5,
    progress: Progress | None = None,
) -> dict:
    """LiteMedSAM on every labelled slice of ``boxes.volume``, one box per slice from ``mode``.

    label: (z, y, x) of the volume's shape, non-zero = object. ``clicks``: the predictor holding the
    same volume and SeqPatch (``from-seqpatch`` only), clicked at each slice's centre (the click
    methods' centre click). Returns ``{"boxes": mode, "rows": [Row], "prompts": [{"z", "box": [z, y0,
    x0, y1, x1] or None, "encoder_ms", "decoder_ms"}], "encoder_ms", "decoder_ms"}`` (the medians over
    slices; every slice is a new one, so each answer runs the encoder once).
    """
    text = _mode_text(mode)
    vol = boxes.volume
    if vol is None:
        raise InputError("no volume loaded: load an image first")
    lab, zs = labelled_slices(label, vol.shape)
    if needs_seqpatch(mode) and (clicks is None or "seqpatch" not in clicks.models):
        raise InputError("--box from-seqpatch needs the SeqPatch network")
    spacing_yx = (float(vol.spacing[1]), float(vol.spacing[2]))
    rows, prompts = [], []
    for i, z in enumerate(zs):
        if progress is not None:
            progress(i / len(zs), f"slice {z}")
        click = mask_click(lab[z])
        seq = None
        if needs_seqpatch(mode):
            seq = clicks.predict_many(z, [click], "seqpatch", threshold=threshold)[0].mask
        row, prompt = _score(boxes, slice_box(mode, z, lab[z], seq), lab[z], spacing_yx, click, text,
                             case=vol.source, z=z)  # fmt: skip
        rows.append(row)
        prompts.append({"z": z, **prompt})
    if progress is not None:
        progress(1.0, "done")
    return {"boxes": text, "rows": rows, "prompts": prompts, **_timing(prompts)}


def with_boxes(clicked: dict | None, boxed: dict, methods: list[str], source: str) -> dict:
    """:func:`evaluate_volume`'s result (None: no click method) with LiteMedSAM's rows merged in and
    the summary, size split and paired comparison redone over ``methods`` in their order (centre
    clicks only). ``boxed``: :func:`evaluate_boxes`; its prompts and timing are kept under "boxes"."""
    rows = (clicked["rows"] if clicked else []) + boxed["rows"]
    base = clicked or {"source": source, "clicks": "centroid", "seed": 0, "slices": [r.z for r in boxed["rows"]]}
    return {
        **base,
        "clicks": f"{base['clicks']}; {ARCH} boxes: {boxed['boxes']}",
        "rows": rows,
        "summary": summarize(rows, methods),
        "by_size": size_breakdown(rows, methods),
        "paired": paired_comparison(rows, methods),
        "boxes": {k: v for k, v in boxed.items() if k != "rows"},
    }


class SliceBoxes:
    """LiteMedSAM on the synthetic or atlas slices: the ``extra`` scorer of
    :func:`~seqpatch_core.evaluation.evaluate.evaluate_synthetic` and
    :func:`~seqpatch_core.evaluation.evaluate.evaluate_atlas`, one box per slice from ``mode``.

    What LiteMedSAM sees: each slice's image, float32 (H, W) in [0, 1] on square pixels of
    ``spacing_mm``, is already windowed and holds no raw intensities (the generator draws its lesions
    in windowed intensities on a background windowed at random: a CT display preset or a 0-2 / 98-100
    percentile clip for MR; the atlas templates are clipped to the 0.5 / 99.5 percentiles of their
    brain voxels, LiteMedSAM's own MR recipe). That window is taken as LiteMedSAM's, scaled to uint8
    0..255 (:func:`~seqpatch_core.method.box_prompt.to_255`), and the image is not windowed a second
    time; the rest of its recipe (resize, min-max, padding) is as for a volume. On the CT-like slices
    this is therefore not its W400/L40 window but whichever one the slice was drawn with.

    ``boxes``: the predictor (each slice is set as a one-slice volume, so every answer runs the encoder
    once); ``from-seqpatch`` takes the mask of the click models' ``"seqpatch"`` result at the slice's
    centre click, so ``seqpatch`` must be among the models. Call :meth:`annotate` on the evaluation's
    result to keep the prompts and the timing.
    """

    method = ARCH

    def __init__(self, boxes: BoxPredictor, mode: str = "label"):
        self.boxes = boxes
        self.mode = _mode_text(mode)
        self.prompts: list[dict] = []

    @property
    def needs_seqpatch(self) -> bool:
        return needs_seqpatch(self.mode)

    def __call__(self, index: int, s: SynthSlice, preset: str, results: dict[str, list[Result]]) -> list[Row]:
        """The row of slice ``index`` (case = index, z = 0): ``results``, the click models' answers to
        the slice's clicks, the centre click first (``s.click``)."""
        seq = None
        if self.needs_seqpatch:
            if "seqpatch" not in results:
                raise InputError("--box from-seqpatch needs the SeqPatch network")
            seq = results["seqpatch"][0].mask
        px = float(s.spacing_mm)
        image = s.image[None]
        self.boxes.set_volume(volume_from_array(image, spacing=(1.0, px, px), source=s.kind), windowed=image)
        row, prompt = _score(self.boxes, slice_box(self.mode, 0, s.label, seq), s.label, (px, px), s.click,
                             self.mode, case=index, z=0, preset=preset, spacing_mm=px, kind=s.kind)  # fmt: skip
        self.prompts.append({"case": index, **prompt})
        return [row]

    def annotate(self, result: dict) -> dict:
        """An evaluation's result with the box mode added to its clicks and ``"boxes"``: ``{"boxes":
        mode, "prompts": [{"case", "box", "encoder_ms", "decoder_ms"}], "encoder_ms", "decoder_ms"}``
        (medians over the slices that had a box), as :func:`with_boxes` keeps them."""
        boxed = {"boxes": self.mode, "prompts": self.prompts, **_timing(self.prompts)}
        return {**result, "clicks": f"{result['clicks']}; {ARCH} boxes: {self.mode}", "boxes": boxed}


def markdown_boxes(boxed: dict) -> str:
    """Two lines: the box mode and LiteMedSAM's median encoder and decoder time per slice."""
    if boxed.get("encoder_ms") is None:
        return f"{ARCH} boxes {boxed['boxes']}: no box (every prompt mask was empty)"
    return (
        f"{ARCH} boxes {boxed['boxes']}: encoder {boxed['encoder_ms']:.0f} ms per slice, "
        f"decoder {boxed['decoder_ms']:.0f} ms per box (medians over {len(boxed['prompts'])} slices)"
    )
