"""LiteMedSAM scored beside the click methods: one box per labelled slice.

Box modes (:func:`parse_box_mode`):

* ``label`` / ``label+N``: the reference's tight box on the slice, grown by N px (an oracle prompt:
  it comes from the answer);
* ``from-seqpatch`` / ``from-seqpatch+N``: the box of SeqPatch's mask from the same centre click the
  click methods get, grown by N px (default :data:`SEQPATCH_MARGIN_PX`): one click -> a box -> the
  foundation model. A slice where SeqPatch answers with an empty mask gets no box, and LiteMedSAM's
  answer there is an empty mask (scored as such).

Each box gives one :class:`~seqpatch_core.evaluation.evaluate.Row` (click: the slice's centre click,
grid_mm: the pixel of LiteMedSAM's 256 x 256 input in mm), so :func:`with_boxes` can merge them with
:func:`~seqpatch_core.evaluation.evaluate.evaluate_volume`'s rows and summarise, split by size and
pair all methods alike.
"""

from __future__ import annotations

import numpy as np

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import evaluate_masks, mask_click
from seqpatch_core.base.progress import Progress
from seqpatch_core.evaluation.evaluate import Row, labelled_slices, paired_comparison, size_breakdown, summarize
from seqpatch_core.inference.boxes import Box, BoxPredictor, box_around
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method.models.litemedsam import ARCH, IMAGE_SIZE

__all__ = ["SEQPATCH_MARGIN_PX", "evaluate_boxes", "markdown_boxes", "parse_box_mode", "with_boxes"]

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
    source, margin = parse_box_mode(mode)
    vol = boxes.volume
    if vol is None:
        raise InputError("no volume loaded: load an image first")
    lab, zs = labelled_slices(label, vol.shape)
    if source == "from-seqpatch" and (clicks is None or "seqpatch" not in clicks.models):
        raise InputError("--box from-seqpatch needs the SeqPatch network")
    spacing_yx = (float(vol.spacing[1]), float(vol.spacing[2]))
    grid_mm = round(max(vol.shape[1] * spacing_yx[0], vol.shape[2] * spacing_yx[1]) / IMAGE_SIZE, 3)
    rows, prompts = [], []
    for i, z in enumerate(zs):
        if progress is not None:
            progress(i / len(zs), f"slice {z}")
        click = mask_click(lab[z])
        if source == "label":
            box = box_around(lab[z], z, margin)
        else:
            seq = clicks.predict_many(z, [click], "seqpatch", threshold=threshold)[0]
            box = box_around(seq.mask, z, margin)
        mask, enc, dec = _answer(boxes, box, lab[z].shape)
        prompts.append({"z": z, "box": box.as_list() if box else None, "encoder_ms": enc, "decoder_ms": dec})
        rows.append(
            Row(
                method=ARCH,
                case=vol.source,
                z=z,
                click=(round(float(click[0]), 3), round(float(click[1]), 3)),
                click_kind="centre",
                grid_mm=grid_mm,
                coarsened=False,
                **evaluate_masks(mask, lab[z], spacing_yx),
            )
        )
    if progress is not None:
        progress(1.0, "done")
    timed = [p for p in prompts if p["box"] is not None]
    return {
        "boxes": f"{source}+{margin}",
        "rows": rows,
        "prompts": prompts,
        "encoder_ms": float(np.median([p["encoder_ms"] for p in timed])) if timed else None,
        "decoder_ms": float(np.median([p["decoder_ms"] for p in timed])) if timed else None,
    }


def _answer(boxes: BoxPredictor, box: Box | None, shape: tuple[int, int]) -> tuple[np.ndarray, float, float]:
    """(mask (H, W) bool, encoder ms, decoder ms) of one box; no box (an empty SeqPatch mask) -> empty."""
    if box is None:
        return np.zeros(shape, dtype=bool), 0.0, 0.0
    res = boxes.predict(box.as_list())
    return res.mask, res.encoder_ms, res.decoder_ms


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


def markdown_boxes(boxed: dict) -> str:
    """Two lines: the box mode and LiteMedSAM's median encoder and decoder time per slice."""
    if boxed.get("encoder_ms") is None:
        return f"{ARCH} boxes {boxed['boxes']}: no box (every prompt mask was empty)"
    return (
        f"{ARCH} boxes {boxed['boxes']}: encoder {boxed['encoder_ms']:.0f} ms per slice, "
        f"decoder {boxed['decoder_ms']:.0f} ms per box (medians over {len(boxed['prompts'])} slices)"
    )
