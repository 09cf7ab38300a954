"""Every output of the page, declared once: its name, the part of the page it belongs to and what it
shows when there is nothing to show.

Handlers answer ``{output name: value}``; :mod:`app.binding` turns an answer into Gradio's tuple for
one event and refuses a name that is not an output of that event; :mod:`app.layout` builds one
component per declared name (:func:`components` refuses a declared output without one). A new output
is one line here, its component in the layout and the handlers that set it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app import render

__all__ = [
    "MAIN", "TABLE", "TABLE_NAMES", "TEACHING", "UPLOADS", "Output", "check_names", "components", "empty", "names_of",
]  # fmt: skip

#: The placeholder sizes (height, width) of the slice and of the two planes.
SLICE_PX = (360, 480)
PLANE_PX = (120, 420)


@dataclass(frozen=True)
class Output:
    """One output of the page.

    part: "main" (the slice, its numbers and pictures: every main event answers with these),
    "upload" (the file boxes, set only to put back what is really loaded) or "teaching" (the tabs,
    emptied when a new click, image, undo or reset makes them stale). blank: the value shown when there
    is nothing to show (None: the output has no empty state, e.g. the session or the slice slider).
    """

    name: str
    part: str
    blank: Callable[[], Any] | None = None


def _picture(text: str, size: tuple[int, int] = (240, 420)) -> Callable[[], Any]:
    return lambda: render.placeholder(text, size)


def _nothing() -> None:
    return None


def _no_text() -> str:
    return ""


TABLE: tuple[Output, ...] = (
    Output("state", "main"),
    Output("summary", "main", lambda: "_No image loaded._"),
    Output("slice", "main"),
    Output("window", "main"),
    Output("width", "main"),
    Output("level", "main"),
    Output("overlay", "main", _picture("Load an image, then click on the object", SLICE_PX)),
    Output("lik_seqpatch", "main", _picture("SeqPatch likelihood")),
    Output("lik_unet", "main", _picture("U-net likelihood")),
    Output("lik_litemedsam", "main", _picture("LiteMedSAM likelihood")),
    Output("rays", "main", _picture("Per-ray view")),
    Output("ray_detail", "main", _picture("One ray, large")),
    Output("metrics", "main", _no_text),
    Output("status", "main", _no_text),
    Output("progress", "main", _no_text),  # beside the slice: what is running now
    Output("coronal", "main", _picture("Coronal plane", PLANE_PX)),
    Output("sagittal", "main", _picture("Sagittal plane", PLANE_PX)),
    Output("files", "main", _nothing),  # last of the main ones: API clients take the exports last
    Output("image_file", "upload"),
    Output("label_file", "upload"),
    Output("rob_plot", "teaching", _nothing),
    Output("rob_note", "teaching", _no_text),
    Output("obj_note", "teaching", _no_text),
    Output("obj_view", "teaching", _picture("Slices across the object")),
    Output("cmp_note", "teaching", _no_text),
    Output("cmp_ref", "teaching", _picture("Bidirectional model: per-ray view")),
    Output("cmp_var", "teaching", _picture("Ablation: per-ray view")),
    Output("feat_note", "teaching", _no_text),
    Output("feat_img", "teaching", _picture("Feature maps of one ray")),
)
_BY_NAME = {o.name: o for o in TABLE}
#: Every declared name, in the table's order.
TABLE_NAMES = tuple(_BY_NAME)


def names_of(part: str) -> tuple[str, ...]:
    """The names of one part of the page, in the table's order."""
    return tuple(o.name for o in TABLE if o.part == part)


MAIN = names_of("main")
UPLOADS = names_of("upload")
TEACHING = names_of("teaching")


def check_names(names: Sequence[str]) -> None:
    """Raises KeyError naming every name in ``names`` that is not a declared output."""
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        raise KeyError(f"not an output of the page: {', '.join(map(repr, unknown))}")


def empty(*names: str) -> dict[str, Any]:
    """``{name: its blank value}`` for ``names`` (those without a blank state are left out)."""
    check_names(names)
    return {n: _BY_NAME[n].blank() for n in names if _BY_NAME[n].blank is not None}


def components(found: Mapping[str, Any]) -> dict[str, Any]:
    """The page's components by declared output name, taken from ``found`` (which may hold inputs too).

    Raises KeyError naming every declared output without a component: an output declared here and
    forgotten in the layout fails when the page is built, not when a handler first sets it."""
    missing = [o.name for o in TABLE if o.name not in found]
    if missing:
        raise KeyError(f"outputs with no component on the page: {', '.join(missing)}")
    return {o.name: found[o.name] for o in TABLE}
