"""A box the user draws (issue 28), without a browser: in box mode two clicks on the slice are the
corners of LiteMedSAM's box. The corners go through the display -> voxel mapping of clicks, here on a
volume stored LAS (shown upside down from its rows), so the box comes out in voxel order; a slice or
mode change cancels a first corner; a box with no area is one line and changes nothing.

SeqPatch and the U-net are :class:`helpers.BrightNet` (they segment the bright disc); LiteMedSAM is the
shipped model (the tests skip without weights/litemedsam.safetensors).
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from test_app import CENTRE, SHAPE
from test_app_litemedsam import box_model, predictor  # noqa: F401 - the module's fixtures
from test_browser_page import colour_pixels

from app import build_demo, handlers, render
from app.drawing import COLOURS
from app.exports import clicks_record, mask_volume
from app.notices import UserNotice
from app.view import click_to_voxel, render_view
from seqpatch_core.images.orientation import orientation

pytestmark = pytest.mark.usefixtures("one_thread")

#: LAS: x to the patient's left, y to anterior, z superior; shown anterior up, so the rows flip.
LAS = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
#: The box drawn round the disc of radius 12 on slice 2, (z, y0, x0, y1, x1) voxels inclusive.
BOX = (2, 14, 20, 46, 56)


@pytest.fixture(scope="module")
def las_file(tmp_path_factory) -> str:
    """A CT-like volume stored LAS: a bright disc at ``CENTRE`` (largest on slice 2) in soft tissue."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    r2 = (yy - CENTRE[0]) ** 2 + (xx - CENTRE[1]) ** 2
    arr = np.full(SHAPE, -900.0, dtype=np.float32)
    for k, radius in enumerate((6, 9, 12, 8)):
        arr[k][r2 <= 28**2] = 30.0
        arr[k][r2 <= radius**2] = 200.0
    arr += rng.normal(0, 10, SHAPE).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.8, 3.0))
    img.SetDirection(LAS)
    path = tmp_path_factory.mktemp("las") / "disc_las.nii.gz"
    sitk.WriteImage(img, str(path))
    return str(path)


@pytest.fixture()
def clicked(predictor, box_model, las_file):  # noqa: F811
    """A session on the LAS volume after one click on the disc (SeqPatch, U-net, LiteMedSAM)."""
    s = handlers.load(predictor, None, las_file, box_model=box_model)["state"]
    assert orientation(s.volume.direction).code == "LAS"
    handlers.segment(s, 2, *CENTRE)
    assert set(s.results[2]) == {"seqpatch", "unet"} and s.box_answer(2).source == "seqpatch"
    return s


def picture_xy(s, y: int, x: int) -> list[int]:
    """Gradio's [x, y] picture pixel of voxel (y, x) of the slice shown (turned as the page turns it)."""
    disp = orientation(s.volume.direction).slices
    shown = disp.points_to_display(np.array([y, x], dtype=float), disp.plane_shape(s.shape))
    py, px = render.slice_to_display(shown, s.factor)
    return [round(px), round(py)]


def corner(s, y: int, x: int) -> dict:
    """A click in box mode at voxel (y, x) of the slice shown, read back as the page reads a click."""
    return handlers.box_corner(s, s.z, *click_to_voxel(s, picture_xy(s, y, x)))


def lite_near(overlay: np.ndarray, xy: list[int], reach: int) -> int:
    """How many pixels of LiteMedSAM's colour lie within ``reach`` px of picture pixel ``xy``."""
    x, y = xy
    near = overlay[max(0, y - reach) : y + reach, max(0, x - reach) : x + reach]
    return int(colour_pixels(near, COLOURS["litemedsam"], tol=4).sum())


def test_two_corners_are_a_box_in_voxel_order_answered_beside_the_click(clicked):
    s = clicked
    z, y0, x0, y1, x1 = BOX
    kept, click_answer, runs = s.results[z], s.box_answer(z), s.boxes.encoder_runs
    before = render_view(s)["overlay"]
    # the first corner: the bottom-left voxel of the box, at the top left on screen (rows flip)
    first = picture_xy(s, y1, x0)
    assert first[1] < picture_xy(s, y0, x0)[1], "LAS: larger y is shown higher"
    out = corner(s, y1, x0)
    assert s.box_corner == (z, y1, x0) and set(out) == {"state", "slice", "overlay"}
    marked = lite_near(out["overlay"], first, 3 * s.factor) - lite_near(before, first, 3 * s.factor)
    assert marked > 10, "the corner is marked where it was clicked"
    assert s.box_answer(z) is click_answer and s.results[z] is kept  # nothing answered yet
    # the opposite corner: LiteMedSAM on the box, in voxel order, named as the user's
    out = corner(s, y0, x1)
    answer = s.box_answer(z)
    assert answer.source == "user" and answer.result.box.as_list() == list(BOX)
    assert s.box_corner is None and out["progress"] == ""
    assert answer.result.encoder_ms == 0.0 and s.boxes.encoder_runs == runs  # the click encoded the slice
    rows = [line for line in out["metrics"].splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| SeqPatch", "| U-net", "| LiteMedSAM (your box)"]
    assert float(rows[2].rstrip(" |").rsplit("|", 1)[1]) > 0  # its time (ms)
    # SeqPatch's and the U-net's results stay, drawn with the box's answer; the box frames the
    # clicked corners on screen (its top edge runs through the first corner's row)
    assert s.results[z] is kept
    shown = out["overlay"]
    for m in ("seqpatch", "unet", "litemedsam"):
        assert colour_pixels(shown, COLOURS[m], tol=4).sum() > 50, m
    top = picture_xy(s, y1, (x0 + x1) // 2)
    assert lite_near(shown, [top[0], top[1] - s.factor // 2], 2) > 0
    # exported as the click's box is: its mask and its prompt in the clicks record
    assert np.array_equal(mask_volume(s, "litemedsam")[z], answer.result.mask)
    record = clicks_record(s)
    assert record["clicks"][-1]["prompt_box"] == {"zyx_inclusive": list(BOX), "source": "user", "oracle": False}
    assert record["boxes"] == []
    # the click's own follow-up, run late, does not take the user's box away
    assert handlers.segment_box(s) == {"progress": ""} and s.box_answer(z) is answer


def test_undo_takes_back_the_users_box_before_its_click(clicked):
    """A box drawn after a click is a step of its own: the first undo drops the box's answer (the click's
    own box shows again), the second takes the click back."""
    s = clicked
    z, y0, x0, y1, x1 = BOX
    kept, click_answer = s.results[z], s.box_answer(z)
    corner(s, y1, x0)
    corner(s, y0, x1)
    assert s.box_answer(z).source == "user"
    out = handlers.undo(s)
    assert s.results[z] is kept and s.box_answer(z) is click_answer and out["slice"] == z
    assert "(your box)" not in out["metrics"] and "LiteMedSAM" in out["metrics"]
    assert clicks_record(s)["clicks"][-1]["prompt_box"]["source"] == "seqpatch"
    handlers.undo(s)
    assert z not in s.results and s.box_answer(z) is None and not s.history


def test_a_slice_or_mode_change_cancels_the_first_corner(clicked):
    s = clicked
    z, y0, x0, y1, x1 = BOX
    corner(s, y0, x0)
    out = handlers.change_slice(s, z - 1)
    assert s.box_corner is None
    handlers.change_slice(s, z)
    corner(s, y1, x1)  # a first corner again, not the second of a box
    assert s.box_corner == (z, y1, x1) and s.box_answer(z).source == "seqpatch"
    without = handlers.change_slice(s, z)["overlay"]  # the same slice: the corner stays
    assert s.box_corner == (z, y1, x1)
    out = handlers.set_click_mode(s, handlers.CLICK_MODE)
    assert s.box_corner is None and not np.array_equal(out["overlay"], without)  # drawn without it
    assert handlers.set_click_mode(s, handlers.BOX_MODE) == {}  # nothing pending: nothing redrawn
    corner(s, y0, x0)
    handlers.segment(s, z, *CENTRE)  # a click ends a box being drawn too
    assert s.box_corner is None
    with pytest.raises(UserNotice) as info:
        handlers.set_click_mode(s, "lasso")
    assert "unknown click mode" in info.value.message


def test_a_box_without_area_is_one_line_and_the_page_keeps_its_state(clicked):
    s = clicked
    z, y0, x0, y1, x1 = BOX
    corner(s, y0, x0)
    kept, answers = s.results[z], list(s.box_answers)
    with pytest.raises(UserNotice) as info:
        corner(s, y0, x1)  # the same row: a line, not a box
    assert "has no area" in info.value.message and "\n" not in info.value.message
    assert info.value.outputs == {}  # every output stays as it was, the corner's mark too
    assert s.results[z] is kept and s.box_answers == answers and s.box_corner == (z, y0, x0)
    corner(s, y1, x1)  # the first corner stays for another try
    assert s.box_answer(z).result.box.as_list() == list(BOX)


def test_a_box_on_a_slice_with_no_click_is_recorded_and_the_page_offers_the_mode(
    predictor,  # noqa: F811
    box_model,  # noqa: F811
    las_file,
):
    s = handlers.load(predictor, None, las_file, box_model=box_model)["state"]
    z, y0, x0, y1, x1 = BOX
    corner(s, y0, x0)
    out = corner(s, y1, x1)
    assert "LiteMedSAM (your box)" in out["metrics"] and not s.results
    (entry,) = clicks_record(s)["boxes"]
    assert entry["slice"] == z and entry["prompt_box"]["zyx_inclusive"] == list(BOX)
    assert entry["results"]["litemedsam"]["area_px"] == int(s.box_answer(z).result.mask.sum())
    demo = build_demo(predictor, examples=[], box_model=box_model)
    (mode,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "click-mode"]
    assert [c[0] for c in mode.choices] == list(handlers.CLICK_MODES) and mode.value == handlers.CLICK_MODE
