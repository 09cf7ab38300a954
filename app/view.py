"""What the page shows of a :class:`~app.session.Session`: the slice with its contours, the likelihood
maps, the per-ray pictures, the planes, the table and the status line, as ``{output name: value}``
(names declared in :mod:`app.outputs`).

Everything is drawn from results already computed, with one exception: the ray shown large carries
the same network read with only its forward and only its backward memory, one small network run per
ray (:meth:`~app.session.Session.readouts`, cached per result and ray)."""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from app import outputs, render
from app.drawing import NAMES
from app.render_rays import render_ray_detail, render_ray_grid
from app.session import BoxAnswer, Session, require
from seqpatch_core.base.metrics import evaluate_masks
from seqpatch_core.evaluation.boxes import SEQPATCH_MARGIN_PX
from seqpatch_core.images.intensity import apply_window
from seqpatch_core.images.orientation import orientation
from seqpatch_core.images.volume import Volume
from seqpatch_core.inference.predictor import METHODS, Result
from seqpatch_core.method.run import Coarsen

log = logging.getLogger(__name__)


def wl_ranges(volume: Volume) -> dict[str, dict[str, float]]:
    """Slider ranges for window width and level in the image's units."""
    if volume.is_ct:
        return {
            "width": {"minimum": 1, "maximum": 4000, "step": 1},
            "level": {"minimum": -1500, "maximum": 3000, "step": 1},
        }
    lo, hi = float(volume.array.min()), float(volume.array.max())
    span = max(hi - lo, 1e-6)
    step = 10 ** math.floor(math.log10(span / 1000)) if span > 0 else 1
    return {
        "width": {"minimum": step, "maximum": _nice(2 * span, step), "step": step},
        "level": {"minimum": _nice(lo - span / 2, step), "maximum": _nice(hi + span / 2, step), "step": step},
    }


def _nice(v: float, step: float) -> float:
    return float(round(v / step) * step)


def best_slice(volume: Volume, label: np.ndarray | None) -> int:
    """The slice an image opens on: the label's largest (most voxels), else the middle one."""
    if label is not None and label.any():
        return int(np.argmax(label.reshape(label.shape[0], -1).sum(axis=1)))
    return volume.shape[0] // 2


def metrics_table(session: Session, z: int) -> str:
    """Markdown: the numbers of every result on slice ``z`` (or what to do when there is none)."""
    res = session.results.get(z) or {}
    box = session.box_answer(z)
    device = session.predictor.device
    dev = f"device: **{device}**"
    if not res and box is None:
        lines = [f"_Click on the object in the slice to segment it._  {dev}"]
        if session.label is not None:
            area = int(session.label[z].sum())
            where = "drawn green and dashed: click inside it" if area else "none on this slice"
            lines.append(f"Ground truth on slice {z}: {area} px ({where}).")
        return "\n\n".join(lines)
    ref = session.label[z] if session.label is not None else None
    # short headers: the table sits in a third of a laptop screen; units are in the line below it
    rows = ["| method | Dice | HD95 | CD x | CD y | area | time |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m in METHODS:
        if m in res:
            v = metric_values(session, res[m].mask, ref, res[m].timings.get("total_ms", float("nan")))
            cells = (v["Dice"], v["HD95"], v["CD x"], v["CD y"], v["area"], v["latency"])
            rows.append(f"| {NAMES[m]} | " + " | ".join(cells) + " |")
    if box is not None:
        v = metric_values(session, box.result.mask, ref, box.total_ms)
        cells = (v["Dice"], v["HD95"], v["CD x"], v["CD y"], v["area"], v["latency"])
        rows.append(f"| {box_name(box)} | " + " | ".join(cells) + " |")
    note = "" if ref is not None else "\n\n_Load a label to see Dice, CD and HD95._"
    found = "".join(f"\n\n{line}" for line in no_object_lines(session, res))
    return (
        "\n".join(rows)
        + found
        + "\n\nHD95 and CD (centroid distance per axis) in mm, area in mm², time in ms. "
        + f"Slice {z}, threshold {session.threshold:.2f}, {dev}."
        + note
    )


def no_object_lines(session: Session, res: dict[str, Result]) -> list[str]:
    """One line per method that found no object at the click (:meth:`Session.settle`): no contour is
    drawn for it, and the line says why."""
    out = []
    for m in METHODS:
        why = session.no_object(res[m]) if m in res else None
        if why:
            out.append(f"⚠ **{NAMES[m]}: no object found at the click** ({why}); no contour is drawn.")
    return out


def metric_cells(pred: np.ndarray, ref: np.ndarray | None, spacing: tuple[float, ...]) -> dict[str, str]:
    """Dice, CD per axis and HD95 of ``pred`` against ``ref`` (2D (y, x) or 3D (z, y, x) masks, spacing
    in the same order), formatted for a table: "–" without a reference, and "n/a (reason)" where a
    number would be invented (distances to an empty mask; Dice of two empty masks)."""
    axes = ("CD z", "CD y", "CD x")[-len(spacing) :]
    keys = ("Dice", *axes, "HD95")
    if ref is None:
        return dict.fromkeys(keys, "–")
    p_any, r_any = bool(np.any(pred)), bool(np.any(ref))
    if not p_any and not r_any:
        return dict.fromkeys(keys, "n/a (both empty)")
    e = evaluate_masks(pred, ref, spacing)
    out = {"Dice": f"{e['dice']:.3f}"}
    if not (p_any and r_any):
        why = "n/a (empty mask)" if not p_any else "n/a (no label here)"
        return {**out, **dict.fromkeys((*axes, "HD95"), why)}
    for a in axes:
        out[a] = f"{e['cd_' + a[-1]]:.2f}"
    out["HD95"] = f"{e['hd95']:.2f}"
    return out


#: The name of a box the user drew (two corners clicked in box mode), on the slice and in the table.
USER_BOX = "your box"
#: Beside a box's first corner on the slice, until the second.
CORNER_HINT = "now click the opposite corner"


def box_name(answer: BoxAnswer) -> str:
    """LiteMedSAM's name in the table and the legend, with where its box came from."""
    if answer.oracle:
        return "LiteMedSAM (oracle: label box)"
    if answer.source == "user":
        return f"LiteMedSAM ({USER_BOX})"
    return f"LiteMedSAM ({NAMES.get(answer.source, answer.source)} box)"


def box_label(answer: BoxAnswer) -> str:
    """The text beside LiteMedSAM's box on the slice: whose box it is and where it came from."""
    if answer.oracle:
        return "LiteMedSAM's box: the label's (oracle)"
    if answer.source == "user":
        return f"{USER_BOX} (LiteMedSAM)"
    if answer.source in NAMES:
        return f"LiteMedSAM's box: {NAMES[answer.source]} + {SEQPATCH_MARGIN_PX} px"
    return f"LiteMedSAM's box: {answer.source}"


def metric_values(session: Session, mask: np.ndarray, ref: np.ndarray | None, latency_ms: float) -> dict[str, str]:
    """One (y, x) bool mask's numbers, formatted: Dice, CD x, CD y, HD95 (– without a label), area and
    its method's latency (ms)."""
    sy, sx = session.volume.spacing[1:]
    area = float(mask.sum()) * sy * sx
    lat = latency_ms
    cells = metric_cells(mask, ref, (sy, sx))
    out = {k: cells[k] for k in ("Dice", "CD x", "CD y", "HD95")}
    out["area"] = f"{area:.1f}"
    out["latency"] = f"{lat:.0f}"
    return out


def running_note(session: Session) -> str:
    """What the page says while SeqPatch runs, with this session's last SeqPatch time as the estimate."""
    t = session.seqpatch_seconds
    if t is None:
        eta = "a few seconds"
    elif t < 1.5:
        eta = "about a second"
    else:
        eta = f"about {t:.0f} s"
    return f"**SeqPatch running…** ({eta} on this machine; the U-net's result is shown meanwhile)"


def checking_note(result: Result) -> str:
    """What the page says while the scale rule checks the next coarser grid after ``result``, the
    answer on the grids tried so far (:meth:`~seqpatch_core.inference.predictor.Predictor.predict_steps`)."""
    tried = result.grids_mm
    grids = Coarsen.grids(tried[0])
    following = grids[len(tried)] if len(tried) < len(grids) else tried[-1]
    name = NAMES[result.method]
    return (
        f"**{name} running: checking the {following:g} mm grid…** (its {result.working_spacing:g} mm answer is "
        "shown; it stands unless the object is wider there)"
    )


def partial_metrics(session: Session, z: int, res: dict[str, Result]) -> str:
    """The numbers of the methods done so far, one line each (the full table follows with SeqPatch)."""
    ref = session.label[z] if session.label is not None else None
    lines = []
    for m in METHODS:
        if m in res:
            v = metric_values(session, res[m].mask, ref, res[m].timings.get("total_ms", float("nan")))
            lines.append(
                f"**{NAMES[m]}**: Dice {v['Dice']} · CD x {v['CD x']} mm · CD y {v['CD y']} mm · "
                f"HD95 {v['HD95']} mm · area {v['area']} mm² · {v['latency']} ms"
            )
    lines.extend(no_object_lines(session, res))
    lines.append("_SeqPatch: running; the table of both follows._")
    lines.append(f"Slice {z}, threshold {session.threshold:.2f}, device: **{session.predictor.device}**.")
    return "\n\n".join(lines)



def grid_note(r: Result) -> str:
    """The grid that answered ``r`` and why (:class:`~seqpatch_core.method.run.Coarsen`), e.g.
    "2 mm (large object: segmented again on this coarser grid)" or "1 mm (checked on 2 mm: no wider)"."""
    text = f"{r.working_spacing:g} mm"
    if r.coarsened:
        return text + " (large object: segmented again on this coarser grid)"
    if len(r.grids_mm) > 1:
        return text + f" (checked on {r.grids_mm[-1]:g} mm: no wider there)"
    return text

def status_text(session: Session, z: int) -> str:
    """Markdown: the click of slice ``z`` in voxels and mm, each method's grid, the window and the notes."""
    res = session.results.get(z) or {}
    parts = []
    if res:
        r = next(iter(res.values()))
        pz, py, px = r.point_zyx
        phys = session.volume.index_to_physical((pz, py, px))
        parts.append(
            f"Point (z, y, x) = ({pz:.0f}, {py:.1f}, {px:.1f}) voxels = "
            f"({phys[0]:.1f}, {phys[1]:.1f}, {phys[2]:.1f}) mm (x, y, z); window {r.window}; "
            f"ray preset {r.preset}; working grid "
            + ", ".join(f"{NAMES[m]} {grid_note(res[m])}" for m in METHODS if m in res)
            + "."
        )
    n = len(session.results)
    parts.append(
        f"Window {session.window_text()}: one window for every click on this volume. "
        f"{n} segmented slice{'s' if n != 1 else ''}"
        + (f" ({', '.join(str(k) for k in sorted(session.results))})" if n else "")
        + "."
        + "".join(
            f" 3D object ({NAMES[m]}, dotted): slices {o.prop.z_range[0]}–{o.prop.z_range[1]}, "
            f"{o.prop.volume_ml:.2f} mL, from the click at ({o.seed_zyx[0]}, {o.seed_zyx[1]:.1f}, "
            f"{o.seed_zyx[2]:.1f})" + ("; on this slice." if o.prop.mask3d[z].any() else "; not on this slice.")
            for m, o in session.objects3d.items()
        )
    )
    parts.extend(f"⚠ {note}" for note in session.notes)
    return " ".join(parts[:2]) + ("\n\n" + "\n\n".join(parts[2:]) if len(parts) > 2 else "")


def plane_point(session: Session) -> tuple[int, int]:
    """(y, x) of the coronal and sagittal planes: the current slice's click, else the last click
    still shown, else the middle row and column."""
    s = session
    res = s.results.get(s.z)
    if not res:
        for c in reversed(s.clicks):
            if s.results.get(c.z):
                res = s.results[c.z]
                break
    _, ny, nx = s.shape
    if res:
        _, y, x = next(iter(res.values())).point_zyx
        return int(np.clip(round(y), 0, ny - 1)), int(np.clip(round(x), 0, nx - 1))
    return ny // 2, nx // 2


def render_planes(session: Session) -> dict[str, np.ndarray]:
    """The planes across the slices through the click: "coronal" holds array axis 1 (y) and
    "sagittal" axis 2 (x), the names of an axial acquisition; each picture's caption names the plane it
    shows. Shown the right way up (:func:`~seqpatch_core.images.orientation.orientation`, superior up
    for coronal and sagittal, with the edge letters), in the current slice's window and their physical
    aspect, with every segmented slice's masks and a line at the current slice. A numpy slice and a
    resize each: no network runs."""
    s = require(session)
    y, x = plane_point(s)
    w = s.display_window(s.z)
    arr = s.volume.array
    planes = orientation(s.volume.direction).planes
    out = {}
    for name, normal, at in (("coronal", 1, y), ("sagittal", 2, x)):
        p = planes[normal]
        shape = p.plane_shape(arr.shape)  # (z, n) in voxel order

        def shown(a: np.ndarray, p=p, at=at) -> np.ndarray:
            return p.to_display(p.take(a, at))

        masks = {m: np.zeros(shape, dtype=bool) for m in METHODS}
        for z, res in s.results.items():
            for m, r in res.items():
                if m in masks:  # the slice mask's row y (or column x) is the plane's row z
                    masks[m][z] = np.take(r.mask, at, axis=normal - 1)
        contours = [render.Contour(m, p.to_display(masks[m])) for m in METHODS if masks[m].any()]
        contours += [
            render.Contour(m, shown(o.prop.mask3d), fill=False, dotted=True, label=f"{NAMES[m]} 3D")
            for m, o in s.objects3d.items()
        ]
        if s.label is not None:
            contours.append(render.Contour("truth", shown(s.label).astype(bool), dashed=True, fill=False))
        # the current slice is a line of the plane's first array axis (z): a row or a column on screen
        across = p.axes.index(0)
        line = int(round(p.points_to_display(np.array([s.z, 0.0]), shape)[across]))
        out[name] = render.render_plane(
            apply_window(shown(arr), w),
            p.display_spacing(s.volume.spacing),
            contours,
            opacity=s.opacity,
            current_line=(across, line),
            caption=f"{p.name}, {'yx'[normal - 1]} = {at}",
            letters=p.letters,
        )
    return out


def click_to_voxel(session: Session, xy_display: Sequence[float]) -> tuple[float, float]:
    """A click on the slice picture, Gradio's ``[x, y]`` picture pixel, → the (y, x) voxel of the
    current slice in the file's own order, clamped to the slice (the picture shows it turned the right
    way up, :func:`render_view`)."""
    disp = orientation(session.volume.direction).slices
    shown_rc = render.display_to_slice(xy_display, session.factor, disp.display_shape(session.shape))
    y, x = disp.points_to_plane(np.asarray(shown_rc), disp.plane_shape(session.shape))
    return float(y), float(x)


#: Widths (px) the per-ray pictures are drawn at: about the width they are shown at on a laptop.
RAY_GRID_PX = 640
RAY_DETAIL_PX = 720
#: The likelihood maps: drawn about as wide as a laptop shows them (217 px at 1366 × 768), with the
#: colour bar's numbers large enough to be 11 px or more there (the Gradio label names the map).
LIKELIHOOD_PX = 240
LIKELIHOOD_TEXT_PX = 13


def centres_inside(result: Result) -> np.ndarray:
    """(n_rays, K) bool: which patch centres of a SeqPatch result lie inside its mask."""
    h, w = result.mask.shape
    cy = np.clip(np.round(result.centres[..., 0]).astype(int), 0, h - 1)
    cx = np.clip(np.round(result.centres[..., 1]).astype(int), 0, w - 1)
    return result.mask[cy, cx]


def ray_detail(session: Session, sp: Result, inside: np.ndarray | None = None) -> np.ndarray:
    """The chosen ray of a SeqPatch result, large: input patches, fused likelihood and the readouts
    of the forward-only and backward-only memories (same network), inside → outside."""
    inside = centres_inside(sp) if inside is None else inside
    n = sp.patches.shape[0]
    i = int(np.clip(session.ray, 0, n - 1))
    try:
        r = session.readouts(sp, i)
    except Exception:  # noqa: BLE001 - a teaching extra must never cost the user the main answer
        log.exception("direction readouts failed")
        r = {}
    return render_ray_detail(
        sp.patches[i],
        sp.ray_likelihoods[i],
        ray=i,
        n_rays=n,
        inside=inside[i],
        forward=r.get("forward"),
        backward=r.get("backward"),
        width=RAY_DETAIL_PX,
    )


def render_view(session: Session, skip: Collection[str] = ()) -> dict[str, Any]:
    """Every picture and text of the current slice. The slice and its likelihood maps are shown the
    right way up (:func:`~seqpatch_core.images.orientation.orientation`: axial anterior up with the
    patient's right on the left, coronal and sagittal superior up), with the edge letters; results
    stay in the file's voxel order and are turned here only.

    skip: outputs not drawn (left out of the answer): those known unchanged, or drawn by a later event
    ("rays" and "ray_detail" together: :func:`ray_views`; "coronal" and "sagittal" together)."""
    s = require(session)
    z = s.z
    f = s.factor
    disp = orientation(s.volume.direction).slices
    shape_yx = disp.plane_shape(s.shape)
    shown, at = disp.to_display, lambda points: disp.points_to_display(points, shape_yx)
    win = shown(s.windowed(z))
    res = s.results.get(z) or {}
    contours = [render.Contour(m, shown(res[m].mask)) for m in METHODS if m in res and res[m].mask.any()]
    box = s.box_answer(z)
    if box is not None and box.result.mask.any():
        contours.append(render.Contour("litemedsam", shown(box.result.mask), label=box_name(box)))
    contours += [  # the whole objects followed in 3D, on every slice they reach
        render.Contour(m, shown(o.prop.mask3d[z]), fill=False, dotted=True, label=f"{NAMES[m]} 3D")
        for m, o in s.objects3d.items()
        if o.prop.mask3d[z].any()
    ]
    if s.label is not None:
        contours.append(render.Contour("truth", shown(s.label[z]).astype(bool), dashed=True, fill=not res))
    point = centres = fov = None
    if res:
        point = at(next(iter(res.values())).point_zyx[1:])
    if s.show_rays and "seqpatch" in res:
        centres = at(res["seqpatch"].centres)
    if s.show_rays and "unet" in res:
        fov = at(res["unet"].centres)
    caption = f"{disp.name} {z}/{s.shape[0] - 1}  {s.display_window(z)}"
    overlay = render.render_overlay(
        render.grey_rgb(win, f),
        f,
        contours,
        opacity=s.opacity,
        point_yx=point,
        ray_centres=centres,
        fov_corners=fov,
        caption=caption,
        letters=disp.letters,
        inset=True,  # a small answer magnified beside the click
        prompt_box=None if box is None else (_shown_box(box, at), box_label(box)),
        corner=None if s.box_corner is None or s.box_corner[0] != z else (at(s.box_corner[1:]), CORNER_HINT),
    )
    out: dict[str, Any] = {"overlay": overlay}
    for m in METHODS:
        r = res.get(m)
        if f"lik_{m}" in skip:
            continue
        if r is None:
            why = "weights not loaded" if m not in s.predictor.models else "click on the slice"
            out[f"lik_{m}"] = render.placeholder(f"{NAMES[m]} likelihood\n({why})")
        else:
            out[f"lik_{m}"] = render.render_likelihood(
                win,
                shown(r.likelihood),
                shown(r.coverage),
                f,
                key=m,
                mask=shown(r.mask),
                point_yx=at(r.point_zyx[1:]),
                width=LIKELIHOOD_PX,  # about as shown: the colour bar's numbers stay readable
                text_px=LIKELIHOOD_TEXT_PX,
            )
    if "lik_litemedsam" not in skip:
        if box is None:
            why = "weights not loaded" if s.boxes is None else "follows a click"
            out["lik_litemedsam"] = render.placeholder(f"LiteMedSAM likelihood\n({why})")
        else:
            prob = shown(box.result.prob)
            out["lik_litemedsam"] = render.render_likelihood(
                win,
                prob,
                np.ones_like(prob),  # LiteMedSAM reads the whole slice: no part is unseen
                f,
                key="litemedsam",
                mask=shown(box.result.mask),
                width=LIKELIHOOD_PX,
                text_px=LIKELIHOOD_TEXT_PX,
            )
    if "rays" not in skip:
        out.update(ray_views(s))
    out["metrics"] = metrics_table(s, z)
    out["status"] = status_text(s, z)
    w = s.display_window(z)
    out["width"] = round(w.width, 6)
    out["level"] = round(w.level, 6)
    if "coronal" not in skip:  # (and "sagittal": the two planes are drawn together)
        out.update(render_planes(s))
    return out


def _shown_box(answer: BoxAnswer, at) -> tuple[float, float, float, float]:
    """The answer's box as (y0, x0, y1, x1) px of the slice as shown (``at``: voxel (y, x) points to
    shown ones), corners inclusive: the display may flip or turn the slice, so both corners are mapped."""
    b = answer.result.box
    corners = at(np.array([[b.y0, b.x0], [b.y1, b.x1]], dtype=np.float64))
    (y0, x0), (y1, x1) = corners.min(axis=0), corners.max(axis=0)
    return float(y0), float(x0), float(y1), float(x1)


def ray_views(session: Session) -> dict[str, np.ndarray]:
    """The per-ray pictures of the current slice's SeqPatch result, ``{"rays", "ray_detail"}``: all rays
    × K patches, and the ray shown large with its one-memory readouts (a small network run, cached)."""
    s = require(session)
    sp = (s.results.get(s.z) or {}).get("seqpatch")
    if sp is None or sp.patches.ndim != 4:
        return {
            "rays": render.placeholder("Per-ray view: click on the slice\n(SeqPatch: 16 rays × K patches)"),
            "ray_detail": render.placeholder("One ray, large: click on the slice"),
        }
    inside = centres_inside(sp)
    return {
        "rays": render_ray_grid(sp.patches, sp.ray_likelihoods, inside=inside, width=RAY_GRID_PX),
        "ray_detail": ray_detail(s, sp, inside),
    }


def empty_view(session: Session | None) -> dict[str, Any]:
    """The main view with no image: every output at its blank (:mod:`app.outputs`), the session kept."""
    return {**outputs.empty(*outputs.MAIN), "state": session}


def summary_text(session: Session) -> str:
    """Markdown: the image (and label) loaded, with the reader's warnings."""
    v = session.volume
    lines = [f"**{v.source}**: {v.summary()}"]
    if session.label is not None:
        n = int(session.label.sum())
        k = int(np.count_nonzero(session.label.reshape(session.label.shape[0], -1).any(axis=1)))
        lines.append(f"Label: {n} voxels on {k} slice{'s' if k != 1 else ''}.")
    elif session.label_note:
        lines.append(session.label_note)
    lines.extend(f"⚠ {w}" for w in v.warnings)
    return "\n\n".join(lines)
