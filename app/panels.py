"""Parts of the page built in :mod:`app.layout`: the read-only picture component, the teaching and
robustness tabs below the main view with their events, and the text that explains the per-ray view."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gradio as gr

from app import outputs, teaching_handlers
from app.ablations import ablation_choices, ablation_context
from app.binding import bind
from app.drawing import NAMES
from seqpatch_core.inference.predictor import METHODS, Predictor
from seqpatch_core.method.models.litemedsam import ARCH, LiteMedSAM

__all__ = ["EXPLAIN", "image", "teaching_panels", "wire_teaching"]

EXPLAIN = """#### How the sequential network reads a ray
* **Inside → outside.** Each of the 16 rays starts *inside* the object, at your click, and ends
  *outside* it. The network reads the ray's K patches in that order (k = 0 … K−1), so it can judge
  each patch by **comparing it with what came before and after it**, not on its own.
* **Two memories.** The *forward* memory (k = 0 → K−1) has read the patches from the click up to
  this one; the *backward* memory (k = K−1 → 0) those from the far end back to this one. At every
  time step the two are fused (concatenated, 1×1 convolution) and decoded into the patch's likelihood.
* **See it.** The ray shown large (left) has two more rows: the same network with its backward memory
  blanked just before every fusion (*forward memory only*), then with its forward memory blanked
  (*backward memory only*). Blanked means set to zero: the memory's state before it has read any
  patch. The curves below compare the three at the patch centres.
* **What this network does.** The *forward-only* curve follows the fused one: the forward memory
  carries the crossing from inside to outside. The *backward-only* curve stays high along the whole
  ray: with a blank forward memory the network calls every patch inside, so the backward memory does
  not find the boundary on its own. Beside the forward memory it holds the likelihood up just before
  the crossing: there the fused curve lies above the forward-only one. A forward-only network
  (ablation *forward*) has no backward memory at all.
"""


def image(
    name: str,
    elem_id: str,
    label: str | None = None,
    *,
    height: int | None = None,
) -> gr.Image:
    """The read-only picture of output ``name`` (:mod:`app.outputs`), showing its blank until drawn."""
    return gr.Image(
        outputs.empty(name)[name],
        label=label,
        show_label=label is not None,
        height=height,
        type="numpy",
        format="png",
        interactive=False,
        buttons=["download", "fullscreen"],
        elem_id=elem_id,
    )


def teaching_panels(predictor: Predictor, box_model: LiteMedSAM | None = None) -> dict[str, Any]:
    """Tabs below the main view: robustness, 3D object, ablations, feature maps (components by name).
    With ``box_model`` (LiteMedSAM's weights loaded) the robustness grid and the 3D object offer it too."""
    c: dict[str, Any] = {}
    boxed = " LiteMedSAM takes the click's box (as on the main view), moved the same way." if box_model else ""
    gr.Markdown("### Teaching and robustness (each tab works on the current click)")
    with gr.Tabs():
        with gr.Tab("Click robustness", elem_id="tab-robustness"):
            gr.Markdown(
                "How much does the result change when the click moves? Both networks segment a grid of "
                "moved clicks around the current one; each cell is a Dice." + boxed
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
                + (
                    " LiteMedSAM starts from the click's box; each next box is the previous slice's mask's "
                    "box plus a few pixels, until the mask vanishes."
                    if box_model
                    else ""
                )
            )
            with gr.Row():
                c["obj_method"] = gr.Radio(
                    [(NAMES[m], m) for m in (*METHODS, *([ARCH] if box_model else []))],
                    value="seqpatch",
                    label="Method",
                    elem_id="obj-method",
                )
                c["obj_btn"] = gr.Button("Segment the whole object", size="sm", elem_id="obj-btn")
            c["obj_note"] = gr.Markdown("", elem_id="obj-note")
            c["obj_view"] = image("obj_view", "obj-view")
        with gr.Tab("Ablations side by side", elem_id="tab-ablations"):
            choices = ablation_choices(predictor)
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
                c["cmp_ref"] = image("cmp_ref", "cmp-ref")
                c["cmp_var"] = image("cmp_var", "cmp-var")
        with gr.Tab("Inside the network: one ray", elem_id="tab-features"):
            gr.Markdown(
                "The feature maps of one ray at the bottom, middle and top levels (paper, Fig. 6): "
                "before and after the bidirectional recurrent unit, one small picture per time step."
            )
            with gr.Row():
                c["feat_ray"] = gr.Slider(0, 15, value=0, step=1, label="Ray", elem_id="feat-ray")
                c["feat_btn"] = gr.Button("Show feature maps", size="sm", elem_id="feat-btn")
            c["feat_note"] = gr.Markdown("", elem_id="feat-note")
            c["feat_img"] = image("feat_img", "feat-img")
    return c


def _marks_shown(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """``fn``, a teaching handler taking the session first, that notes in the session that its tabs
    now show a result (:attr:`~app.session.Session.teaching_shown`)."""

    @functools.wraps(fn)  # Gradio injects gr.Progress by the signature
    def run(session, *args, **kwargs):
        out = fn(session, *args, **kwargs)
        if session is not None:
            session.teaching_shown = True
        return out

    return run


def wire_teaching(comps: dict[str, Any]) -> None:
    """Events of the teaching panels; ``comps``: the page's components by name (its outputs and the
    panels' own inputs)."""
    c, state = comps, comps["state"]

    def out(*names: str) -> list:
        return [comps[n] for n in names]

    rob_out = ("state", "rob_plot", "rob_note")
    # the 3D object is drawn on the slice and in both planes, and named in the status line
    obj_out = ("state", "obj_note", "obj_view", "files", "overlay", "status", "coronal", "sagittal")
    cmp_out = ("state", "cmp_ref", "cmp_var", "cmp_note")
    feat_out = ("feat_img", "feat_note")

    def run_robustness(session, grid, step, progress=gr.Progress()):  # noqa: B008 - Gradio's documented pattern
        return teaching_handlers.robustness(session, grid, step, progress=lambda f, t: progress(f, desc=t))

    def run_object(session, method, progress=gr.Progress()):  # noqa: B008 - Gradio's documented pattern
        return teaching_handlers.segment_object(session, method, progress=lambda f, t: progress(f, desc=t))

    c["rob_btn"].click(
        bind(_marks_shown(run_robustness), rob_out),
        [state, c["rob_grid"], c["rob_step"]],
        out(*rob_out),
        api_name="robustness",
        concurrency_limit=1,
    )
    c["obj_btn"].click(
        bind(_marks_shown(run_object), obj_out),
        [state, c["obj_method"]],
        out(*obj_out),
        api_name="segment_3d",
        concurrency_limit=1,
    )
    # the variant's training budget and validation Dice, from its record, as soon as it is chosen
    c["cmp_variant"].change(
        lambda key: ablation_context(key) if key else "",
        [c["cmp_variant"]],
        [c["cmp_note"]],
        api_visibility="private",
        show_progress="hidden",
    )
    c["cmp_btn"].click(
        bind(_marks_shown(teaching_handlers.compare), cmp_out),
        [state, c["cmp_variant"]],
        out(*cmp_out),
        api_name="compare",
    )
    feats = bind(_marks_shown(teaching_handlers.ray_features_view), feat_out)
    c["feat_btn"].click(feats, [state, c["feat_ray"]], out(*feat_out), api_name="ray_features")
    c["feat_ray"].release(
        feats, [state, c["feat_ray"]], out(*feat_out), show_progress="hidden", api_visibility="undocumented"
    )
