"""Parts of the page built in :mod:`app.layout`: the read-only picture component, and the teaching and
robustness tabs below the main view with their events."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app import handlers, render, teaching
from app.binding import bind
from seqpatch_core.inference.predictor import Predictor

__all__ = ["image", "teaching_panels", "wire_teaching"]


def image(
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


def teaching_panels(predictor: Predictor) -> dict[str, Any]:
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
            c["obj_view"] = image(teaching.PLACEHOLDERS["obj_view"], "obj-view")
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
                c["cmp_ref"] = image(teaching.PLACEHOLDERS["cmp_ref"], "cmp-ref")
                c["cmp_var"] = image(teaching.PLACEHOLDERS["cmp_var"], "cmp-var")
        with gr.Tab("Inside the network: one ray", elem_id="tab-features"):
            gr.Markdown(
                "The feature maps of one ray at the bottom, middle and top levels (paper, Fig. 6): "
                "before and after the bidirectional recurrent unit, one small picture per time step."
            )
            with gr.Row():
                c["feat_ray"] = gr.Slider(0, 15, value=0, step=1, label="Ray", elem_id="feat-ray")
                c["feat_btn"] = gr.Button("Show feature maps", size="sm", elem_id="feat-btn")
            c["feat_note"] = gr.Markdown("", elem_id="feat-note")
            c["feat_img"] = image(teaching.PLACEHOLDERS["feat_img"], "feat-img")
    return c


def wire_teaching(c: dict[str, Any], state: gr.State, files: gr.File, main: dict[str, Any]) -> None:
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
        bind(run_robustness, rob_out),
        [state, c["rob_grid"], c["rob_step"]],
        out(*rob_out),
        api_name="robustness",
        concurrency_limit=1,
    )
    c["obj_btn"].click(
        bind(run_object, obj_out),
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
        bind(teaching.compare, cmp_out), [state, c["cmp_variant"]], out(*cmp_out), api_name="compare"
    )
    feats = bind(teaching.ray_features_view, feat_out)
    c["feat_btn"].click(feats, [state, c["feat_ray"]], out(*feat_out), api_name="ray_features")
    c["feat_ray"].release(
        feats, [state, c["feat_ray"]], out(*feat_out), show_progress="hidden", api_visibility="undocumented"
    )
