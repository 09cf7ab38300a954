"""The Gradio page: components and event wiring only; the work is in :mod:`app.handlers`."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from app import exports, handlers, memory, outputs
from app.binding import bind, bind_steps, clearing
from app.handlers import CLICK_MODE, CLICK_MODES, WINDOWS
from app.notices import UserNotice
from app.panels import EXPLAIN, image, teaching_panels, wire_teaching
from app.session import BOX_WEIGHTS_MISSING, SESSION_TTL_S, close_session, weights_message
from app.view import click_to_voxel
from seqpatch_core.base.paths import EXAMPLES_DIR
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method.models.litemedsam import LiteMedSAM

log = logging.getLogger(__name__)

# Shown first when present (the rest follow alphabetically).
_EXAMPLE_ORDER = ("lung2_ct_crop", "brain1_mr_crop", "synthetic_ct", "synthetic_ct_large", "synthetic_mr")

CSS = """
#overlay img { cursor: crosshair; }
#legend-note { font-size: 0.9em; opacity: 0.85; }
#metrics table { font-size: 0.9em; }
#metrics th, #metrics td { padding: 3px 6px; }
#header h2 { margin-bottom: 0.2em; }
"""
#: Run once on page load, two fixes of Gradio 6.31's page:
#: * A number typed into a slider's box applies on Enter as it does when the box loses focus: the
#:   slider sends "release" (which the threshold, W, L and opacity listen to) on blur only. A blur event
#:   sent to the box itself runs that path and leaves the focus where it is.
#: * Each upload logged "Method not implemented." twice: the file box's upload progress reads a
#:   stream through Gradio's fetch-based stand-in for EventSource, whose close() is a stub that warns,
#:   and closes it twice (when the upload is done, and when the progress bar goes). Closing is all
#:   that stub can mean there (the fetch has ended), so exactly that warning is dropped; every other
#:   console message passes.
PAGE_JS = """() => {
  document.addEventListener("keydown", (e) => {
    const box = e.target;
    if (e.key === "Enter" && box instanceof HTMLInputElement && box.type === "number") {
      box.dispatchEvent(new FocusEvent("blur"));
    }
  }, true);
  const warn = console.warn.bind(console);
  console.warn = (...args) => {
    if (args.length === 1 && args[0] === "Method not implemented.") return;
    warn(...args);
  };
}"""
#: Keyword arguments for ``demo.launch`` (Gradio 6 takes css, js and theme there, not in ``gr.Blocks``).
LAUNCH_KWARGS: dict[str, Any] = {
    "css": CSS,
    "js": PAGE_JS,
    "max_file_size": "1gb",
    "state_session_capacity": memory.GRADIO_SESSIONS,  # Gradio's per-session store, bounded
}

HEADER = """## SeqPatch: one-click segmentation of CT and MR slices
Load an image or pick an example, then **click on the object**: the **sequential patch network** (16 rays
from the click, K patches each, read inside → outside by a bidirectional gated ConvRNN) and a **U-net**
baseline segment it side by side.
"""


def find_examples(folder: str | Path = EXAMPLES_DIR) -> list[list[str]]:
    """``[image, label]`` pairs from ``folder/*_label.nii.gz`` with an image; missing ones are skipped."""
    folder = Path(folder)
    pairs = []
    for lab in sorted(folder.glob("*_label.nii.gz")):
        img = lab.with_name(lab.name[: -len("_label.nii.gz")] + ".nii.gz")
        if img.is_file():
            pairs.append([str(img), str(lab)])

    def rank(pair: list[str]) -> tuple[int, str]:
        stem = Path(pair[0]).name[: -len(".nii.gz")]
        return (_EXAMPLE_ORDER.index(stem) if stem in _EXAMPLE_ORDER else len(_EXAMPLE_ORDER), stem)

    return sorted(pairs, key=rank)


def _example_label(path: str) -> str:
    stem = Path(path).name.split(".")[0]
    words = stem.replace("_", " ").replace(" ct", " CT").replace(" mr", " MR")
    return words


def build_demo(
    predictor: Predictor, examples: Sequence[Sequence[str]] | None = None, box_model: LiteMedSAM | None = None
) -> gr.Blocks:
    """The demo page for ``predictor``'s models and LiteMedSAM ``box_model`` (each loaded once, shared
    by every session; without ``box_model`` the page runs without the third method and says so).

    examples: ``[image, label]`` path pairs; default: those found under ``examples/``.
    """
    examples = find_examples() if examples is None else [list(e) for e in examples]
    missing = [m for m in ("seqpatch", "unet") if m not in predictor.models]
    warnings = ([weights_message(missing)] if missing else []) + ([BOX_WEIGHTS_MISSING] if box_model is None else [])

    # delete_cache: uploads and exports older than 2 h are removed from Gradio's cache every hour.
    with gr.Blocks(title="SeqPatch: one-click segmentation", delete_cache=(3600, 7200)) as demo:
        state = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=close_session)
        gr.Markdown(HEADER, elem_id="header")
        if warnings:
            gr.Markdown("\n\n".join(f"⚠ **{w}**" for w in warnings), elem_id="weights-warning")
        # Three columns, so that on a 1366×768 laptop the slice, both contours, the numbers and both
        # likelihood maps are seen together without scrolling.
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=260):
                image_file = gr.File(
                    label="Image (NIfTI, MHA, NRRD, DICOM .zip, PNG)",
                    type="filepath",
                    height=110,
                    elem_id="image-file",
                )
                label_file = gr.File(
                    label="Label (optional, same geometry)",
                    type="filepath",
                    height=110,
                    elem_id="label-file",
                )
                picks = None
                if examples:
                    picks = gr.Examples(
                        examples=examples,
                        inputs=[image_file, label_file],
                        example_labels=[_example_label(e[0]) for e in examples],
                        cache_examples=False,
                        label="Examples (image + label)",
                        elem_id="examples",
                    )
                summary = gr.Markdown("_No image loaded._", elem_id="summary")
                window = gr.Dropdown(
                    list(WINDOWS),
                    value="auto",
                    label="Window",
                    info="auto: chosen once per image (the status line says which); the networks see it too",
                    elem_id="window",
                )
                with gr.Row():
                    width = gr.Slider(1, 4000, value=400, step=1, label="Window width (W)", elem_id="width")
                    level = gr.Slider(
                        -1500, 3000, value=40, step=1, label="Window level (L)", elem_id="level"
                    )
                threshold = gr.Slider(
                    0.05,
                    0.95,
                    value=0.5,
                    step=0.05,
                    label="Threshold",
                    info="re-thresholds the cached likelihoods of every segmented slice (no network run)",
                    elem_id="threshold",
                )
                opacity = gr.Slider(0.0, 1.0, value=0.3, step=0.05, label="Overlay opacity (fill)")
                show_rays = gr.Checkbox(
                    False, label="Show rays, patch centres and the U-net field of view", elem_id="show-rays"
                )
                second_pass = gr.Checkbox(
                    True,
                    label="Coarser grids for large objects (the scale rule: 1, 2, 4, 8 mm)",
                    info="each network's calibrated rule; applies to the next clicks (the status says which grids)",
                    elem_id="second-pass",
                )
                with gr.Accordion("Segment at a voxel (z, y, x)", open=False):
                    with gr.Row():
                        pz = gr.Number(0, label="z", precision=0, minimum=0)
                        py = gr.Number(0, label="y (row)", minimum=0)
                        px = gr.Number(0, label="x (column)", minimum=0)
                    point_btn = gr.Button("Segment here", size="sm")
            with gr.Column(scale=5, min_width=360):
                # no Gradio label over the slice: it would cover the legend in the top-left corner
                overlay = image("overlay", "overlay", height=470)
                # what a click on the slice does: segment there, or a corner of a box for LiteMedSAM
                click_mode = gr.Radio(
                    list(CLICK_MODES), value=CLICK_MODE, show_label=False, container=False, elem_id="click-mode"
                )
                # Right under the slice, where the eye is after a click: what is running, and the
                # buttons (Export included) above the fold of a 1366 × 768 laptop.
                with gr.Row(equal_height=True):
                    progress = gr.Markdown("", elem_id="progress", min_height=0)
                    undo_btn = gr.Button("Undo", size="sm", elem_id="undo-btn", min_width=60, scale=0)
                    reset_btn = gr.Button("Reset", size="sm", elem_id="reset-btn", min_width=60, scale=0)
                    export_btn = gr.Button(
                        "Export", size="sm", variant="primary", elem_id="export-btn", min_width=70, scale=0
                    )
                slice_slider = gr.Slider(
                    0, 1, value=0, step=1, label="Axial slice (z)", interactive=False, elem_id="slice"
                )
                status = gr.Markdown("", elem_id="status")
                files = gr.File(
                    label="Exports: 3D masks (.nii.gz), overlay (.png), clicks (.json)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="exports",
                )
            with gr.Column(scale=5, min_width=360):
                metrics = gr.Markdown("", elem_id="metrics")
                with gr.Row():
                    lik_seqpatch = image("lik_seqpatch", "lik-seqpatch", "SeqPatch likelihood", height=260)
                    lik_unet = image("lik_unet", "lik-unet", "U-net likelihood", height=260)
                # a row of its own, under the two: a third beside them would shrink the colour bars'
                # numbers under 11 px on a laptop; below, it moves nothing above it
                lik_litemedsam = image("lik_litemedsam", "lik-litemedsam", "LiteMedSAM likelihood", height=260)
                with gr.Row():
                    # the two planes across the slices, named in their captions (for an axial
                    # acquisition coronal and sagittal); the yellow line is the slice shown
                    coronal = image("coronal", "coronal", "Plane through the click (line: this slice)")
                    sagittal = image("sagittal", "sagittal", "Plane through the click (line: this slice)")
        with gr.Accordion("Per-ray view (SeqPatch): one ray large, and all 16 rays × K patches", open=True):
            with gr.Row():
                with gr.Column(scale=3):
                    ray = gr.Slider(
                        0,
                        15,
                        value=0,
                        step=1,
                        label="Ray shown large (its colour matches the rays on the slice)",
                        elem_id="ray",
                    )
                    ray_detail = image("ray_detail", "ray-detail")
                with gr.Column(scale=2, min_width=260):
                    gr.Markdown(EXPLAIN, elem_id="explain")
            rays_img = image("rays", "rays")
        teach = teaching_panels(predictor, box_model)

        comps = outputs.components(
            {
                "state": state,
                "summary": summary,
                "slice": slice_slider,
                "window": window,
                "width": width,
                "level": level,
                "overlay": overlay,
                "lik_seqpatch": lik_seqpatch,
                "lik_unet": lik_unet,
                "lik_litemedsam": lik_litemedsam,
                "rays": rays_img,
                "ray_detail": ray_detail,
                "metrics": metrics,
                "status": status,
                "progress": progress,
                "files": files,
                "coronal": coronal,
                "sagittal": sagittal,
                "image_file": image_file,
                "label_file": label_file,
                **teach,
            }
        )
        main = outputs.MAIN
        main_outputs = [comps[n] for n in main]
        quiet = {"show_progress": "hidden", "api_visibility": "undocumented"}
        # The teaching panels show the click they ran on: emptied on a new click, image, undo or reset.
        with_stale = main + outputs.TEACHING
        stale_outputs = [comps[n] for n in with_stale]
        # Loading may also empty a file box whose file was refused (so it does not look loaded).
        load_names = main + outputs.UPLOADS + outputs.TEACHING
        load_outputs = [comps[n] for n in load_names]

        def load(session, image_path, label_path, window_name, thr, alpha, rays_on, two_pass):
            """Load an image (and optional label) into a fresh session."""
            return handlers.load(
                predictor, session, image_path, label_path, window_name, thr, alpha, rays_on, two_pass, box_model
            )

        def on_select(session, z, mode, evt: gr.SelectData):
            # The only place where Gradio's [x, y] picture position becomes a (y, x) slice point
            # (the picture is the slice turned the right way up; the point is in voxel order): a
            # click, or in box mode a box's corner, both mapped the same way.
            if session is None or session.volume is None:
                raise UserNotice("Load an image first, then click on the object.")
            y, x = click_to_voxel(session, evt.index)
            if mode == handlers.BOX_MODE:
                yield from handlers.box_corner_steps(session, int(z), y, x)
            else:
                yield from segment(session, int(z), y, x)

        # Uploads and example picks load; "change" would also fire when a handler puts a box back
        # (after a refused file), and an emptied box (×) unloads nothing: what is loaded stays until
        # a replacement has been read.
        load_inputs = [state, image_file, label_file, window, threshold, opacity, show_rays, second_pass]
        image_file.upload(bind(clearing(load), load_names), load_inputs, load_outputs, api_name="load")
        if picks is not None:
            picks.load_input_event.then(
                bind(clearing(load), load_names), load_inputs, load_outputs, api_visibility="private"
            )
        label_file.upload(
            bind(handlers.load_label, main + ("label_file",)),
            [state, image_file, label_file],
            main_outputs + [label_file],
            api_name="load_label",
        )
        image_file.clear(bind(clear_image), [state], main_outputs, **quiet)
        label_file.clear(bind(clear_label), [state], main_outputs, **quiet)
        slice_slider.input(
            bind(handlers.change_slice), [state, slice_slider], main_outputs, trigger_mode="always_last", **quiet
        )
        window.input(bind(handlers.change_window), [state, window, width, level], main_outputs, **quiet)
        width.release(bind(handlers.change_wl), [state, width, level], main_outputs, **quiet)
        level.release(bind(handlers.change_wl), [state, width, level], main_outputs, **quiet)
        opacity.release(bind(handlers.change_display), [state, opacity, show_rays], main_outputs, **quiet)
        show_rays.input(bind(handlers.change_display), [state, opacity, show_rays], main_outputs, **quiet)
        second_pass.input(bind(handlers.set_second_pass), [state, second_pass], main_outputs, **quiet)
        click_mode.input(bind(handlers.set_click_mode), [state, click_mode], main_outputs, **quiet)
        ray.input(bind(handlers.change_ray), [state, ray], main_outputs, trigger_mode="always_last", **quiet)
        threshold.release(
            bind(handlers.set_threshold),
            [state, threshold],
            main_outputs,
            api_name="threshold",
            show_progress="hidden",
        )
        # "multiple": a click made while the previous one still runs is sent at once and runs beside
        # it; the latest click's result is the one kept (handlers.segment_steps drops a result that a
        # newer click replaced). Gradio's default, "once", drops that click, and "always_last" replays
        # the first click's position. The progress shows in the line under the slice, not over it.
        # The per-ray pictures (below the fold) are drawn after the click's view, in an event of
        # their own, so both contours reach the page first.
        rays_names = ("rays", "ray_detail")
        draw_rays = {"fn": bind(handlers.draw_rays, rays_names), "inputs": [state], **quiet}
        # LiteMedSAM follows a click in an event of its own, beside the per-ray pictures, once both
        # contours are on the page; its answer is dropped when a newer click replaced the slice's
        # (handlers.segment_box), so it never holds up or overrides a newer click.
        box_names = ("state", *handlers.BOX_VIEW, "progress")
        follow_box = {
            "fn": bind(follow_click, box_names),
            "inputs": [state],
            "outputs": [comps[n] for n in box_names],
            "trigger_mode": "multiple",
            **quiet,
        }
        clicked = overlay.select(
            bind_steps(on_select, with_stale),
            [state, slice_slider, click_mode],
            stale_outputs,
            api_visibility="private",
            trigger_mode="multiple",
            show_progress_on=[progress],
        )
        clicked.then(outputs=[comps[n] for n in rays_names], **draw_rays)
        clicked.then(**follow_box)
        # A generator too: gradio_client's predict(..., api_name="/segment") returns its last view.
        pointed = point_btn.click(
            bind_steps(segment, with_stale),
            [state, pz, py, px],
            stale_outputs,
            api_name="segment",
            trigger_mode="multiple",
            show_progress_on=[progress],
        )
        pointed.then(outputs=[comps[n] for n in rays_names], **draw_rays)
        pointed.then(**follow_box)
        undo_btn.click(
            bind(clearing(handlers.undo), with_stale), [state], stale_outputs, api_name="undo"
        )
        reset_btn.click(
            bind(clearing(handlers.reset), with_stale), [state], stale_outputs, api_name="reset"
        )
        export_btn.click(bind(exports.export), [state], main_outputs, api_name="export")
        wire_teaching({**teach, **comps})

    demo.queue(default_concurrency_limit=2)
    return demo


def follow_click(session):
    """LiteMedSAM on the latest click's box: :func:`handlers.segment_box`."""
    return handlers.segment_box(session)


def clear_image(session):
    """The image box emptied by hand: :func:`handlers.box_cleared`."""
    return handlers.box_cleared(session, "image")


def clear_label(session):
    """The label box emptied by hand: :func:`handlers.box_cleared`."""
    return handlers.box_cleared(session, "label")


def segment(session, z, y, x) -> Iterator[dict[str, Any]]:
    """:func:`handlers.segment_steps` (U-net first, then SeqPatch) whose first view also empties the
    teaching panels, now stale: the "Segment here" button, and a click on the slice."""
    for i, out in enumerate(handlers.segment_steps(session, z, y, x)):
        if i == 0 and session.teaching_shown:  # (blank tabs are not sent blanks again)
            session.teaching_shown = False
            out = {**outputs.empty(*outputs.TEACHING), **out}
        yield out
