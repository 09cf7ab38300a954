"""The Gradio page: components and event wiring only; the work is in :mod:`app.handlers`."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from app import handlers, render
from app.handlers import OUTPUTS, WINDOWS
from seqpatch_core.predictor import Predictor

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = PROJECT_ROOT / "examples"
# Shown first when present (the rest follow alphabetically).
_EXAMPLE_ORDER = ("lung2_ct_crop", "brain1_mr_crop", "synthetic_ct", "synthetic_mr")

CSS = """
#overlay img { cursor: crosshair; }
#legend-note { font-size: 0.9em; opacity: 0.85; }
"""
#: Keyword arguments for ``demo.launch`` (Gradio 6 takes css and theme there, not in ``gr.Blocks``).
LAUNCH_KWARGS: dict[str, Any] = {"css": CSS, "max_file_size": "1gb"}

HEADER = """## SeqPatch: one-click segmentation of CT and MR slices
Load an image (or pick an example), then **click on the object**. Two networks segment it on that
slice: the **sequential patch network** (16 rays from the click, K patches along each ray read
inside → outside by a bidirectional gated ConvRNN, patch likelihoods fused back into the slice) and a
**U-net** baseline on a square field of view around the click.
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


def _bind(fn: Callable[..., dict[str, Any]]) -> Callable[..., tuple]:
    """Adapts a handler returning ``{output name: value}`` to Gradio's tuple of :data:`OUTPUTS`."""

    @functools.wraps(fn)  # keeps the signature: Gradio injects gr.SelectData by its annotation
    def run(*args):
        out = fn(*args)
        return tuple(out[name] if name in out else gr.skip() for name in OUTPUTS)

    return run


def build_demo(predictor: Predictor, examples: Sequence[Sequence[str]] | None = None) -> gr.Blocks:
    """The demo page for ``predictor``'s models (loaded once, shared by every session).

    examples: ``[image, label]`` path pairs; default: those found under ``examples/``.
    """
    examples = find_examples() if examples is None else [list(e) for e in examples]
    missing = [m for m in ("seqpatch", "unet") if m not in predictor.models]

    # delete_cache: uploads and exports older than 2 h are removed from Gradio's cache every hour.
    with gr.Blocks(title="SeqPatch: one-click segmentation", delete_cache=(3600, 7200)) as demo:
        state = gr.State(None, time_to_live=handlers.SESSION_TTL_S, delete_callback=handlers.close_session)
        gr.Markdown(HEADER)
        if missing:
            gr.Markdown(f"⚠ **{handlers.weights_message(missing)}**", elem_id="weights-warning")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                image_file = gr.File(
                    label="Image: NIfTI, MHA, NRRD, DICOM (.zip of a series), PNG…",
                    type="filepath",
                    elem_id="image-file",
                )
                label_file = gr.File(
                    label="Label (optional, same geometry as the image)",
                    type="filepath",
                    elem_id="label-file",
                )
                if examples:
                    gr.Examples(
                        examples=examples,
                        inputs=[image_file, label_file],
                        example_labels=[_example_label(e[0]) for e in examples],
                        cache_examples=False,
                        label="Examples (image + label)",
                        elem_id="examples",
                    )
                summary = gr.Markdown("_No image loaded._", elem_id="summary")
                slice_slider = gr.Slider(
                    0, 1, value=0, step=1, label="Axial slice (z)", interactive=False, elem_id="slice"
                )
                window = gr.Dropdown(
                    list(WINDOWS),
                    value="auto",
                    label="Window",
                    info="auto picks lung/soft/bone (CT) or percentiles (MR) at the click",
                    elem_id="window",
                )
                with gr.Row():
                    width = gr.Slider(1, 4000, value=400, step=1, label="Window width (W)", elem_id="width")
                    level = gr.Slider(
                        -1500, 3000, value=40, step=1, label="Window level (L)", elem_id="level"
                    )
                opacity = gr.Slider(0.0, 1.0, value=0.3, step=0.05, label="Overlay opacity (fill)")
                threshold = gr.Slider(
                    0.05,
                    0.95,
                    value=0.5,
                    step=0.05,
                    label="Threshold",
                    info="re-thresholds the cached likelihoods of every segmented slice (no network run)",
                    elem_id="threshold",
                )
                show_rays = gr.Checkbox(
                    False, label="Show rays, patch centres and the U-net field of view", elem_id="show-rays"
                )
                with gr.Row():
                    undo_btn = gr.Button("Undo", size="sm")
                    reset_btn = gr.Button("Reset", size="sm")
                    export_btn = gr.Button("Export", size="sm", variant="primary")
                files = gr.File(
                    label="Exports: 3D masks (.nii.gz), overlay (.png), clicks (.json)",
                    file_count="multiple",
                    interactive=False,
                    height=150,
                    elem_id="exports",
                )
                with gr.Accordion("Segment at a voxel (z, y, x)", open=False):
                    with gr.Row():
                        pz = gr.Number(0, label="z", precision=0, minimum=0)
                        py = gr.Number(0, label="y (row)", minimum=0)
                        px = gr.Number(0, label="x (column)", minimum=0)
                    point_btn = gr.Button("Segment here", size="sm")
            with gr.Column(scale=2):
                overlay = gr.Image(
                    render.placeholder("Load an image, then click on the object", (360, 480)),
                    label="Slice: click on the object",
                    height=600,
                    type="numpy",
                    format="png",
                    interactive=False,
                    buttons=["download", "fullscreen"],
                    elem_id="overlay",
                )
                status = gr.Markdown("", elem_id="status")
                metrics = gr.Markdown("", elem_id="metrics")
                with gr.Row():
                    lik_seqpatch = gr.Image(
                        render.placeholder("SeqPatch likelihood"),
                        label="SeqPatch likelihood",
                        type="numpy",
                        format="png",
                        interactive=False,
                        buttons=["download", "fullscreen"],
                        elem_id="lik-seqpatch",
                    )
                    lik_unet = gr.Image(
                        render.placeholder("U-net likelihood"),
                        label="U-net likelihood",
                        type="numpy",
                        format="png",
                        interactive=False,
                        buttons=["download", "fullscreen"],
                        elem_id="lik-unet",
                    )
        with gr.Accordion("Per-ray view (SeqPatch): 16 rays × K patches, input beside likelihood", open=True):
            rays_img = gr.Image(
                render.placeholder("Per-ray view"),
                show_label=False,
                type="numpy",
                format="png",
                interactive=False,
                buttons=["download", "fullscreen"],
                elem_id="rays",
            )

        comps = {
            "state": state,
            "summary": summary,
            "slice": slice_slider,
            "window": window,
            "width": width,
            "level": level,
            "overlay": overlay,
            "lik_seqpatch": lik_seqpatch,
            "lik_unet": lik_unet,
            "rays": rays_img,
            "metrics": metrics,
            "status": status,
            "files": files,
        }
        outputs = [comps[n] for n in OUTPUTS]
        quiet = {"show_progress": "hidden", "api_visibility": "undocumented"}

        def load(session, image_path, label_path, window_name, thr, alpha, rays_on):
            """Load an image (and optional label) into a fresh session."""
            return handlers.load(predictor, session, image_path, label_path, window_name, thr, alpha, rays_on)

        def on_select(session, z, evt: gr.SelectData):
            # The only place where Gradio's [x, y] picture position becomes a (y, x) slice point.
            if session is None or session.volume is None:
                raise gr.Error("Load an image first, then click on the object.", print_exception=False)
            y, x = render.display_to_slice(evt.index, session.factor, session.shape[1:])
            return handlers.segment(session, int(z), y, x)

        image_file.change(
            _bind(load),
            [state, image_file, label_file, window, threshold, opacity, show_rays],
            outputs,
            api_name="load",
        )
        label_file.change(
            _bind(handlers.load_label), [state, image_file, label_file], outputs, api_name="load_label"
        )
        slice_slider.input(
            _bind(handlers.change_slice), [state, slice_slider], outputs, trigger_mode="always_last", **quiet
        )
        window.input(_bind(handlers.change_window), [state, window, width, level], outputs, **quiet)
        width.release(_bind(handlers.change_wl), [state, width, level], outputs, **quiet)
        level.release(_bind(handlers.change_wl), [state, width, level], outputs, **quiet)
        opacity.release(_bind(handlers.change_display), [state, opacity, show_rays], outputs, **quiet)
        show_rays.input(_bind(handlers.change_display), [state, opacity, show_rays], outputs, **quiet)
        threshold.release(
            _bind(handlers.set_threshold),
            [state, threshold],
            outputs,
            api_name="threshold",
            show_progress="hidden",
        )
        overlay.select(_bind(on_select), [state, slice_slider], outputs, api_visibility="private")
        point_btn.click(_bind(handlers.segment), [state, pz, py, px], outputs, api_name="segment")
        undo_btn.click(_bind(handlers.undo), [state], outputs, api_name="undo")
        reset_btn.click(_bind(handlers.reset), [state], outputs, api_name="reset")
        export_btn.click(_bind(handlers.export), [state], outputs, api_name="export")

    demo.queue(default_concurrency_limit=2)
    return demo
