"""Tests of seqpatch_core.evaluation and the ``evaluate`` command."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np
import pytest
from helpers import BrightNet, bright_predictor, sphere_arrays, write_case, write_checkpoints

from seqpatch_core.base.errors import InputError
from seqpatch_core.cli.main import main
from seqpatch_core.evaluation.evaluate import (
    METRICS,
    SIZE_BINS_MM,
    Row,
    evaluate_synthetic,
    evaluate_volume,
    markdown_paired,
    markdown_size_table,
    markdown_table,
    paired_comparison,
    parse_clicks,
    size_breakdown,
    slice_clicks,
    synthetic_set,
)
from seqpatch_core.inference.predictor import segment_slice
from seqpatch_core.method import rays
from seqpatch_core.method.run import pick_device

ROW_KEYS = {"method", "case", "z", "click", "click_kind", "grid_mm", "coarsened", *METRICS, "arvd"}


def test_parse_clicks():
    assert parse_clicks("centroid") == ("centroid", 1)
    assert parse_clicks(" Jitter:3 ") == ("jitter", 3)
    assert parse_clicks("inner:2") == ("inner", 2)
    for bad in ("jitter:0", "jitter:x", "inner", "inner:-1", "random", "centroid:2", ""):
        with pytest.raises(InputError):
            parse_clicks(bad)


@pytest.mark.parametrize(
    ("mode", "reach", "slack_px", "beyond"),
    [
        ("jitter", 0.2, 1e-9, 0.1),  # up to 20 % of the equivalent radius from the centre
        ("inner", 0.5, 1.0, 0.2),  # up to half way to the boundary (a disc's: its radius, to the pixel)
    ],
)
def test_moved_clicks_stay_inside_and_within_their_reach(mode, reach, slack_px, beyond):
    """The moved clicks of ``jitter:N`` and ``inner:N``: inside the object, within the mode's reach of the
    centre (fractions of the radius), and spread (most of them beyond ``beyond``); the centre first."""
    _, label = sphere_arrays()
    lab = label[6]
    radius = math.sqrt(lab.sum() / math.pi)
    clicks = slice_clicks(lab, mode, 200, np.random.default_rng(0))
    assert len(clicks) == 201
    dist = np.hypot(*(np.array(clicks[1:]) - clicks[0]).T)
    assert dist.max() <= reach * radius + slack_px and np.mean(dist > beyond * radius) > 0.3
    assert all(lab[round(y), round(x)] for y, x in clicks)


#: A ball on 3 slices (4 mm slices, 8 mm radius): few network runs.
SMALL = {"shape": (5, 48, 48), "centre": (2.0, 24.0, 24.0), "radius_mm": 8.0, "spacing_zyx": (4.0, 1.0, 1.0)}


@pytest.mark.parametrize("mode", ["jitter", "inner"])
def test_evaluate_volume_with_a_predictable_network(mode):
    pred = bright_predictor(**SMALL)
    _, label = sphere_arrays(**SMALL)
    res = evaluate_volume(pred, label, ["seqpatch", "unet"], clicks=f"{mode}:2", seed=3)
    labelled = [int(z) for z in np.flatnonzero(label.any(axis=(1, 2)))]
    assert res["slices"] == labelled
    assert len(res["rows"]) == 2 * len(labelled) * 3  # methods x slices x (centre + 2 moved)
    assert sorted({r.click_kind for r in res["rows"]}) == ["centre", mode]
    assert ROW_KEYS <= set(asdict(res["rows"][0]))
    assert all(r.cd_z == 0.0 and r.grid_mm == 1.0 for r in res["rows"])
    for method in ("seqpatch", "unet"):
        s = res["summary"][method]
        assert s["n"] == 2 * len(labelled) and s["slices"] == len(labelled)
        assert set(METRICS) <= set(s)
        assert s["dice"]["mean"] > 0.8  # BrightNet finds the bright ball
        assert abs(s["dice_lost"]["mean"]) < 0.1
    again = evaluate_volume(pred, label, ["seqpatch"], clicks=f"{mode}:2", seed=3)
    first = [r.click for r in res["rows"] if r.method == "seqpatch"]
    assert [r.click for r in again["rows"]] == first  # seeded
    table = markdown_table(res["summary"])
    assert table.count("\n") == 3 and "Dice lost" in table and "±" in table
    json.dumps(res, default=asdict)  # plain types and rows


def test_evaluate_synthetic_shares_the_working_grid_path():
    models = {"seqpatch": BrightNet("seqpatch"), "unet": BrightNet("unet")}
    res = evaluate_synthetic(models, 2, seed=5, backgrounds=None, device=pick_device("cpu"))
    assert len(res["rows"]) == 4
    assert {r.preset for r in res["rows"]} == {"ct", "promise12"}
    assert {r.spacing_mm for r in res["rows"]} == {1.0, 0.625}
    assert set(res["summary"]) == {"seqpatch", "unet"}


@pytest.mark.parametrize("working_spacing", [1.0, 0.625, 0.39])
def test_segment_slice_maps_masks_back_onto_the_slice(working_spacing):
    yy, xx = np.mgrid[:96, :80]
    disc = (yy - 50.0) ** 2 + (xx - 37.0) ** 2 < 14.0**2
    image = np.where(disc, 0.9, 0.1).astype(np.float32)
    clicks = np.array([[50.0, 37.0], [58.0, 30.0]])  # the centre, and off-centre
    cfg, cpu = rays.get_preset("ct"), pick_device("cpu")
    res = segment_slice(BrightNet("seqpatch"), image, clicks, cfg, 0.625, cpu, working_spacing=working_spacing)
    assert [r.mask.shape for r in res] == [image.shape] * 2 and res[0].mask.dtype == bool
    for r in res:  # the disc, at any working resolution
        assert r.working_spacing == working_spacing
        assert 2 * np.logical_and(r.mask, disc).sum() / (r.mask.sum() + disc.sum()) > 0.95


def test_evaluate_synthetic_from_another_first_grid():
    models = {"seqpatch": BrightNet("seqpatch")}
    own = evaluate_synthetic(models, 2, seed=5, backgrounds=None, device=pick_device("cpu"))
    coarse = evaluate_synthetic(models, 2, seed=5, backgrounds=None, device=pick_device("cpu"), working_spacing=1.0)
    assert "first grid 1.0 mm" in coarse["source"] and "first grid the slice's" in own["source"]
    # the 1.0-mm slice is not resampled; the 0.625-mm one is, and is scored on its own grid
    assert own["rows"][0].dice == pytest.approx(coarse["rows"][0].dice)
    assert [r.spacing_mm for r in coarse["rows"]] == [1.0, 0.625]
    assert [r.grid_mm for r in coarse["rows"]] == [1.0, 1.0]
    # each half on its own: one slice each, the same Dice as its row
    assert list(coarse["by_preset"]) == ["ct", "promise12"]
    for row in coarse["rows"]:
        part = coarse["by_preset"][row.preset]
        assert part["summary"]["seqpatch"]["n"] == 1 and sum(b["n"] for b in part["by_size"]) == 1
        assert part["summary"]["seqpatch"]["dice"]["mean"] == pytest.approx(row.dice)
    with pytest.raises(InputError, match="working-spacing"):
        evaluate_synthetic(models, 2, seed=5, backgrounds=None, device=pick_device("cpu"), working_spacing=0.0)


def test_the_synthetic_set_covers_every_size_bin():
    """An equal share of slices per radius range: every bin from 0 to >= 60 mm has slices, on both
    grids, so each can be given an interval."""
    val = synthetic_set(24, seed=3, backgrounds=None)
    assert len(val) == 24 and {p for _, p in val} == {"ct", "promise12"}
    radii = [math.sqrt(s.label.sum() / math.pi) * s.spacing_mm for s, _ in val]
    bins = {max(lo for lo in SIZE_BINS_MM[:-1] if r >= lo) for r in radii}
    assert bins == set(SIZE_BINS_MM[:-1])
    assert all(s.image.shape[0] >= 2 * r / s.spacing_mm for (s, _), r in zip(val, radii, strict=True))


def test_cli_real_case(tmp_path, capsys):
    image, label = write_case(tmp_path, **SMALL)  # both random networks run 3 times
    w = write_checkpoints(tmp_path)
    out = tmp_path / "ev.json"
    weights = ["--weights-seqpatch", str(w["seqpatch"]), "--weights-unet", str(w["unet"])]
    rc = main(["evaluate", "--image", str(image), "--label", str(label), *weights, "--preset", "mr",
               "--device", "cpu", "--json", str(out)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "| seqpatch |" in stdout and "| unet |" in stdout
    assert "By object size" in stdout and "| seqpatch Dice | seqpatch area ratio |" in stdout
    assert "- seqpatch − unet (centre clicks, 3 slices): Dice" in stdout
    res = json.loads(out.read_text())
    assert [(e["a"], e["b"], e["n"]) for e in res["paired"]] == [("seqpatch", "unet", 3)]
    assert sum(e["n"] for e in res["by_size"]) == 3
    assert res["slices"] == [1, 2, 3]
    assert len(res["rows"]) == 6 and ROW_KEYS <= set(res["rows"][0])  # rows written as their fields
    for method in ("seqpatch", "unet"):
        assert res["summary"][method]["n"] == 3
        assert 0.0 <= res["summary"][method]["dice"]["mean"] <= 1.0


def test_cli_synthetic(tmp_path, capsys):
    w = write_checkpoints(tmp_path)
    out = tmp_path / "syn.json"
    rc = main(["evaluate", "--synthetic", "2", "--seed", "1", "--backgrounds", "none", "--methods",
               "seqpatch", "--weights-seqpatch", str(w["seqpatch"]), "--device", "cpu", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert len(res["rows"]) == 2 and list(res["summary"]) == ["seqpatch"]
    assert res["paired"] == []  # one method: nothing to compare
    stdout = capsys.readouterr().out
    assert "Ray preset ct only" in stdout and "Ray preset promise12 only" in stdout


def test_cli_missing_weights_and_bad_options(tmp_path, capsys):
    image, label = write_case(tmp_path, shape=(3, 32, 32), centre=(1.0, 16.0, 16.0), radius_mm=6.0)
    missing = tmp_path / "nope.safetensors"
    rc = main(["evaluate", "--image", str(image), "--label", str(label), "--methods", "seqpatch",
               "--weights-seqpatch", str(missing), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and str(missing) in err
    assert main(["evaluate", "--synthetic", "2", "--clicks", "wobble"]) == 2
    assert main(["evaluate", "--image", str(image), "--synthetic", "2"]) == 2
    assert main(["evaluate", "--image", str(image), "--methods", "seqpatch"]) == 2  # no --label
    assert main(["evaluate", "--image", str(image), "--label", str(label), "--working-spacing", "1.0"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--synthetic", "2", "--methods", "seqpatch,nonsense"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "radius_mm,ratio,bin_lo",
    [(3.0, 4.0, 0.0), (7.0, 1.0, 5.0), (12.0, 0.5, 10.0), (30.0, 0.25, 20.0), (50.0, 0.5, 40.0), (70.0, 0.3, 60.0)],
)
def test_size_breakdown_bins_by_equivalent_radius(radius_mm, ratio, bin_lo):
    area = math.pi * radius_mm**2

    def row(method, kind, dice, ref, pred):
        return _row(method, 0, kind, dice, size_ref=ref, size_pred=pred)

    rows = [
        row("a", "centre", 0.5, area, ratio * area),
        row("a", "jitter", 0.1, area, area),  # centroid mode leaves jittered clicks out
        row("b", "centre", 0.9, area, area),
        row("b", "centre", 0.0, 0.0, 5.0),  # an empty reference has no size
    ]
    (entry,) = size_breakdown(rows, ["a", "b"])
    assert entry["lo"] == bin_lo and entry["n"] == 1
    assert entry["a"] == {"dice": 0.5, "ci95": [0.5, 0.5], "area_ratio": pytest.approx(ratio), "coarsened": 0,
                          "grid_mm": 1.0}
    assert entry["b"]["area_ratio"] == pytest.approx(1.0)
    table = markdown_size_table([entry], ["a", "b"])
    assert f"| {ratio:.2f} |" in table and table.count("\n") == 2


def _row(method, case, kind, dice, size_ref=1.0, size_pred=1.0, grid_mm=1.0):
    """A :class:`Row` of these values (the other metrics 0)."""
    return Row(method=method, case=case, z=0, click=(0.0, 0.0), click_kind=kind, grid_mm=grid_mm, coarsened=False,
               dice=dice, cd_x=0.0, cd_y=0.0, cd_z=0.0, hd95=0.0, abd=0.0, arvd=0.0, size_pred=size_pred,
               size_ref=size_ref)  # fmt: skip


def _pair_rows(dice_a, dice_b, kind="centre", clicks_per_slice=1):
    rows = []
    for i, (da, db) in enumerate(zip(dice_a, dice_b, strict=True)):
        for _ in range(clicks_per_slice):
            rows += [_row("a", i, kind, da), _row("b", i, kind, db)]
    return rows


def test_size_bins_give_intervals_and_paired_differences():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.6, 0.9, 20), rng.uniform(0.5, 0.8, 20)
    area = math.pi * 45.0**2  # the 40-60 mm bin
    rows = [_row("a", i, "centre", da, area, area) for i, da in enumerate(a)]
    rows += [_row("b", i, "centre", db, area, area, grid_mm=2.0) for i, db in enumerate(b)]
    (entry,) = size_breakdown(rows, ["a", "b"])
    assert entry["lo"] == 40.0 and entry["n"] == 20 and entry["b"]["grid_mm"] == 2.0
    lo, hi = entry["a"]["ci95"]
    assert lo < a.mean() < hi and hi - lo < 0.2
    (pair,) = entry["paired"]
    assert pair["n"] == 20 and pair["mean"] == pytest.approx(a.mean() - b.mean())
    table = markdown_size_table([entry], ["a", "b"])
    assert f"{a.mean():.3f} ({lo:.3f}–{hi:.3f})" in table and f"{pair['mean']:+.3f}" in table


@pytest.mark.parametrize("shift", [0.1, -0.1])
def test_paired_comparison_finds_a_consistent_difference(shift):
    rng = np.random.default_rng(0)
    b = rng.uniform(0.3, 0.8, 30)
    a = b + shift + rng.normal(0, 0.02, 30)
    (e,) = paired_comparison(_pair_rows(a, b), ["a", "b"])
    assert (e["a"], e["b"], e["clicks"], e["n"]) == ("a", "b", "centre", 30)
    assert e["mean"] == pytest.approx(shift, abs=0.01)
    lo, hi = e["ci95"]
    assert lo < e["mean"] < hi and (lo > 0 if shift > 0 else hi < 0)
    assert e["wilcoxon_p"] < 1e-4
    assert (e["wins"] if shift > 0 else e["losses"]) == 30
    line = markdown_paired([e])
    assert f"Dice {shift:+.3f}" in line or f"Dice {e['mean']:+.3f}" in line
    assert "ahead on" in line and line.count("\n") == 0


def test_paired_comparison_of_noise_straddles_zero():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.3, 0.8, 40)
    a = b + rng.normal(0, 0.05, 40)
    (e,) = paired_comparison(_pair_rows(a, b), ["a", "b"])
    lo, hi = e["ci95"]
    assert lo < 0 < hi and e["wilcoxon_p"] > 0.05


@pytest.mark.parametrize("mode", ["jitter", "inner"])
def test_paired_comparison_of_equal_methods_and_of_moved_clicks(mode):
    same = [0.5, 0.7, 0.9]
    (e,) = paired_comparison(_pair_rows(same, same), ["a", "b"])
    assert e["mean"] == 0 and e["ci95"] == [0, 0] and e["ties"] == 3 and e["wilcoxon_p"] == 1.0
    # with moved clicks the comparison covers them too, averaged per slice first
    quarters = [0.25, 0.5, 0.75]  # exact in binary, so all differences are equal
    rows = _pair_rows(same, same) + _pair_rows([0.5, 0.75, 1.0], quarters, kind=mode, clicks_per_slice=2)
    centre, moved = paired_comparison(rows, ["a", "b"], mode=mode)
    assert centre["clicks"] == "centre" and centre["mean"] == 0
    assert moved["clicks"] == mode and moved["n"] == 3 and moved["wins"] == 3
    assert moved["mean"] == 0.25 and moved["ci95"] == [0.25, 0.25] and moved["wilcoxon_p"] == pytest.approx(0.25)
    assert paired_comparison(rows, ["a"]) == []
