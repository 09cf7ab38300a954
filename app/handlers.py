"""The main view's events, as functions of a per-session :class:`~app.session.Session`: testable
without a browser. What the page shows is drawn in :mod:`app.view`; the exports are :mod:`app.exports`;
the teaching tabs' events :mod:`app.teaching_handlers`.

Every handler takes the session (and plain values) and returns a dict keyed by output name (declared
in :mod:`app.outputs`); absent outputs stay unchanged. Errors a user can cause become a one-line notice
(:mod:`app.notices`).

Axis order: arrays are (z, y, x) and points (z, y, x) or (y, x) slice pixels, as in the core. The UI
layer alone converts Gradio's click position ``[x, y]`` on the enlarged picture into (y, x).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import numpy as np

from app import memory, render
from app.drawing import NAMES
from app.notices import UserNotice, user_errors, warn
from app.session import (
    BOX_WEIGHTS_MISSING,
    WEIGHTS_HELP,
    BoxAnswer,
    BoxStep,
    Click,
    ObjectStep,
    Session,
    new_session,
    require,
    weights_message,
)
from app.view import (
    USER_BOX,
    best_slice,
    checking_note,
    empty_view,
    partial_metrics,
    ray_detail,
    ray_views,
    render_view,
    running_note,
    summary_text,
    wl_ranges,
)
from seqpatch_core.base.errors import InputError, SeqPatchError, first_line
from seqpatch_core.evaluation.boxes import SEQPATCH_MARGIN_PX
from seqpatch_core.images.intensity import WINDOW_NAMES, Window, auto_window
from seqpatch_core.images.io import read_label
from seqpatch_core.images.orientation import orientation
from seqpatch_core.inference.boxes import Box, box_around, check_box
from seqpatch_core.inference.predictor import METHODS, Predictor, Result
from seqpatch_core.method.models.litemedsam import LiteMedSAM

log = logging.getLogger(__name__)

#: Window choices shown in the dropdown ("custom" = the W/L sliders).
WINDOWS = (*WINDOW_NAMES, "custom")
#: What a click on the slice does, the choices beside the slice: segment at the click (SeqPatch and
#: the U-net, LiteMedSAM following), or one corner of a box for LiteMedSAM (:func:`box_corner_steps`).
CLICK_MODE = "Click (SeqPatch, U-net)"
BOX_MODE = "Box (LiteMedSAM): two corners"
CLICK_MODES = (CLICK_MODE, BOX_MODE)


# ----------------------------------------------------------------------------- events


@user_errors
def load(
    predictor: Predictor,
    old: Session | None,
    image_path: str | None,
    label_path: str | None = None,
    window_name: str = "auto",
    threshold: float = 0.5,
    opacity: float = 0.3,
    show_rays: bool = False,
    second_pass: bool = True,
    box_model: LiteMedSAM | None = None,
) -> dict[str, Any]:
    """Read an image (and optional label), start a fresh session on it and show its best slice.

    threshold, opacity, show_rays, second_pass: the controls' current values, kept by the new session.
    box_model: LiteMedSAM, shared by every session (None: the page runs without it).
    """
    loaded = old is not None and old.volume is not None
    if not image_path and loaded:
        return {}  # an empty box unloads nothing: the image stays until another one has been read
    session = new_session(predictor, box_model)
    session.second_pass = second_pass is not False
    session.threshold = float(threshold) if threshold and 0 < float(threshold) < 1 else 0.5
    session.opacity = float(np.clip(opacity if opacity is not None else 0.3, 0.0, 1.0))
    session.show_rays = bool(show_rays)
    if not image_path:
        if old is not None:
            old.close()
        return empty_view(session)
    try:
        volume = memory.shared_volume(image_path)  # one read-only copy per file, shared by sessions
    except SeqPatchError as exc:
        # A refused file leaves the session as it was, and its box shows what is loaded (the
        # image before, or nothing), not the refused file.
        out: dict[str, Any] = {"image_file": old.image_path if loaded else None}
        if loaded:
            out["state"] = old
        raise UserNotice(first_line(exc), out) from None
    session.volume = volume
    session.image_path = str(image_path)
    session.window_name = window_name if window_name in WINDOWS and window_name != "custom" else "auto"
    out = {}
    if label_path:
        try:
            _set_label(session, label_path)
        except SeqPatchError as exc:  # the image is fine: use it, and say why the label is not
            session.label_note = f"⚠ {first_line(exc)}"
            warn(first_line(exc))
            out["label_file"] = None
    if old is not None:
        old.close()
    session.predictor.set_volume(volume)
    session.z = best_slice(volume, session.label)
    session.auto = auto_window(volume, z=session.z)
    missing = [m for m in METHODS if m not in predictor.models]
    if missing:
        session.notes.append(weights_message(missing))
    ranges = wl_ranges(volume)
    out.update(render_view(session))
    out.update(
        {
            "state": session,
            "summary": summary_text(session),
            "slice": gr.update(
                minimum=0,
                maximum=max(volume.shape[0] - 1, 1),  # a Gradio slider needs min < max
                value=session.z,
                step=1,
                # the plane the stored slices are, from the direction: a sagittal MR is not axial
                label=f"{orientation(volume.direction).slices.name.capitalize()} slice (z)",
                interactive=volume.shape[0] > 1,
                visible=volume.shape[0] > 1,  # a single slice has nothing to scroll
            ),
            "window": session.window_name,
            "width": gr.update(value=out["width"], **ranges["width"]),
            "level": gr.update(value=out["level"], **ranges["level"]),
            "files": None,
        }
    )
    return out


def _set_label(session: Session, label_path: str) -> None:
    try:
        session.label = read_label(label_path, session.volume)
    except SeqPatchError as exc:
        raise InputError(f"label not used: {first_line(exc)}") from None
    session.label_path = str(label_path)


@user_errors
def load_label(session: Session | None, image_path: str | None, label_path: str | None) -> dict[str, Any]:
    """A label chosen after the image: checked against the image's geometry. No ``label_path``
    removes the label (an API call; on the page the box's × keeps it: :func:`box_cleared`).

    Does nothing while another image is loading (the image handler reads the label too).
    """
    if session is None or session.volume is None or (image_path and str(image_path) != session.image_path):
        return {}  # no image, or another one loading (its handler reads the label too)
    if (label_path or None) == session.label_path:
        return {}
    if not label_path:
        session.label = None
        session.label_path = None
    else:
        try:
            _set_label(session, label_path)
        except SeqPatchError as exc:
            # said in one line; the image, the label in use and the results stay as they were, and
            # the box shows that label again (or nothing), not the refused file
            raise UserNotice(first_line(exc), {"label_file": session.label_path}) from None
        if not session.results:
            session.z = best_slice(session.volume, session.label)
    out = render_view(session)
    out.update({"state": session, "summary": summary_text(session), "slice": session.z})
    return out


def box_cleared(session: Session | None, box: str) -> dict[str, Any]:
    """An upload box emptied (×) by hand: nothing is unloaded (the image and label stay until a
    replacement has been read, so a refused replacement loses nothing); the summary says so.

    box: "image" or "label"."""
    if session is None or session.volume is None:
        return {}
    what = "image" if box == "image" else "label"
    if what == "label" and session.label is None:
        return {}
    note = f"_The {what} box is empty: the {what} above stays in use until another {what} file has been read._"
    return {"summary": summary_text(session) + "\n\n" + note}


@user_errors
def change_slice(session: Session | None, z: float) -> dict[str, Any]:
    s = require(session)
    z = int(np.clip(round(float(z)), 0, s.shape[0] - 1))
    if z != s.z:  # a box's corners are on one slice: a pending first corner is dropped
        s.box_corner = None
    s.z = z
    out = render_view(s)
    out["state"] = s
    return out


@user_errors
def change_window(
    session: Session | None, name: str, width: float | None = None, level: float | None = None
) -> dict[str, Any]:
    """A window preset from the dropdown ("custom" takes the W/L sliders)."""
    s = require(session)
    if name not in WINDOWS:
        raise InputError(f"unknown window {name!r}; choose one of {', '.join(WINDOWS)}")
    if name == "custom":
        if width is None or level is None:
            w = s.display_window()
            width, level = w.width, w.level
        return change_wl(s, width, level)
    s.window_name = name
    if name == "auto":
        s.auto = auto_window(s.volume, z=s.z)  # chosen again, on the slice shown now
    out = render_view(s)
    out["state"] = s
    return out


@user_errors
def change_wl(session: Session | None, width: float, level: float) -> dict[str, Any]:
    """The W/L sliders: a custom window (used for display and by the networks from the next click)."""
    s = require(session)
    if width is None or level is None or not float(width) > 0:
        raise InputError("the window width must be a positive number")
    s.window_name = "custom"
    s.custom = Window.from_width_level(float(width), float(level), "custom")
    out = render_view(s)
    out.update({"state": s, "window": "custom"})
    return out


@user_errors
def change_ray(session: Session | None, ray: float) -> dict[str, Any]:
    """Show another ray large in the per-ray view (one small network run for its readouts)."""
    s = require(session)
    s.ray = int(np.clip(round(float(ray or 0)), 0, 63))
    res = (s.results.get(s.z) or {}).get("seqpatch")
    if res is None or res.patches.ndim != 4:
        return {"state": s}
    return {"state": s, "ray_detail": ray_detail(s, res)}


@user_errors
def change_display(session: Session | None, opacity: float, show_rays: bool) -> dict[str, Any]:
    s = require(session)
    s.opacity = float(np.clip(opacity, 0.0, 1.0))
    s.show_rays = bool(show_rays)
    out = render_view(s)
    out["state"] = s
    return out


#: Methods slow enough on a CPU to show the others' results first (SeqPatch: 240 patches per click).
SLOW = ("seqpatch",)
#: SeqPatch's first grid took longer than this (s) at the session's last click, or there was no click
#: yet: the U-net's answer is sent first, SeqPatch's when its first grid is done. Faster, both come in
#: one view. A view costs the page about 0.15 s on two cores before the next can follow (Gradio sends it
#: before it resumes the handler, and the browser draws it on the cores the network needs), more than a
#: U-net answer 0.3 s early is worth: on lung2 with the app's engine, both contours at p50 575-772 ms
#: with the U-net first (five runs), 487-658 ms in one view (eight runs), by ``tests/test_browser_page.py
#: -k both_contours`` when its clock still ran on through its own pixel count (469-569 ms without it).
UNET_FIRST_S = 0.5


@user_errors
def segment_steps(session: Session | None, z: float, y: float, x: float) -> Iterator[dict[str, Any]]:
    """Run every loaded method at the point (z, y, x) (voxels) and keep the result for slice z.

    Each method starts on its first grid of the scale rule
    (:meth:`~seqpatch_core.inference.predictor.Predictor.predict_steps`). When SeqPatch was slow at the
    session's last click (:data:`UNET_FIRST_S`) and a faster method is loaded, yields first as soon as
    the fast ones (the U-net) are done, with a "SeqPatch running…" note and their numbers on one line
    each; otherwise the first view has every method's first-grid answer. While the rule checks a coarser
    grid, yields the answers so far with a "checking" note (once per grid); last, every result and the
    full table. Yields once when no grid is left to check. The click is in the session (and in the undo
    history) from the first yield. A new click on a slice replaces that slice's result (undo brings the
    old one back).
    """
    s = require(session)
    zi, yf, xf = s.predictor.check_point((z, y, x))
    s.box_corner = None  # a click (or "Segment here") ends a box being drawn
    methods = [m for m in METHODS if m in s.predictor.models]
    if not methods:
        raise InputError("no model is loaded: " + WEIGHTS_HELP.format(m="seqpatch") + " (and the same for unet)")
    opts = {"threshold": s.threshold, "window": s.display_window(), "coarsen": s.second_pass}
    steps: dict[str, Iterator[tuple[Result, bool]]] = {}
    new: dict[str, Result] = {}
    final: dict[str, bool] = {}
    spent = dict.fromkeys(methods, 0.0)  # each method's own seconds (SeqPatch's: the next click's estimate)

    def advance(ms: list[str]) -> None:
        with s.using():  # no yield inside: a run that is never resumed cannot leave the session busy
            for m in ms:
                t0 = time.perf_counter()
                if m not in steps:
                    steps[m] = s.predictor.predict_steps((zi, yf, xf), method=m, **opts)
                new[m], final[m] = next(steps[m])
                s.settle(new[m], s.threshold)
                spent[m] += time.perf_counter() - t0

    fast = [m for m in methods if m not in SLOW]
    slow = [m for m in methods if m in SLOW]
    last_first = s.seqpatch_first_seconds
    unet_first = bool(fast and slow) and (last_first is None or last_first > UNET_FIRST_S)
    advance(fast if unet_first else methods)
    click = Click(zi, yf, xf, methods, s.results.get(zi), done=False)
    s.history.append(click)
    s.z = zi
    partial = {m: new[m] for m in METHODS if m in new}
    s.results[zi] = partial
    drawn: dict[str, Result] = {}  # the answers whose likelihood maps are on the page
    if unet_first:
        out = render_view(s, skip=[*(f"lik_{m}" for m in slow), "rays", "coronal"])
        out.update({"state": s, "slice": zi, "files": None, "metrics": partial_metrics(s, zi, new)})
        out["status"] = running_note(s) + "\n\n" + out["status"]
        out["progress"] = running_note(s)
        for m in slow:
            out[f"lik_{m}"] = render.placeholder(f"{NAMES[m]} likelihood\n(running…)")
        out["rays"] = render.placeholder("Per-ray view\n(SeqPatch running…)")
        out["ray_detail"] = render.placeholder("One ray, large\n(SeqPatch running…)")
        drawn.update(new)
        yield out
        advance(slow)
    for m in slow:
        s.seqpatch_first_seconds = spent[m]
    while s.results.get(zi) is partial:  # (not undone, reset or replaced by a newer click meanwhile)
        climbing = [m for m in methods if not final[m]]
        partial = {m: new[m] for m in METHODS if m in new}
        s.results[zi] = partial
        if not climbing:
            break
        # The scale rule checks a coarser grid: the answers so far are shown now, and each stands
        # unless that grid finds its object wider.
        note = "\n\n".join(checking_note(new[m]) for m in climbing)
        # (the planes and the per-ray pictures wait for the last grid; maps drawn already stay)
        out = render_view(s, skip=[*(f"lik_{m}" for m in new if drawn.get(m) is new[m]), "rays", "coronal"])
        out.update({"state": s, "files": None, "progress": note})
        out["status"] = note + "\n\n" + out["status"]
        if not drawn:
            out["slice"] = zi
        drawn.update(new)
        yield out
        advance(climbing)
    for m in slow:
        s.seqpatch_seconds = spent[m]
    click.done = True
    # LiteMedSAM follows in its own event (segment_box), once both contours are on the page
    out = {"state": s, "files": None, "progress": BOX_RUNNING if s.boxes is not None else ""}
    if s.results.get(zi) is not partial:  # undone, reset or replaced while the climb ran: drop it
        out.update(render_view(s))
        yield out
        return
    moved = any(r.threshold != s.threshold for r in new.values())
    for r in new.values():  # the threshold may have moved while SeqPatch ran
        s.settle(r, s.threshold)
    # Redraw what changed: the maps drawn from answers that stood stay as drawn (unless the threshold
    # moved), and the per-ray pictures, below the fold, follow in their own event (draw_rays).
    unchanged = [f"lik_{m}" for m in new if drawn.get(m) is new[m] and not moved]
    out.update(render_view(s, skip=[*unchanged, "rays"]))
    if s.z == zi:  # (the user may have moved to another slice meanwhile: stay there)
        out["slice"] = zi
    yield out


#: The line under the slice while LiteMedSAM runs after a click.
BOX_RUNNING = "**LiteMedSAM running…** (its box: the label's when loaded, else SeqPatch's mask plus a margin)"
#: The line under the slice while LiteMedSAM runs on a box the user drew.
USER_BOX_RUNNING = f"**LiteMedSAM running…** (on {USER_BOX})"
#: What a redraw of the slice alone leaves out: drawn from results that did not change.
NOT_THE_SLICE = (*(f"lik_{m}" for m in METHODS), "lik_litemedsam", "rays", "coronal")


def click_box(session: Session, z: int, res: dict[str, Result]) -> tuple[Box, str]:
    """The box LiteMedSAM gets for the click on slice ``z`` whose results are ``res``, and its source:
    the label's tight box on that slice when a label is loaded there (an oracle prompt, "label"), else
    the box of SeqPatch's mask (the U-net's without SeqPatch) plus
    :data:`~seqpatch_core.evaluation.boxes.SEQPATCH_MARGIN_PX`: one click -> a box -> the foundation
    model. Raises InputError when there is no mask to take a box from."""
    if session.label is not None:
        box = box_around(session.label[z], z)
        if box is not None:
            return box, "label"
    for m in METHODS:
        if m in res:
            box = box_around(res[m].mask, z, SEQPATCH_MARGIN_PX)
            if box is not None:
                return box, m
            raise InputError(f"LiteMedSAM has no box: {NAMES[m]} found no object at the click")
    raise InputError("LiteMedSAM has no box: no method answered the click")


@user_errors
def segment_box(session: Session | None, box: list[float] | None = None, source: str = "given") -> dict[str, Any]:
    """LiteMedSAM on one box, drawn with its box, contour, table row and likelihood map.

    box: ``(z, y0, x0, y1, x1)`` voxel indices, corners inclusive (an API call, or a box drawn on the
    slice: :func:`box_corner_steps`; a box with no area or outside the slice is a one-line notice);
    source: where it came from, "given" (numbers) or "user" (drawn), named on the slice and in the
    table. Only the decoder runs when the slice's encoder embedding is cached. None: the latest
    click's box (:func:`click_box`), the
    follow-up of a click once its view is complete; it answers nothing while a newer click still runs
    (that click's own follow-up answers), and its answer is dropped when a newer click, an undo or a
    reset replaced the slice's results meanwhile: the newest click wins.
    """
    if box is None and (session is None or session.boxes is None or session.volume is None or not session.clicks):
        return {"progress": ""} if session is not None and session.boxes is not None else {}
    s = require(session)
    if s.boxes is None:
        raise InputError(BOX_WEIGHTS_MISSING)
    with s.using():  # windowed once per image, as LiteMedSAM's training data were
        if s.boxes.volume is not s.volume:
            s.boxes.set_volume(s.volume)
    if box is not None:
        checked = s.boxes.check_box(box)
        z = checked.z
    else:
        z = s.clicks[-1].z
        if not s.clicks[-1].done:
            return {}  # the latest click still runs: its own follow-up answers it
        if s.box_answer(z) is not None:  # answered already (by an older click's follow-up, run late)
            return {"progress": ""}
        try:
            checked, source = click_box(s, z, s.results[z])
        except InputError as exc:  # said once; the page stays as it is
            warn(first_line(exc))
            return {"progress": ""}
    follows = s.results.get(z)
    with s.using():
        result = s.boxes.predict(checked.as_list())
    if s.results.get(z) is not follows:  # replaced while LiteMedSAM ran: the newer answer wins
        return {"progress": ""}
    if box is None and s.box_answer(z) is not None:  # a box drawn meanwhile: the user's wins
        return {"progress": ""}
    answer = BoxAnswer(result, source, follows)
    s.box_answers.append(answer)
    if box is not None:  # the user's own box: undone on its own (a click's box goes with its click)
        s.history.append(BoxStep(answer))
    out: dict[str, Any] = {"state": s, "progress": ""}
    if s.z == z:  # (the user may have moved to another slice meanwhile: it shows when they come back)
        view = render_view(s, skip=[*(f"lik_{m}" for m in METHODS), "rays", "coronal"])
        out.update({k: view[k] for k in BOX_VIEW if k in view})
    return out


#: What LiteMedSAM's answer redraws.
BOX_VIEW = ("overlay", "lik_litemedsam", "metrics", "status")


@user_errors
def set_click_mode(session: Session | None, mode: str) -> dict[str, Any]:
    """What a click on the slice does from now on (one of :data:`CLICK_MODES`; the page passes the
    choice to each click, so the session keeps only a box's pending corner): a change drops that
    corner and redraws the slice without it. The results shown stay."""
    if mode not in CLICK_MODES:
        raise InputError(f"unknown click mode {mode!r}; choose one of {', '.join(CLICK_MODES)}")
    if session is None or session.volume is None or session.box_corner is None:
        return {}
    s = require(session)
    s.box_corner = None
    return {"state": s, "overlay": render_view(s, skip=NOT_THE_SLICE)["overlay"]}


@user_errors
def box_corner_steps(session: Session | None, z: float, y: float, x: float) -> Iterator[dict[str, Any]]:
    """A click on slice ``z`` in box mode at voxel (y, x) (floats in the file's order, as
    :func:`app.view.click_to_voxel` reads a click on the picture shown; rounded to the nearest voxel).

    The first click keeps one corner (the session's ``box_corner``, drawn as a cross with a hint) and
    yields that slice once. The second, on the same slice, is the opposite corner: LiteMedSAM answers
    the box ``(z, y0, x0, y1, x1)`` (corners inclusive, sorted in voxel order whatever the display
    flips) through :func:`segment_box`, named as the user's; it yields the "running" line, then the
    answer. A box with no area (both corners in one row or column) is a one-line notice that changes
    nothing: the first corner stays for another try. SeqPatch's and the U-net's results stay shown.
    """
    s = require(session)
    if s.boxes is None:
        raise InputError(BOX_WEIGHTS_MISSING)
    zi, yf, xf = s.predictor.check_point((z, y, x))
    corner = (zi, int(round(yf)), int(round(xf)))
    first = s.box_corner
    if first is None or first[0] != zi:
        s.box_corner = corner
        s.z = zi
        yield {"state": s, "slice": zi, "overlay": render_view(s, skip=NOT_THE_SLICE)["overlay"]}
        return
    box = [zi, first[1], first[2], corner[1], corner[2]]
    check_box(box, s.shape)  # a box with no area raises here, before anything changes
    s.box_corner = None
    yield {"state": s, "progress": USER_BOX_RUNNING}
    out = segment_box(s, box, source="user")
    if "overlay" not in out and s.z == zi:  # dropped (a newer click meanwhile): the corner goes anyway
        out["overlay"] = render_view(s, skip=NOT_THE_SLICE)["overlay"]
    yield {"progress": "", **out}


def box_corner(session: Session | None, z: float, y: float, x: float) -> dict[str, Any]:
    """:func:`box_corner_steps` run to the end: its last view, with every output it set."""
    out: dict[str, Any] = {}
    for step in box_corner_steps(session, z, y, x):
        out.update(step)
    return out


@user_errors
def draw_rays(session: Session | None) -> dict[str, Any]:
    """The per-ray pictures of the slice shown (:func:`app.view.ray_views`): drawn after a click's
    view, so both contours reach the page first."""
    if session is None or session.volume is None:
        return {}
    return ray_views(session)


def segment(session: Session | None, z: float, y: float, x: float) -> dict[str, Any]:
    """:func:`segment_steps` run to the end, with the per-ray pictures the page draws after it: the
    whole final view."""
    out: dict[str, Any] = {}
    for out in segment_steps(session, z, y, x):  # noqa: B007 - the last one is the answer
        pass
    return {**out, **draw_rays(session), **segment_box(session)}


@user_errors
def set_threshold(session: Session | None, threshold: float) -> dict[str, Any]:
    """Re-threshold every kept result from its cached likelihoods (no network runs)."""
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise InputError(f"the threshold must be between 0 and 1, got {t:g}")
    if session is None or session.volume is None:
        return {}
    s = session
    s.threshold = t
    for res in s.results.values():
        for r in res.values():
            s.settle(r, t)
    out = render_view(s)
    out["state"] = s
    return out


@user_errors
def set_second_pass(session: Session | None, on: bool) -> dict[str, Any]:
    """Turn this session's scale rule (large objects climb the pyramid of grids; each network's
    calibrated rule) on or off.

    It applies to the next clicks; the results shown stay as they were computed (the status line says
    which grid each used), so a click before and after the change compares the two.
    """
    if session is None:
        return {}
    session.second_pass = bool(on)
    if session.volume is None:
        return {"state": session}
    out = render_view(session)
    out["state"] = session
    return out


@user_errors
def undo(session: Session | None) -> dict[str, Any]:
    """Take back the last step: a click (its slice gets back what it had before), a box given to
    LiteMedSAM (its answer goes; what it covered shows again) or a whole object in 3D."""
    s = require(session)
    if not s.history:
        raise InputError("nothing to undo")
    click = s.history.pop()
    s.box_corner = None
    if isinstance(click, BoxStep):
        s.box_answers = [a for a in s.box_answers if a is not click.answer]  # (by identity: arrays inside)
        s.z = click.answer.result.box.z
        out = render_view(s)
        out.update({"state": s, "slice": s.z, "files": None})
        return out
    if isinstance(click, ObjectStep):  # a whole object in 3D: its method gets back what it had
        if click.replaced is not None:
            s.objects3d[click.method] = click.replaced
        else:
            s.objects3d.pop(click.method, None)
        out = render_view(s)
        out.update({"state": s, "files": None})
        return out
    if click.replaced:
        for r in click.replaced.values():
            s.settle(r, s.threshold)
        s.results[click.z] = click.replaced
    else:
        s.results.pop(click.z, None)
    s.z = click.z
    out = render_view(s)
    out.update({"state": s, "slice": click.z, "files": None})
    return out


@user_errors
def reset(session: Session | None) -> dict[str, Any]:
    """Forget every click and result, 3D objects included (the image and label stay)."""
    s = require(session)
    s.results.clear()
    s.history.clear()
    s.objects3d.clear()
    s.box_answers.clear()
    s.box_corner = None
    s.robustness = None
    out = render_view(s)
    out.update({"state": s, "files": None})
    return out
