"""The ablation networks of the paper's Table 2: which variants exist, loading their weights (shared
by every session, never run by a plain click) and what their training records say.

Models are keyed ``"ablation:<variant>"`` in :attr:`~seqpatch_core.inference.predictor.Predictor.models`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from seqpatch_core.base.paths import WEIGHTS_DIR
from seqpatch_core.inference.predictor import Predictor

log = logging.getLogger(__name__)


#: Ablation variant -> (model name for ``build_model``, description). Key prefix in Predictor.models.
ABLATIONS: dict[str, tuple[str, str]] = {
    "seqpatch_paper": ("seqpatch", "bidirectional gated unit at all three levels (the paper's model)"),
    "forward": ("forward", "forward only: one memory, inside → outside"),
    "seqfcn": ("seqfcn", "no recurrent units: every patch on its own"),
    "bottom": ("bottom", "recurrent unit at the bottom level only (U-net-B)"),
    "bottom_middle": ("bottom_middle", "units at the bottom and middle levels (U-net-BM)"),
    "convlstm": ("convlstm", "ConvLSTM cells instead of the gated unit"),
    "convgru": ("convgru", "ConvGRU cells instead of the gated unit"),
}
PREFIX = "ablation:"
#: The bidirectional reference an ablation is compared with when loaded (trained with the same budget).
PAPER_KEY = PREFIX + "seqpatch_paper"
ABLATIONS_DIR = WEIGHTS_DIR / "ablations"


def ablation_choices(predictor: Predictor) -> list[tuple[str, str]]:
    """Dropdown ``(label, key)`` pairs for the ablation models the predictor holds."""
    out = []
    for name, (_, text) in ABLATIONS.items():
        key = PREFIX + name
        if key in predictor.models:
            out.append((f"{name}: {text}", key))
    return out


def load_ablations(folder: str | Path = ABLATIONS_DIR) -> dict[str, Any]:
    """The ablation networks whose weights exist in ``folder``, keyed ``"ablation:<variant>"``.

    A missing or unreadable checkpoint is skipped (logged), so the app always starts.
    """
    from seqpatch_core.method.models import load_models

    folder = Path(folder)
    models = {}
    for name, (model_name, _) in ABLATIONS.items():
        path = folder / f"{name}.safetensors"
        if path.is_file():
            got = load_models([model_name], {model_name: str(path)}, strict=False)
            if model_name in got:
                models[PREFIX + name] = got[model_name]
    return models


#: What a teacher is told beside one slice's ablation result.
ABLATION_CAVEAT = (
    "One slice is one sample: a variant may beat the full model here and lose over many slices. The "
    "validation Dice is each network's best on the synthetic validation slices of its own training "
    "(from its record); the ablations had a short budget (the training column), far less than the "
    "paper's, so their order need not match the paper's Table 2. The benchmark figure is the one to trust: "
    "the ablation table of docs/results.md gives every variant on the 192-slice synthetic benchmark, with "
    "the command that measures it."
)


def _record_summary(rec: dict[str, Any] | None) -> tuple[str, str]:
    """(validation Dice, training budget) in words from a checkpoint record (the JSON beside it)."""
    rec = rec or {}
    tr = rec.get("training", {}) or {}
    val = (rec.get("validation", {}) or {}).get("synthetic_val_dice_best")
    val_text = f"{float(val):.3f}" if val is not None else "–"
    if tr.get("minutes") is None:
        return val_text, "–"
    budget = f"{float(tr['minutes']):g} min on {tr.get('device', '?')}"
    if tr.get("samples_seen"):
        budget += f", {int(tr['samples_seen']):,} slices seen"
    if tr.get("init"):
        # the record holds the last phase only: a net continued from earlier weights trained longer
        budget += f" (last phase; continued from {Path(str(tr['init'])).name})"
    return val_text, budget


def training_summary(model: Any) -> tuple[str, str]:
    """(validation Dice, training budget) of a network, in words, from its checkpoint's record."""
    return _record_summary(getattr(model, "record", None))


def _read_record(name: str, folder: Path) -> dict[str, Any] | None:
    """The record beside checkpoint ``name`` (``<folder>/<name>.json``, or ``weights/<name>.json`` for
    the two shipped networks), or None when missing or unreadable."""
    for path in (folder / f"{name}.json", folder.parent / f"{name}.json"):
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                log.warning("unreadable record %s: %s", path, err)
                return None
    return None


def ablation_context(key: str, folder: str | Path = ABLATIONS_DIR) -> str:
    """Markdown: one line per model (the ablation ``key`` and the equal-budget bidirectional reference)
    with its training budget and validation Dice from the record beside its checkpoint, then the
    caveat that one slice is one sample and the benchmark figure is the one to trust.

    key: ``"ablation:<variant>"`` or ``"<variant>"``. Reads only the JSON records (no network), so it
    can run when the variant is chosen, before ``compare``.
    """
    folder = Path(folder)
    name = key[len(PREFIX) :] if key.startswith(PREFIX) else key
    ref = PAPER_KEY[len(PREFIX) :]
    lines = []
    for n in (name, ref) if name != ref else (name,):
        what = ABLATIONS.get(n, ("", "the app's model" if n == "seqpatch" else ""))[1]
        rec = _read_record(n, folder)
        if rec is None:
            lines.append(f"- **{n}**{f' — {what}' if what else ''}: no training record beside its weights.")
            continue
        val, budget = _record_summary(rec)
        lines.append(
            f"- **{n}**{f' — {what}' if what else ''}: trained {budget}; validation Dice (synthetic, best "
            f"during its training) {val}."
        )
    return "\n".join(lines) + "\n\n" + ABLATION_CAVEAT
