"""The Gradio page: components and event wiring only; the work is in :mod:`app.handlers`."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from app import handlers, memory, render, teaching
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
#metrics table { font-size: 0.9em; }
#metrics th, #metrics td { padding: 3px 6px; }
#header h2 { margin-bottom: 0.2em; }
"""
#: Keyword arguments for ``demo.launch`` (Gradio 6 takes css and theme there, not in ``gr.Blocks``).
LAUNCH_KWARGS: dict[str, Any] = {
    "css": CSS,
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


def _from_api(request: gr.Request | None) -> bool:
    """Whether the event comes from an API client (gradio_client says so in a header), not the page."""
    headers = getattr(request, "headers", None) or {}
    return str(headers.get("x-gradio-user", "")).lower() == "api"


def _with_request(run: Callable, fn: Callable) -> Callable:
    """Gives ``run`` (which takes ``*args``) the signature of ``fn`` plus a last ``request`` parameter,
    which Gradio fills with the gr.Request: Gradio injects special arguments by signature."""
    sig = inspect.signature(fn)
    req = inspect.Parameter(
        "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request
    )
    run.__signature__ = sig.replace(parameters=[*sig.parameters.values(), req])
    run.__annotations__ = {**getattr(fn, "__annotations__", {}), "request": gr.Request}
    return run


def _notice(exc: handlers.UserNotice, request: gr.Request | None) -> None:
    """A user's mistake: a notification on the page (the outputs stay as they were); an error for an
    API client, which has no page to show a notification on and must learn that nothing was done."""
    if _from_api(request):
        raise gr.Error(exc.message, print_exception=False) from None
    gr.Warning(exc.message)


def _bind(fn: Callable[..., dict[str, Any]], names: Sequence[str] = OUTPUTS) -> Callable[..., tuple]:
    """Adapts a handler returning ``{output name: value}`` to Gradio's tuple of ``names``.

    A :class:`~app.handlers.UserNotice` becomes a notification (``gr.Warning``) and leaves every output
    as it was: a user's mistake never blanks the page or leaves it unclickable.
    """

    @functools.wraps(fn)  # Gradio injects gr.SelectData / gr.Progress by the signature
    def run(*args):
        *args, request = args
        try:
            out = fn(*args)
        except handlers.UserNotice as exc:
            _notice(exc, request)
            out = exc.outputs
        return tuple(out[name] if name in out else gr.skip() for name in names)

    return _with_request(run, fn)


def _bind_steps(fn: Callable[..., Iterator[dict[str, Any]]], names: Sequence[str] = OUTPUTS) -> Callable:
    """:func:`_bind` for a handler that yields several views (Gradio streams each one to the page)."""

    @functools.wraps(fn)
    def run(*args):
        *args, request = args
        try:
            for out in fn(*args):
                yield tuple(out[name] if name in out else gr.skip() for name in names)
        except handlers.UserNotice as exc:
            _notice(exc, request)
            yield tuple(exc.outputs[name] if name in exc.outputs else gr.skip() for name in names)

    return _with_request(run, fn)


def _clearing(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """``fn`` whose successful answer also empties the teaching panels (they showed an older click)."""

    @functools.wraps(fn)
    def run(*args):
        out = fn(*args)
        return {**teaching.cleared(), **out} if "overlay" in out else out

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
        gr.Markdown(HEADER, elem_id="header")
        if missing:
            gr.Markdown(f"⚠ **{handlers.weights_message(missing)}**", elem_id="weights-warning")
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
                    label="Second pass at 1.0 mm for large objects on finer (MR) grids",
                    info="each network's calibrated rule; applies to the next clicks (the status says which grid)",
                    elem_id="second-pass",
                )
                with gr.Accordion("Segment at a voxel (z, y, x)", open=False):
                    with gr.Row():
                        pz = gr.Number(0, label="z", precision=0, minimum=0)
                        py = gr.Number(0, label="y (row)", minimum=0)
                        px = gr.Number(0, label="x (column)", minimum=0)
                    point_btn = gr.Button("Segment here", size="sm")
            with gr.Column(scale=5, min_width=360):
                overlay = gr.Image(
                    render.placeholder("Load an image, then click on the object", (360, 480)),
                    label="Slice: click on the object",
                    height=500,
                    type="numpy",
                    format="png",
                    interactive=False,
                    buttons=["download", "fullscreen"],
                    elem_id="overlay",
                )
                slice_slider = gr.Slider(
                    0, 1, value=0, step=1, label="Axial slice (z)", interactive=False, elem_id="slice"
                )
                with gr.Row():
                    undo_btn = gr.Button("Undo", size="sm", elem_id="undo-btn")
                    reset_btn = gr.Button("Reset", size="sm", elem_id="reset-btn")
                    export_btn = gr.Button("Export", size="sm", variant="primary", elem_id="export-btn")
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
                    lik_seqpatch = _image("SeqPatch likelihood", "lik-seqpatch", "SeqPatch likelihood", height=260)
                    lik_unet = _image("U-net likelihood", "lik-unet", "U-net likelihood", height=260)
                with gr.Row():
                    # rows are slices (z); the yellow line is the slice shown
                    coronal = _image("Coronal plane", "coronal", "Coronal (line: this slice)", size=(120, 420))
                    sagittal = _image("Sagittal plane", "sagittal", "Sagittal (line: this slice)", size=(120, 420))
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
                    ray_detail = _image("One ray, large", "ray-detail")
                with gr.Column(scale=2, min_width=260):
                    gr.Markdown(teaching.EXPLAIN, elem_id="explain")
            rays_img = _image("Per-ray view", "rays")
        teach = _teaching_panels(predictor)

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
            "ray_detail": ray_detail,
            "metrics": metrics,
            "status": status,
            "files": files,
            "coronal": coronal,
            "sagittal": sagittal,
            "image_file": image_file,
            "label_file": label_file,
        }
        outputs = [comps[n] for n in OUTPUTS]
        quiet = {"show_progress": "hidden", "api_visibility": "undocumented"}
        # The teaching panels show the click they ran on: emptied on a new click, image, undo or reset.
        stale = tuple(teaching.cleared())
        stale_outputs = [teach[n] for n in stale]
        # Loading may also empty a file box whose file was refused (so it does not look loaded).
        load_names = OUTPUTS + ("image_file", "label_file") + stale
        load_outputs = [{**comps, **teach}[n] for n in load_names]

        def load(session, image_path, label_path, window_name, thr, alpha, rays_on, two_pass):
            """Load an image (and optional label) into a fresh session."""
            return handlers.load(
                predictor, session, image_path, label_path, window_name, thr, alpha, rays_on, two_pass
            )

        def on_select(session, z, evt: gr.SelectData):
            # The only place where Gradio's [x, y] picture position becomes a (y, x) slice point.
            if session is None or session.volume is None:
                raise handlers.UserNotice("Load an image first, then click on the object.")
            y, x = render.display_to_slice(evt.index, session.factor, session.shape[1:])
            # U-net first, then SeqPatch; the first view also empties the (now stale) teaching panels.
            for i, out in enumerate(handlers.segment_steps(session, int(z), y, x)):
                yield {**out, **teaching.cleared()} if i == 0 else out

        image_file.change(
            _bind(_clearing(load), load_names),
            [state, image_file, label_file, window, threshold, opacity, show_rays, second_pass],
            load_outputs,
            api_name="load",
        )
        label_file.change(
            _bind(handlers.load_label, OUTPUTS + ("label_file",)),
            [state, image_file, label_file],
            outputs + [label_file],
            api_name="load_label",
        )
        slice_slider.input(
            _bind(handlers.change_slice), [state, slice_slider], outputs, trigger_mode="always_last", **quiet
        )
        window.input(_bind(handlers.change_window), [state, window, width, level], outputs, **quiet)
        width.release(_bind(handlers.change_wl), [state, width, level], outputs, **quiet)
        level.release(_bind(handlers.change_wl), [state, width, level], outputs, **quiet)
        opacity.release(_bind(handlers.change_display), [state, opacity, show_rays], outputs, **quiet)
        show_rays.input(_bind(handlers.change_display), [state, opacity, show_rays], outputs, **quiet)
        second_pass.input(_bind(handlers.set_second_pass), [state, second_pass], outputs, **quiet)
        ray.input(_bind(handlers.change_ray), [state, ray], outputs, trigger_mode="always_last", **quiet)
        threshold.release(
            _bind(handlers.set_threshold),
            [state, threshold],
            outputs,
            api_name="threshold",
            show_progress="hidden",
        )
        # "multiple": a click made while the previous one still runs is sent at once and runs beside
        # it; the latest click's result is the one kept (handlers.segment_steps drops a result that a
        # newer click replaced). Gradio's default, "once", drops that click, and "always_last" replays
        # the first click's position. The progress shows on the status line, not over the slice.
        overlay.select(
            _bind_steps(on_select, OUTPUTS + stale),
            [state, slice_slider],
            outputs + stale_outputs,
            api_visibility="private",
            trigger_mode="multiple",
            show_progress_on=[status],
        )
        with_stale = OUTPUTS + stale
        # A generator too: gradio_client's predict(..., api_name="/segment") returns its last view.
        point_btn.click(
            _bind_steps(on_select_point(), with_stale),
            [state, pz, py, px],
            outputs + stale_outputs,
            api_name="segment",
            trigger_mode="multiple",
            show_progress_on=[status],
        )
        undo_btn.click(
            _bind(_clearing(handlers.undo), with_stale), [state], outputs + stale_outputs, api_name="undo"
        )
        reset_btn.click(
            _bind(_clearing(handlers.reset), with_stale), [state], outputs + stale_outputs, api_name="reset"
        )
        export_btn.click(_bind(handlers.export), [state], outputs, api_name="export")
        _wire_teaching(teach, state, files, {n: comps[n] for n in ("overlay", "status", "coronal", "sagittal")})

    demo.queue(default_concurrency_limit=2)
    return demo


def on_select_point() -> Callable[..., Iterator[dict[str, Any]]]:
    """The "Segment here" handler: :func:`handlers.segment_steps`, emptying the teaching panels."""

    def segment(session, z, y, x):
        for i, out in enumerate(handlers.segment_steps(session, z, y, x)):
            yield {**out, **teaching.cleared()} if i == 0 else out

    return segment


# ----------------------------------------------------------------------------- teaching panels


def _image(
    text: str,
    elem_id: str,
    label: str | None = None,
    *,
    height: int | None = None,
    size: tuple[int, int] = (240, 420),
) -> gr.Image:
    """A read-only picture output, showing a placeholder with ``text`` until it is drawn."""
    return gr.Image(
        render.placeholder(text, size),
        label=label,
        show_label=label is not None,
        height=height,
        type="numpy",
        format="png",
        interactive=False,
        buttons=["download", "fullscreen"],
        elem_id=elem_id,
    )


def _teaching_panels(predictor: Predictor) -> dict[str, Any]:
    """Tabs below the main view: robustness, 3D object, ablations, feature maps (components by name)."""
    c: dict[str, Any] = {}
    gr.Markdown("### Teaching and robustness (each tab works on the current click)")
    with gr.Tabs():
        with gr.Tab("Click robustness", elem_id="tab-robustness"):
            gr.Markdown(
                "How much does the result change when the click moves? Both networks segment a grid of "
                "moved clicks around the current one; each cell is a Dice."
            )
            with gr.Row():
                c["rob_grid"] = gr.Slider(
                    3,
                    9,
                    value=5,
                    step=2,
                    label="Grid size (clicks per side)",
                    info="grid² clicks per network: on a CPU each click takes seconds",
                )
                c["rob_step"] = gr.Slider(0.5, 10.0, value=3.0, step=0.5, label="Step between clicks (mm)")
            c["rob_btn"] = gr.Button("Run the robustness grid", size="sm", elem_id="rob-btn")
            c["rob_note"] = gr.Markdown("", elem_id="rob-note")
            c["rob_plot"] = gr.Plot(label="Dice heat maps", format="png", elem_id="rob-plot")
        with gr.Tab("Whole object in 3D", elem_id="tab-3d"):
            gr.Markdown(
                "Follows the clicked object slice by slice (the next click is the mask's centre on the "
                "previous slice) until it vanishes, its area jumps, or the volume ends."
            )
            with gr.Row():
                c["obj_method"] = gr.Radio(
                    [(render.NAMES[m], m) for m in handlers.METHODS],
                    value="seqpatch",
                    label="Method",
                    elem_id="obj-method",
                )
                c["obj_btn"] = gr.Button("Segment the whole object", size="sm", elem_id="obj-btn")
            c["obj_note"] = gr.Markdown("", elem_id="obj-note")
            c["obj_view"] = _image(teaching.PLACEHOLDERS["obj_view"], "obj-view")
        with gr.Tab("Ablations side by side", elem_id="tab-ablations"):
            choices = teaching.ablation_choices(predictor)
            if not choices:
                gr.Markdown("_No ablation weights found in weights/ablations._")
            with gr.Row():
                c["cmp_variant"] = gr.Dropdown(
                    choices,
                    value=choices[0][1] if choices else None,
                    label="Ablation variant (paper, Table 2)",
                    interactive=bool(choices),
                    elem_id="cmp-variant",
                )
                c["cmp_btn"] = gr.Button("Compare", size="sm", interactive=bool(choices), elem_id="cmp-btn")
            c["cmp_note"] = gr.Markdown("", elem_id="cmp-note")
            with gr.Row():
                c["cmp_ref"] = _image(teaching.PLACEHOLDERS["cmp_ref"], "cmp-ref")
                c["cmp_var"] = _image(teaching.PLACEHOLDERS["cmp_var"], "cmp-var")
        with gr.Tab("Inside the network: one ray", elem_id="tab-features"):
            gr.Markdown(
                "The feature maps of one ray at the bottom, middle and top levels (paper, Fig. 6): "
                "before and after the bidirectional recurrent unit, one small picture per time step."
            )
            with gr.Row():
                c["feat_ray"] = gr.Slider(0, 15, value=0, step=1, label="Ray", elem_id="feat-ray")
                c["feat_btn"] = gr.Button("Show feature maps", size="sm", elem_id="feat-btn")
            c["feat_note"] = gr.Markdown("", elem_id="feat-note")
            c["feat_img"] = _image(teaching.PLACEHOLDERS["feat_img"], "feat-img")
    return c


def _wire_teaching(c: dict[str, Any], state: gr.State, files: gr.File, main: dict[str, Any]) -> None:
    """Events of the teaching panels; ``main``: the main view's components by output name."""
    comps = {**c, "state": state, "files": files, **main}

    def out(*names: str) -> list:
        return [comps[n] for n in names]

    rob_out = ("state", "rob_plot", "rob_note")
    # the 3D object is drawn on the slice and in both planes, and named in the status line
    obj_out = ("state", "obj_note", "obj_view", "files", "overlay", "status", "coronal", "sagittal")
    cmp_out = ("state", "cmp_ref", "cmp_var", "cmp_note")
    feat_out = ("feat_img", "feat_note")

    def run_robustness(session, grid, step, progress=gr.Progress()):  # noqa: B008 - Gradio's documented pattern
        return teaching.robustness(session, grid, step, progress=lambda f, t: progress(f, desc=t))

    def run_object(session, method, progress=gr.Progress()):  # noqa: B008 - Gradio's documented pattern
        return teaching.segment_object(session, method, progress=lambda f, t: progress(f, desc=t))

    c["rob_btn"].click(
        _bind(run_robustness, rob_out),
        [state, c["rob_grid"], c["rob_step"]],
        out(*rob_out),
        api_name="robustness",
        concurrency_limit=1,
    )
    c["obj_btn"].click(
        _bind(run_object, obj_out),
        [state, c["obj_method"]],
        out(*obj_out),
        api_name="segment_3d",
        concurrency_limit=1,
    )
    # the variant's training budget and validation Dice, from its record, as soon as it is chosen
    c["cmp_variant"].change(
        lambda key: teaching.ablation_context(key) if key else "",
        [c["cmp_variant"]],
        [c["cmp_note"]],
        api_visibility="private",
        show_progress="hidden",
    )
    c["cmp_btn"].click(
        _bind(teaching.compare, cmp_out), [state, c["cmp_variant"]], out(*cmp_out), api_name="compare"
    )
    feats = _bind(teaching.ray_features_view, feat_out)
    c["feat_btn"].click(feats, [state, c["feat_ray"]], out(*feat_out), api_name="ray_features")
    c["feat_ray"].release(
        feats, [state, c["feat_ray"]], out(*feat_out), show_progress="hidden", api_visibility="undocumented"
    )
