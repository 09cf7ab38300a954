"""LiteMedSAM's time per slice and per box: ``bench --litemedsam``.

One labelled slice of a volume (the label's largest; default the bundled lung2 crop) and its label's
box, through :class:`~seqpatch_core.inference.boxes.BoxPredictor` as the command line runs it (float32
PyTorch): the encoder (the slice's preprocessing and the image encoder: what a new slice costs) and
the decoder (prompt encoder, mask decoder and the resampling to the slice: what each further box on
that slice costs), each after one warm-up pass. The encoder's input is 256 x 256 whatever the slice's
size, so one slice stands for all. On a machine shared with other work the wall-clock minimum is the
figure closest to the machine's own speed, and the process's CPU time per pass (all its threads) the
one that other work moves least; the load average is recorded beside them.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from seqpatch_core.base.errors import InputError
from seqpatch_core.images.io import read_label, read_volume
from seqpatch_core.inference.boxes import BoxPredictor, box_around
from seqpatch_core.method.models.litemedsam import load_litemedsam

__all__ = ["boxes_markdown", "time_litemedsam"]


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


def time_litemedsam(image: str | Path, label: str | Path, repeats: int = 10, weights: str | Path | None = None) -> dict:
    """Encoder and decoder times (ms) of LiteMedSAM on the largest labelled slice of ``image``.

    ``repeats`` encoder passes (the cache cleared before each) and 5 x ``repeats`` decoder passes
    (the slice cached), after one warm-up of each. Returns ``{"case", "slice", "box", "encoder":
    {"min_ms", "p50_ms", "cpu_p50_ms", "n"}, "decoder": {...}, "threads", "load_avg", "machine"}``
    (``cpu_p50_ms``: the median CPU time of the process per pass, summed over its threads).
    """
    if repeats < 1:
        raise InputError(f"--clicks (the repeats) must be at least 1, got {repeats}")
    vol = read_volume(image)
    lab = read_label(label, vol) != 0
    areas = lab.reshape(lab.shape[0], -1).sum(axis=1)
    if not areas.any():
        raise InputError("the label is empty: no box to time")
    z = int(np.argmax(areas))
    box = box_around(lab[z], z).as_list()
    pred = BoxPredictor(load_litemedsam(weights))
    pred.set_volume(vol)
    encoder, decoder = [], []
    for i in range(repeats + 1):
        pred.set_volume(vol)  # forget the embedding: each pass encodes
        if i:
            encoder.append(_timed(lambda: pred.set_slice(z)))
        else:
            pred.set_slice(z)
    for i in range(5 * repeats + 1):
        if i:
            decoder.append(_timed(lambda: pred.predict(box)))
        else:
            pred.predict(box)
    return {
        "case": vol.source,
        "slice": z,
        "box": box,
        "encoder": _stats(*zip(*encoder, strict=True)),
        "decoder": _stats(*zip(*decoder, strict=True)),
        "threads": torch.get_num_threads(),
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }


def boxes_markdown(r: dict) -> str:
    """One table: encoder per slice and decoder per box, minimum and median."""
    head = f"LiteMedSAM, float32 PyTorch, {r['threads']} threads; {r['machine']}; load average {r['load_avg']}"
    rows = [
        "| stage | min ms | p50 ms | CPU ms per pass (p50, all threads) | passes |",
        "|---|---|---|---|---|",
    ]
    for key, name in (("encoder", "encoder (new slice)"), ("decoder", "decoder (each box)")):
        e = r[key]
        rows.append(f"| {name} | {e['min_ms']} | {e['p50_ms']} | {e['cpu_p50_ms']} | {e['n']} |")
    return head + f"\n{r['case']}, slice {r['slice']}, box {r['box']}\n\n" + "\n".join(rows)
