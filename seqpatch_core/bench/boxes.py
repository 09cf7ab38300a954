"""LiteMedSAM's time per slice and per box on every encoder path: ``bench --litemedsam``.

One labelled slice of a volume (the label's largest; default the bundled lung2 crop) and its label's
box, through :class:`~seqpatch_core.inference.boxes.BoxPredictor` as the page runs it, once per path
of the image encoder (float32 PyTorch, the reference, and each compiled path of
:func:`seqpatch_core.inference.engines.candidates`): the encoder (the slice's preprocessing and the
image encoder: what a new slice costs) and the decoder (prompt encoder, mask decoder and the
resampling to the slice, PyTorch on every path: what each further box on that slice costs), each
after one warm-up pass, and the path's agreement with the reference (Dice of the box answers on
generated slices, :func:`~seqpatch_core.inference.boxes.check_answers`). The encoder's input is
256 x 256 whatever the slice's size, so one slice stands for all. On a machine shared with other
work the wall-clock minimum is the figure closest to the machine's own speed, and the process's CPU
time per pass (all its threads) the one that other work moves least; the load average is recorded
before and after.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from seqpatch_core.base.errors import InputError, first_line
from seqpatch_core.base.tables import markdown_table
from seqpatch_core.images.io import read_label, read_volume
from seqpatch_core.inference import engines
from seqpatch_core.inference.boxes import BoxPredictor, box_around, check_answers, on_path
from seqpatch_core.inference.engines import EngineSpec
from seqpatch_core.method.models.litemedsam import load_litemedsam

__all__ = ["boxes_markdown", "time_litemedsam"]

REFERENCE = "torch-float32"


def _stats(wall: list[float], cpu: list[float]) -> dict[str, float]:
    a = np.asarray(wall, dtype=np.float64)
    return {
        "min_ms": round(float(a.min()), 1),
        "p50_ms": round(float(np.median(a)), 1),
        "cpu_p50_ms": round(float(np.median(cpu)), 1),
        "n": int(a.size),
    }


def _timed(fn) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - w0) * 1e3, (time.process_time() - c0) * 1e3


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _time_path(pred: BoxPredictor, volume, z: int, box: list[int], repeats: int) -> dict:
    """Encoder and decoder stats of one predictor: ``repeats`` encoder passes (the cache cleared
    before each) and 5 x ``repeats`` decoder passes (the slice cached), after one warm-up of each."""
    encoder, decoder = [], []
    for i in range(repeats + 1):
        pred.set_volume(volume)  # forget the embedding: each pass encodes
        if i:
            encoder.append(_timed(lambda: pred.set_slice(z)))
        else:
            pred.set_slice(z)
    for i in range(5 * repeats + 1):
        if i:
            decoder.append(_timed(lambda: pred.predict(box)))
        else:
            pred.predict(box)
    return {"encoder": _stats(*zip(*encoder, strict=True)), "decoder": _stats(*zip(*decoder, strict=True))}


def time_litemedsam(
    image: str | Path,
    label: str | Path,
    repeats: int = 10,
    weights: str | Path | None = None,
    paths: list[str] | None = None,
    agreement_slices: int = 8,
) -> dict:
    """Encoder and decoder times (ms) of LiteMedSAM on the largest labelled slice of ``image``, per
    encoder path, with each path's agreement with float32 PyTorch.

    ``paths``: labels to run (default: "torch-float32", then every compiled path installed here,
    :func:`engines.candidates`); ``agreement_slices``: generated slices of the check (2 boxes each).
    Returns ``{"case", "slice", "box", "reference", "agreement_slices", "paths": {label: {"encoder":
    {"min_ms", "p50_ms", "cpu_p50_ms", "n"}, "decoder": {...}, "mean_dice", "min_dice"} or {"error"}},
    "fastest_agreeing", "threads", "load_avg", "load_avg_after", "machine"}`` (``cpu_p50_ms``: the
    median CPU time of the process per pass, summed over its threads; ``fastest_agreeing``: the path
    whose encoder p50 is lowest among those whose mean Dice >= engines.AGREEMENT, as the app chooses).
    """
    if repeats < 1:
        raise InputError(f"--clicks (the repeats) must be at least 1, got {repeats}")
    if agreement_slices < 1:
        raise InputError(f"--agreement-slices must be at least 1, got {agreement_slices}")
    if paths is None:
        paths = [REFERENCE] + [s.label for s in engines.candidates("auto")]
    load_before = _load()
    vol = read_volume(image)
    lab = read_label(label, vol) != 0
    areas = lab.reshape(lab.shape[0], -1).sum(axis=1)
    if not areas.any():
        raise InputError("the label is empty: no box to time")
    z = int(np.argmax(areas))
    box = box_around(lab[z], z).as_list()
    model = load_litemedsam(weights)
    slices = engines.check_slices(agreement_slices)
    reference, _ms = check_answers(model, slices)
    out: dict = {}
    for path in paths:
        try:
            fast = on_path(model, EngineSpec(*path.split("-")))
            entry = engines.mask_agreement(reference, check_answers(fast, slices)[0])
            out[path] = {**_time_path(BoxPredictor(fast), vol, z, box, repeats), **entry}
        except Exception as exc:  # an engine that cannot take the encoder: reported, not fatal
            out[path] = {"error": first_line(exc, 200)}
    ok = {p: e["encoder"]["p50_ms"] for p, e in out.items() if e.get("mean_dice", 0) >= engines.AGREEMENT}
    return {
        "case": vol.source,
        "slice": z,
        "box": box,
        "reference": REFERENCE,
        "agreement_slices": agreement_slices,
        "paths": out,
        "fastest_agreeing": min(ok, key=ok.get) if ok else None,
        "threads": torch.get_num_threads(),
        "usable_cores": engines.usable_threads(),
        "load_avg": load_before,
        "load_avg_after": _load(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }


def boxes_markdown(r: dict) -> str:
    """One table, a row per encoder path: encoder per slice and decoder per box (median and minimum),
    and the box answers' agreement with float32 PyTorch."""
    head = (
        f"LiteMedSAM, {r['usable_cores']} usable cores (PyTorch {r['threads']} threads); {r['machine']}; "
        f"load average {r['load_avg']} before, {r['load_avg_after']} after\n"
        f"{r['case']}, slice {r['slice']}, box {r['box']}; agreement: Dice of the box answers against "
        f"{r['reference']} on {r['agreement_slices']} generated slices, 2 boxes each"
    )
    cols = ["path", "encoder p50 ms", "encoder min ms", "encoder CPU ms (p50, all threads)", "decoder p50 ms",
            "decoder min ms", "agreement (mean Dice, lowest)", "passes (encoder / decoder)"]  # fmt: skip
    rows = []
    for path, e in r["paths"].items():
        if "error" in e:
            rows.append([path, f"failed: {e['error']}"] + [""] * (len(cols) - 2))
            continue
        enc, dec = e["encoder"], e["decoder"]
        agree = f"{e['mean_dice']:.4f} ({e['min_dice']:.4f})"
        rows.append([path, enc["p50_ms"], enc["min_ms"], enc["cpu_p50_ms"], dec["p50_ms"], dec["min_ms"], agree,
                     f"{enc['n']} / {dec['n']}"])  # fmt: skip
    tail = f"Fastest encoder path whose answers agree (mean Dice >= {engines.AGREEMENT}): {r['fastest_agreeing']}."
    return head + "\n\n" + markdown_table(cols, rows) + "\n\n" + tail
