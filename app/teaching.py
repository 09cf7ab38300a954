"""Teaching and robustness panels of the demo: click robustness, the whole object in 3D, ablations side
by side and what the sequential network computes along one ray. Functions of a :class:`Session`
returning ``{output name: value}``, like :mod:`app.handlers` (the layout maps names to components).

Every panel works on the *current click*: the point clicked on the slice being shown.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from app import features, render, zerogpu
from app.session import Object3D, ObjectStep, Session, _require, user_errors
from app.views import centres_inside, metric_cells, render_view
from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import dice
from seqpatch_core.base.paths import WEIGHTS_DIR
from seqpatch_core.base.progress import Progress
from seqpatch_core.evaluation.robustness import click_robustness, robustness_figure
from seqpatch_core.images.intensity import Window
from seqpatch_core.inference.predictor import METHODS, Predictor, Result
from seqpatch_core.inference.propagate import propagate

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
#: Clicks per batch in the robustness grid: the progress bar advances after each batch.
ROBUSTNESS_CHUNK = 5
#: The teaching pictures' placeholder texts (shown before a panel runs, and again after a new click).
PLACEHOLDERS = {
    "obj_view": "Slices across the object",
    "cmp_ref": "Bidirectional model: per-ray view",
    "cmp_var": "Ablation: per-ray view",
    "feat_img": "Feature maps of one ray",
}
#: The bidirectional reference an ablation is compared with when loaded (trained with the same budget).
PAPER_KEY = PREFIX + "seqpatch_paper"
ABLATIONS_DIR = WEIGHTS_DIR / "ablations"

EXPLAIN = """#### How the sequential network reads a ray
* **Inside → outside.** Each of the 16 rays starts *inside* the object, at your click, and ends
  *outside* it. The network reads the ray's K patches in that order (k = 0 … K−1), so it can judge
  each patch by **comparing it with what came before and after it**, not on its own.
* **Forward memory** (k = 0 → K−1) has seen only the patches from the click up to this one, mostly
  inside the object: it tends to call the patch *inside* ("still looks like the object").
* **Backward memory** (k = K−1 → 0) starts at the far end and has seen the outside: it tends to call
  the patch *outside*.
* **Bidirectional unit.** At every time step the two memories are fused (concatenated, 1×1
  convolution). Before the boundary both say inside, after it both say outside; **where they
  disagree is the crossing**, and the likelihood drops there. A forward-only network (ablation
  *forward*) has to decide without seeing what lies beyond.
* **See it.** The ray shown large (left) has two more rows: the same network read with only its
  forward memory, then with only its backward memory (the other half zeroed before the fusion). The
  curves below compare the three at the patch centres: the crossing is where they part.
"""


# ----------------------------------------------------------------------------- shared helpers


def cleared() -> dict[str, Any]:
    """Every teaching output back to its empty state: they showed the previous click (or image)."""
    out: dict[str, Any] = {name: render.placeholder(text) for name, text in PLACEHOLDERS.items()}
    out.update({"rob_plot": None, "rob_note": "", "obj_note": "", "cmp_note": "", "feat_note": ""})
    return out


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


def current_click(session: Session) -> tuple[int, float, float]:
    """The (z, y, x) clicked on the slice being shown, or a one-line InputError."""
    s = _require(session)
    res = s.results.get(s.z) or {}
    if not res:
        raise InputError(f"click on the object on slice {s.z} first (this panel works on the current click)")
    z, y, x = next(iter(res.values())).point_zyx
    return int(z), float(y), float(x)


def _click_window(session: Session) -> Window:
    return next(iter(session.results[session.z].values())).window


def _where(session: Session, click: tuple[int, float, float] | None = None) -> str:
    """The click a panel's result was computed for, in words (``click`` None: the current click).

    Long runs pass the click they started from, so a newer click never relabels an older result."""
    z, y, x = current_click(session) if click is None else click
    return f"slice {z}, click (y, x) = ({y:.1f}, {x:.1f})"


#: Width (px) the ablation tab's two ray grids are drawn at: half of a laptop's page each.
COMPARE_GRID_PX = 620


def ray_grid(
    result: Result, title: str | None = None, width: int | None = COMPARE_GRID_PX
) -> np.ndarray:
    """The per-ray view of a seqpatch-architecture result (render's grid, drawn ``width`` px wide for
    the place it is shown at), with an optional title bar."""
    grid = render.render_ray_grid(
        result.patches, result.ray_likelihoods, inside=centres_inside(result), width=width
    )
    if not title:
        return grid
    bar = np.full((30, grid.shape[1], 3), 24, dtype=np.uint8)
    img = Image.fromarray(bar)
    render._text(ImageDraw.Draw(img), (10, 6), title, 16, fill=render.COLOURS["seqpatch"])
    return np.concatenate([np.asarray(img), grid], axis=0)


# ----------------------------------------------------------------------------- 1. click robustness


@user_errors
def robustness(
    session: Session | None, grid: float = 5, step_mm: float = 3.0, progress: Progress | None = None
) -> dict[str, Any]:
    """Dice heat maps over a grid of moved clicks around the current click (seqpatch and U-net)."""
    s = _require(session)
    z, y, x = current_click(s)
    methods = [m for m in METHODS if m in s.predictor.models]
    if not methods:
        raise InputError("no model is loaded (see weights/README.md)")
    try:
        grid_n, step = int(grid), float(step_mm)
    except (TypeError, ValueError):
        raise InputError("the grid size and the step must be numbers") from None
    label = s.label[z] if s.label is not None else None
    with s.using():  # the memory pool leaves the session alone while the grid runs
        result = click_robustness(
            s.predictor,
            z,
            (y, x),
            grid=grid_n,
            step_mm=step,
            methods=methods,
            label_slice=label,
            progress=progress,
            threshold=s.threshold,
            chunk=ROBUSTNESS_CHUNK,
            window=_click_window(s),  # every moved click in the window of the original one
            coarsen=s.second_pass,
        )
    s.robustness = result
    shown = {render.NAMES.get(k, k) if k in methods else k: v for k, v in result.items()}
    fig = robustness_figure(shown)
    if result["reference"] == "label":
        ref = f"**Scored against the label** on slice {z} (the ground truth): accuracy as the click moves."
    else:
        ref = (
            "**Scored against each method's own result at the original click** (no label loaded): "
            "how stable the answer is, not how right."
        )
    means = ", ".join(
        f"{render.NAMES[m]} mean Dice {np.nanmean([v for r in result[m] for v in r if v is not None]):.3f}"
        for m in methods
    )
    n_out = int(np.sum(result["outside"]))
    note = (
        f"{ref} {grid_n}×{grid_n} clicks, {step:g} mm apart, around {_where(s, (z, y, x))}, all in the "
        f"window {result['window']}. {means}. "
        f"Cells marked × (hatched): the moved click lies outside the object ({n_out} of them); "
        f"red frame: the original click; n/a: outside the image. "
        f"{result['seconds']['total']:.1f} s."
    )
    return {"state": s, "rob_plot": fig, "rob_note": note}


# ----------------------------------------------------------------------------- 2. whole object in 3D


def _seed_component(label: np.ndarray, seed: tuple[int, float, float]) -> tuple[np.ndarray, str]:
    """The label's 3D connected component holding the seed, else the whole label (and which)."""
    lab = label != 0
    z, y, x = seed[0], int(round(seed[1])), int(round(seed[2]))
    if not lab[z, y, x]:
        return lab, "the whole label (the click is outside it)"
    comp, n = ndimage.label(lab)
    if n <= 1:
        return lab, "the label"
    return comp == comp[z, y, x], "the label's connected object at the click"


def _montage(session: Session, obj: Object3D, tiles: int = 8, tile_px: int = 240) -> np.ndarray:
    """Up to ``tiles`` slices across the object, its mask outlined (and the label dashed)."""
    s = session
    lo, hi = obj.prop.z_range
    zs = sorted({int(round(v)) for v in np.linspace(lo, hi, min(tiles, hi - lo + 1))})
    # zoom on the object: the box around the 3D mask (and the label) with a margin
    around = obj.prop.mask3d[lo : hi + 1].any(axis=0)
    if s.label is not None:
        around = around | (s.label[lo : hi + 1] != 0).any(axis=0)
    h, w = s.shape[1:]
    if around.any():
        ys, xs = np.nonzero(around)
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        half = max(ys.max() - ys.min(), xs.max() - xs.min(), 32) * 0.8
    else:
        cy, cx, half = h / 2, w / 2, max(h, w) / 2
    y0, y1 = int(max(0, cy - half)), int(min(h, cy + half + 1))
    x0, x1 = int(max(0, cx - half)), int(min(w, cx + half + 1))
    f = render.display_factor((y1 - y0, x1 - x0))
    pics = []
    for z in zs:
        crop = (slice(y0, y1), slice(x0, x1))
        contours = [render.Contour(obj.method, obj.prop.mask3d[z][crop])]
        if s.label is not None:
            contours.append(render.Contour("truth", s.label[z][crop] != 0, dashed=True, fill=False))
        pic = render.render_overlay(
            render.grey_rgb(s.windowed(z)[crop], f), f, contours, opacity=0.25
        )
        img = Image.fromarray(pic)
        img.thumbnail((tile_px, tile_px))
        canvas = Image.new("RGB", (tile_px, tile_px), (24, 24, 24))
        canvas.paste(img, ((tile_px - img.width) // 2, (tile_px - img.height) // 2))
        render._text(ImageDraw.Draw(canvas), (6, tile_px - 22), f"z {z}", 15)
        pics.append(np.asarray(canvas))
    cols = min(4, len(pics))
    rows = -(-len(pics) // cols)
    pad = 4
    out = np.full((rows * (tile_px + pad) + pad, cols * (tile_px + pad) + pad, 3), 12, dtype=np.uint8)
    for i, p in enumerate(pics):
        r, c = divmod(i, cols)
        out[pad + r * (tile_px + pad) : pad + r * (tile_px + pad) + tile_px,
            pad + c * (tile_px + pad) : pad + c * (tile_px + pad) + tile_px] = p  # fmt: skip
    return out


@user_errors
def segment_object(
    session: Session | None, method: str = "seqpatch", progress: Progress | None = None
) -> dict[str, Any]:
    """Follow the clicked object through the neighbouring slices (:func:`propagate`) and keep its 3D mask."""
    s = _require(session)
    z, y, x = current_click(s)
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method not in s.predictor.models:
        raise InputError(f"the {render.NAMES[method]} weights are not loaded (see weights/README.md)")
    nz = s.shape[0]

    def tick(n: int) -> None:
        if progress is not None:
            done = f"{n} slice{'s' if n > 1 else ''}"
            progress(min(n / max(nz, 1), 0.99), f"{render.NAMES[method]}: {done} of at most {nz} done")

    window = _click_window(s)
    with s.using():
        prop = propagate(
            s.predictor,
            (z, y, x),
            method=method,
            threshold=s.threshold,
            window=window,
            coarsen=s.second_pass,
            on_slice=tick,
        )
    obj = Object3D(method=method, seed_zyx=(z, y, x), threshold=s.threshold, prop=prop, window=window)
    s.history.append(ObjectStep(method, s.objects3d.get(method)))  # undo takes it back
    s.objects3d[method] = obj
    lo, hi = prop.z_range
    stops = {"vanished": "object vanished", "area_jump": "area jump (leak?)", "volume_end": "end of volume",
             "empty_start": "empty at the click"}  # fmt: skip
    lines = [
        f"**{render.NAMES[method]}, whole object**: **{prop.volume_ml:.2f} mL** on slices **{lo}–{hi}** "
        f"({hi - lo + 1} slice{'s' if hi != lo else ''}), from the click at {_where(s, (z, y, x))}, threshold "
        f"{s.threshold:.2f}. Stopped: +z {stops.get(prop.stops.get('+z'), '–')}, "
        f"−z {stops.get(prop.stops.get('-z'), '–')}.",
    ]
    if s.label is not None:
        ref, what = _seed_component(s.label, (z, y, x))
        e = metric_cells(prop.mask3d, ref, s.volume.spacing)
        voxel_ml = float(np.prod(s.volume.spacing)) / 1000.0
        lines.append(
            "| 3D vs " + what + " | Dice | CD x (mm) | CD y (mm) | CD z (mm) | HD95 (mm) | label (mL) |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n"
            f"| {render.NAMES[method]} | {e['Dice']} | {e['CD x']} | {e['CD y']} | "
            f"{e['CD z']} | {e['HD95']} | {float(ref.sum()) * voxel_ml:.2f} |"
        )
    else:
        lines.append("_Load a label to see the 3D Dice and centroid distances._")
    lines.append(
        "The object is drawn dotted on every slice it reaches and in the coronal and sagittal views; "
        "**Undo** takes it back. **Export** also writes this 3D mask (`…_" + method + "_3d_mask.nii.gz`)."
    )
    out = {"state": s, "obj_note": "\n\n".join(lines), "obj_view": _montage(s, obj), "files": None}
    view = render_view(s)  # the object on the slice shown, in both planes and in the status line
    out.update({k: view[k] for k in ("overlay", "status", "coronal", "sagittal")})
    return out


# ----------------------------------------------------------------------------- 3. ablations


@user_errors
def compare(session: Session | None, variant: str | None) -> dict[str, Any]:
    """Run an ablation variant on the current click; its ray grid beside the bidirectional model's."""
    s = _require(session)
    z, y, x = current_click(s)
    if not variant:
        raise InputError("choose an ablation variant first")
    key = variant if variant.startswith(PREFIX) else PREFIX + variant
    if key not in s.predictor.models:
        name = key[len(PREFIX) :]
        raise InputError(f"the ablation {name!r} is not loaded (no weights in weights/ablations)")
    ref_key = PAPER_KEY if PAPER_KEY in s.predictor.models and key != PAPER_KEY else "seqpatch"
    if ref_key not in s.predictor.models:
        raise InputError("the SeqPatch weights are not loaded (see weights/README.md)")
    opts = {"threshold": s.threshold, "window": _click_window(s), "coarsen": s.second_pass}
    var = s.predictor.predict((z, y, x), method=key, **opts)
    ref = (s.results[z].get(ref_key) if ref_key == "seqpatch" else None) or s.predictor.predict(
        (z, y, x), method=ref_key, **opts
    )
    name = key[len(PREFIX) :]
    ref_name = ref_key[len(PREFIX) :] if ref_key.startswith(PREFIX) else "SeqPatch (the app's model)"
    out = {
        "state": s,
        "cmp_ref": ray_grid(ref, f"bidirectional: {ref_name}"),
        "cmp_var": ray_grid(var, f"ablation: {name}"),
    }
    why = (
        "trained with the same budget as the ablations" if ref_key == PAPER_KEY
        else "the app's main model (longer training, GroupNorm): not an equal-budget comparison"
    )  # fmt: skip
    rows = [
        "| model | Dice on this slice | area (px) | validation Dice (synthetic) | training |",
        "|---|---:|---:|---:|---|",
    ]
    described = f"{name}: {ABLATIONS.get(name, ('', ''))[1]}"
    for label, r, k in ((f"{ref_name} (bidirectional)", ref, ref_key), (described, var, key)):
        d = f"{dice(r.mask, s.label[z] != 0):.3f}" if s.label is not None else "–"
        val, budget = training_summary(s.predictor.models[k])
        rows.append(f"| {label} | {d} | {int(r.mask.sum())} | {val} | {budget} |")
    note = (
        f"Same click ({_where(s, (z, y, x))}), same patches, threshold {s.threshold:.2f}. Reference: "
        f"**{ref_name}**, {why}.\n\n" + "\n".join(rows) + "\n\n" + ABLATION_CAVEAT
    )
    if s.label is None:
        note += "\n\n_Load a label to see Dice._"
    out["cmp_note"] = note
    return out


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


# ----------------------------------------------------------------------------- 4. feature maps


@user_errors
def ray_features_view(session: Session | None, ray: float = 0) -> dict[str, Any]:
    """The bottom/middle/top feature maps of one ray of the current click (SeqPatch network)."""
    s = _require(session)
    current_click(s)
    sp = s.results[s.z].get("seqpatch")
    if sp is None or sp.patches.ndim != 4:
        raise InputError("the SeqPatch network has not run on this click (are its weights loaded?)")
    n = sp.patches.shape[0]
    i = int(np.clip(round(float(ray or 0)), 0, n - 1))
    feats = zerogpu.features("seqpatch", s.predictor.models["seqpatch"], sp.patches[i])
    img = features.render_feature_strips(sp.patches[i], feats, sp.ray_likelihoods[i], ray=i, n_rays=n)
    sizes = "; ".join(
        f"{f.level}: {f.channels} channels of {f.after.shape[1]}×{f.after.shape[2]}"
        + ("" if f.source.startswith("rnn") else " (no recurrent unit)")
        for f in feats.values()
    )
    note = (
        f"Ray {i} ({360.0 * i / n:.1f}°) at {_where(s)}. Each small picture is the mean over channels "
        f"at one time step ({sizes}). *Encoder* rows see each patch alone; *after bi-RNN* rows also "
        "carry what the forward and backward memories bring from the rest of the ray."
    )
    return {"feat_img": img, "feat_note": note}
