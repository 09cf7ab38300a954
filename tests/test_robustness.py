"""Tests of seqpatch_core.evaluation.robustness and the ``robustness`` command."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from helpers import BrightNet, bright_predictor, sphere_arrays, write_case, write_checkpoints

from seqpatch_core.base.errors import InputError
from seqpatch_core.cli.main import main
from seqpatch_core.evaluation.robustness import RobustnessMap, click_robustness, robustness_figure, robustness_table
from seqpatch_core.images.volume import volume_from_array
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
    assert set(json.loads(json.dumps(asdict(res)))) == KEYS


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
        offsets_mm=[-3.0, 0.0, 3.0], dice={"seqpatch": grid}, grids_mm={"seqpatch": grid},
        outside=[[False] * 3 for _ in range(3)], reference="label", point_yx=(10.0, 10.0), slice=0,
        window="soft", seconds={},
    )  # fmt: skip
    fig = robustness_figure(res, to_display=orientation(direction).slices.to_display)
    shown = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(shown), turned(np.asarray(grid)))
    assert "on screen" in fig.axes[0].get_xlabel()
