"""Tests of seqpatch_core.evaluation.robustness and the ``robustness`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import BrightBoxNet, BrightNet, bright_predictor, sphere_arrays, write_case, write_checkpoints

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import dice
from seqpatch_core.cli.main import main
from seqpatch_core.evaluation.boxes import SEQPATCH_MARGIN_PX
from seqpatch_core.evaluation.robustness import (
    RobustnessMap,
    click_robustness,
    robustness_figure,
    robustness_table,
    shift_box,
)
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference.boxes import Box, BoxPredictor, box_around
from seqpatch_core.inference.predictor import Predictor

#: The fields of a RobustnessMap, as its JSON has them.
KEYS = {"offsets_mm", "dice", "grids_mm", "reference", "outside", "point_yx", "slice", "window", "seconds"}


@pytest.fixture
def spy(monkeypatch) -> list[tuple]:
    """Counts Predictor.predict_many calls (method, number of clicks) and runs the real one."""
    calls: list[tuple] = []
    real = Predictor.predict_many

    def counting(self, z, points_yx, method="seqpatch", preset=None, threshold=0.5, coarsen=None, window=None):
        calls.append((method, len(points_yx)))
        return real(self, z, points_yx, method, preset, threshold, coarsen, window)

    monkeypatch.setattr(Predictor, "predict_many", counting)
    return calls


def test_grid_against_label_in_one_batch_per_method(spy):
    pred = bright_predictor()
    _, label = sphere_arrays()
    fractions = []
    res = click_robustness(pred, 6, (32.0, 30.0), grid=5, step_mm=4.0, label_slice=label[6],
                           progress=lambda f, text: fractions.append(f))
    assert isinstance(res, RobustnessMap) and res.methods == ["seqpatch", "unet"]
    assert res.offsets_mm == [-8.0, -4.0, 0.0, 4.0, 8.0]
    assert res.reference == "label" and res.slice == 6 and res.point_yx == (32.0, 30.0)
    assert spy == [("seqpatch", 25), ("unet", 25)]  # the whole grid in one batch per method
    for method in ("seqpatch", "unet"):
        grid = np.array(res.dice[method], dtype=float)
        assert grid.shape == (5, 5)
        assert grid[2, 2] > 0.85  # BrightNet finds the ball from its centre
        assert res.seconds[method] > 0
        assert res.grids_mm[method] == [[1.0] * 5] * 5  # no rule in BrightNet's record: the first grid
        assert res.mean(method) == pytest.approx(np.mean(grid))
    outside = np.array(res.outside)
    assert outside.shape == (5, 5)
    # (8, 8) mm from the centre is 11.3 mm away: outside the 9 mm ball; (4, 4) is inside
    assert outside[0, 0] and outside[4, 4] and not outside[2, 2] and not outside[1, 3]
    assert fractions[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in fractions)
    assert set(json.loads(json.dumps(res.as_dict()))) == KEYS  # no LiteMedSAM: no prompt


def test_self_reference_and_clicks_outside_the_image(spy):
    pred = bright_predictor()
    res = click_robustness(pred, 6, (1.0, 30.0), grid=5, step_mm=3.0, methods=("unet",))
    assert res.reference == "self" and res.methods == ["unet"]
    grid = res.dice["unet"]
    assert grid[0] == [None] * 5 and grid[1] == [None] * 5  # y - 6 mm and y - 3 mm leave the image
    assert grid[2][2] == 1.0  # the original click against itself
    assert spy == [("unet", 15)]  # skipped clicks are not sent
    assert all(isinstance(v, float) for row in grid[2:] for v in row)
    with pytest.raises(InputError):
        click_robustness(pred, 6, (100.0, 30.0))  # the original click is outside the image
    with pytest.raises(InputError):
        click_robustness(pred, 6, (32.0, 30.0), grid=0)


def test_figure_and_table():
    res = click_robustness(bright_predictor(), 6, (1.0, 30.0), grid=3, step_mm=5.0)
    fig = robustness_figure(res)
    assert len([ax for ax in fig.axes if ax.get_title()]) == 2  # two heat maps (+ a colour bar)
    table = robustness_table(res)
    assert "**seqpatch**" in table and "n/a" in table


@pytest.mark.slow
def test_cli(tmp_path, capsys):
    image, label = write_case(tmp_path, shape=(3, 40, 40), centre=(1.0, 20.0, 20.0), radius_mm=8.0)
    w = write_checkpoints(tmp_path)
    out, png = tmp_path / "rob.json", tmp_path / "rob.png"
    weights = ["--weights-seqpatch", str(w["seqpatch"]), "--weights-unet", str(w["unet"]), "--device", "cpu"]
    rc = main(["robustness", str(image), "--label", str(label), "--slice", "1", "--grid", "3",
               "--step-mm", "3", "--preset", "mr", "--json", str(out), "--png", str(png), *weights])
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res) == KEYS and res["reference"] == "label"
    assert np.array(res["dice"]["seqpatch"]).shape == (3, 3) and np.array(res["dice"]["unet"]).shape == (3, 3)
    assert res["point_yx"] == pytest.approx([20.0, 20.0])  # default: the label's centre on the slice
    assert png.stat().st_size > 1000
    assert "**unet**" in capsys.readouterr().out
    # no label and no point: one line, exit 2
    assert main(["robustness", str(image), "--slice", "1", *weights]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["robustness", str(image), "--slice", "7", "--point", "5", "5", *weights]) == 2


@pytest.mark.slow
def test_chunked_batches_give_the_same_result_and_advance_the_progress(spy):
    pred = bright_predictor()
    _, label = sphere_arrays()
    whole = click_robustness(pred, 6, (32.0, 30.0), grid=5, step_mm=4.0, label_slice=label[6])
    spy.clear()
    ticks: list[tuple[float, str]] = []
    chunked = click_robustness(pred, 6, (32.0, 30.0), grid=5, step_mm=4.0, label_slice=label[6], chunk=7,
                               progress=lambda f, text: ticks.append((f, text)))
    assert spy == [("seqpatch", 7), ("seqpatch", 7), ("seqpatch", 7), ("seqpatch", 4),
                   ("unet", 7), ("unet", 7), ("unet", 7), ("unet", 4)]
    for key in ("dice", "grids_mm", "outside", "offsets_mm", "reference", "point_yx", "slice"):
        assert getattr(chunked, key) == getattr(whole, key)
    fractions = [f for f, _ in ticks]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len(set(fractions)) == 9  # 4 batches per method and the end
    assert fractions[1] == pytest.approx(7 / 25 / 2) and "7 of 25 clicks done" in ticks[1][1]
    # self reference (the centre click's mask is in a later batch than the first) and chunk >= grid
    spy.clear()
    self_ref = click_robustness(pred, 6, (32.0, 30.0), grid=3, step_mm=4.0, methods=("unet",), chunk=4)
    assert spy == [("unet", 4), ("unet", 4), ("unet", 1)]
    assert self_ref.dice == click_robustness(pred, 6, (32.0, 30.0), grid=3, step_mm=4.0, methods=("unet",)).dice
    assert click_robustness(pred, 6, (32.0, 30.0), grid=3, step_mm=4.0, methods=("unet",), chunk=50).dice == \
        self_ref.dice
    with pytest.raises(InputError, match="chunk"):
        click_robustness(pred, 6, (32.0, 30.0), grid=3, chunk=-1)


def test_one_window_for_the_whole_grid(monkeypatch):
    """The map measures the networks, not the window rule: every moved click and every method is
    segmented in the window resolved once at the original click, even where "auto" would switch."""
    from seqpatch_core.images.intensity import auto_window

    arr = np.full((3, 80, 80), 40.0, np.float32)
    arr[:, :, :30] = -1000.0  # air on the left: the click-based rule says "lung" near it
    arr[:, 30:50, 38:58] = 200.0
    vol = volume_from_array(arr, spacing=(2.0, 1.0, 1.0), modality="CT")
    assert auto_window(vol, (1, 40, 34)).name != auto_window(vol, (1, 40, 60)).name
    pred = Predictor({"seqpatch": BrightNet("seqpatch"), "unet": BrightNet("unet")}, device="cpu")
    pred.set_volume(vol)
    seen = []
    real = Predictor.predict_many

    def spy(self, z, points_yx, method="seqpatch", preset=None, threshold=0.5, coarsen=None, window=None):
        out = real(self, z, points_yx, method, preset, threshold, coarsen, window)
        seen.extend(r.window for r in out)
        return out

    monkeypatch.setattr(Predictor, "predict_many", spy)
    res = click_robustness(pred, 1, (40.0, 47.0), grid=5, step_mm=13.0, chunk=1)
    assert len(seen) == 2 * 25 and len(set(seen)) == 1
    assert res.window == str(seen[0])


def test_the_map_names_the_grid_of_every_click():
    """With a scale rule in the record, the ball's clicks climb the pyramid; the map says where."""
    image, label = sphere_arrays()
    net = BrightNet("unet")
    net.record["coarsen"] = {"radius_px": 6.0}  # the 9-mm ball is too large for 1.0 mm, fits 2.0 mm
    pred = Predictor({"unet": net}, device="cpu")
    pred.set_volume(volume_from_array(image, spacing=(2.0, 1.0, 1.0), modality="CT"))
    res = click_robustness(pred, 6, (32.0, 30.0), grid=3, step_mm=3.0, methods=("unet",), label_slice=label[6])
    assert res.grids_mm["unet"][1][1] == 2.0 and res.dice["unet"][1][1] > 0.85
    assert "grids 2 mm" in robustness_table(res)


@pytest.mark.parametrize(
    ("direction", "turned"),
    [
        ((1, 0, 0, 0, 1, 0, 0, 0, 1), lambda g: g),  # LPS: shown as stored
        ((-1, 0, 0, 0, -1, 0, 0, 0, 1), lambda g: g[::-1, ::-1]),  # RAS: both in-plane axes reversed
        ((1, 0, 0, 0, -1, 0, 0, 0, 1), lambda g: g[::-1, :]),  # LAS: rows reversed (anterior up)
    ],
)
def test_the_heat_map_is_turned_as_the_slice_is_shown(direction, turned):
    """With the slice's display, cell (row, column) of the heat map is the click moved that way on
    screen: the voxel-order grid turned exactly as the picture is."""
    from seqpatch_core.images.orientation import orientation

    grid = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]
    res = RobustnessMap(
        offsets_mm=[-3.0, 0.0, 3.0], dice={"seqpatch": grid, "litemedsam": grid},
        grids_mm={"seqpatch": grid, "litemedsam": grid},
        outside=[[False] * 3 for _ in range(3)], reference="label", point_yx=(10.0, 10.0), slice=0,
        window="soft", seconds={},
    )  # fmt: skip
    fig = robustness_figure(res, to_display=orientation(direction).slices.to_display)
    for ax in fig.axes[:2]:  # LiteMedSAM's map beside SeqPatch's, turned alike
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), turned(np.asarray(grid)))
    assert "on screen" in fig.axes[0].get_xlabel()


# ----------------------------------------------------------------------------- LiteMedSAM: the box moved with the click


@pytest.mark.parametrize(
    ("dy", "dx", "want"),
    [
        (0, 0, (10, 20, 30, 40)),
        (-4, 6, (6, 26, 26, 46)),  # up and right, inside
        (-15, 0, (0, 20, 15, 40)),  # past the top: clipped
        (25, 15, (35, 35, 49, 49)),  # past the bottom right corner: clipped on two sides
        (-31, 0, None),  # off the top but for one row: no area
        (0, 40, None),  # off the right
    ],
)
def test_a_box_moves_by_whole_pixels_and_is_clipped_to_the_slice(dy, dx, want):
    moved = shift_box(Box(3, 10, 20, 30, 40), dy, dx, (50, 50))
    assert moved == (None if want is None else Box(3, *want))


def _boxes(pred: Predictor) -> BoxPredictor:
    boxes = BoxPredictor(BrightBoxNet())
    boxes.set_volume(pred.volume)
    return boxes


@pytest.mark.parametrize("order", [("seqpatch", "litemedsam", "unet"), ("litemedsam",)])
def test_litemedsam_gets_the_label_box_moved_with_the_clicks(spy, order):
    pred = bright_predictor()
    boxes = _boxes(pred)
    _, label = sphere_arrays()
    seen = []
    real = boxes.predict_many
    boxes.predict_many = lambda b: seen.append(len(b)) or real(b)
    ticks = []
    res = click_robustness(pred, 6, (32.0, 30.0), grid=5, step_mm=3.0, methods=order, label_slice=label[6],
                           boxes=boxes, chunk=10, progress=lambda f, t: ticks.append((f, t)))  # fmt: skip
    assert res.methods == list(order)  # the caller's order, though LiteMedSAM runs last
    start = box_around(label[6], 6)
    assert res.prompt == {"box": start.as_list(), "source": "label"}
    assert boxes.encoder_runs == 1 and seen == [10, 10, 5]  # one encoder pass, the decoder per chunk
    assert spy == [(m, n) for m in order if m != "litemedsam" for n in (10, 10, 5)]
    assert any("10 of 25 boxes done" in t for _, t in ticks) and ticks[-1][0] == 1.0
    # each cell: the label's box moved by the cell's offset (3 mm = 3 px here), scored against the label
    for i, dy in enumerate((-6, -3, 0, 3, 6)):
        for j, dx in enumerate((-6, -3, 0, 3, 6)):
            want = boxes.predict(shift_box(start, dy, dx, (64, 64)).as_list()).mask
            assert res.dice["litemedsam"][i][j] == pytest.approx(dice(want, label[6]))
    assert res.dice["litemedsam"][2][2] > 0.95  # BrightBoxNet finds the ball in its box
    assert res.grids_mm["litemedsam"] == [[0.25] * 5] * 5  # 64 px of 1 mm in 256 px
    assert res.seconds["litemedsam"] > 0
    assert set(json.loads(json.dumps(res.as_dict()))) == KEYS | {"prompt"}
    table = robustness_table(res)
    assert f"**litemedsam** (mean Dice {res.mean('litemedsam'):.3f}" in table and "from label" in table
    titles = [ax.get_title() for ax in robustness_figure(res).axes if ax.get_title()]
    assert len(titles) == len(order) and titles[order.index("litemedsam")].startswith("litemedsam: mean Dice")


def test_without_a_label_litemedsams_box_is_seqpatchs_mask_plus_the_margin(spy):
    pred = bright_predictor()
    centre = pred.predict_many(6, [(32.0, 30.0)], "seqpatch")[0].mask
    spy.clear()
    res = click_robustness(pred, 6, (32.0, 30.0), grid=3, step_mm=3.0, methods=("litemedsam",), boxes=_boxes(pred))
    assert spy == [("seqpatch", 1)]  # SeqPatch's mask at the click, for the box only
    assert res.prompt == {"box": box_around(centre, 6, SEQPATCH_MARGIN_PX).as_list(), "source": "seqpatch"}
    assert res.reference == "self" and res.dice["litemedsam"][1][1] == 1.0
    # a box given by the caller is taken as it is
    given = click_robustness(pred, 6, (32.0, 30.0), grid=3, methods=("litemedsam",), boxes=_boxes(pred),
                             box=[6, 20, 20, 44, 44], box_source="unet")  # fmt: skip
    assert given.prompt == {"box": [6, 20, 20, 44, 44], "source": "unet"}


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({}, "not loaded"),
        ({"boxes": "loaded", "box": [5, 20, 20, 44, 44]}, "on slice 5"),
        ({"boxes": "loaded", "box": [6, 20, 20, 20, 44]}, "no area"),
    ],
)
def test_litemedsam_needs_its_model_and_a_box_on_the_slice(spy, options, says):
    pred = bright_predictor()
    if options.get("boxes") == "loaded":
        options = {**options, "boxes": _boxes(pred)}
    with pytest.raises(InputError, match=says):
        click_robustness(pred, 6, (32.0, 30.0), grid=3, methods=("unet", "litemedsam"), **options)
    assert spy == []  # refused before any network ran


@pytest.mark.slow
def test_cli_with_litemedsam(tmp_path, capsys, monkeypatch):
    import seqpatch_core.inference.boxes as inference_boxes

    monkeypatch.setattr(inference_boxes, "load_litemedsam", lambda *a, **k: BrightBoxNet())
    image, label = write_case(tmp_path, shape=(3, 40, 40), centre=(1.0, 20.0, 20.0), radius_mm=8.0)
    w = write_checkpoints(tmp_path)
    out = tmp_path / "rob.json"
    rc = main(["robustness", str(image), "--label", str(label), "--slice", "1", "--grid", "3", "--methods",
               "unet,litemedsam", "--weights-seqpatch", str(w["seqpatch"]), "--weights-unet", str(w["unet"]),
               "--device", "cpu", "--json", str(out)])  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    assert list(res["dice"]) == ["unet", "litemedsam"] and res["prompt"]["source"] == "label"
    assert "**litemedsam**" in capsys.readouterr().out
