"""The scale rule: the pyramid of working grids for large objects (run.Coarsen) and ``calibrate``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import BrightNet, sphere_arrays, write_checkpoints

from seqpatch_core.base.metrics import dice
from seqpatch_core.cli.main import main
from seqpatch_core.evaluation.calibration import coarsen_sweep, markdown_sweep, replay
from seqpatch_core.evaluation.evaluate import evaluate_synthetic
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference.predictor import Predictor, segment_slice
from seqpatch_core.method.models import build_model, load_checkpoint
from seqpatch_core.method.run import Coarsen, WorkingResult, equivalent_radius_px, pick_device

#: A 10-mm ball on 1-mm pixels: equivalent radius 10 working px on its middle slice at 1.0 mm.
BALL = {"shape": (3, 64, 64), "centre": (1.0, 32.0, 30.0), "radius_mm": 10.0, "spacing_zyx": (4.0, 1.0, 1.0)}


def _bright(arch: str, radius_px: float | None) -> BrightNet:
    """BrightNet with the rule ``radius_px`` in its record (None: none)."""
    net = BrightNet(arch)
    if radius_px is not None:
        net.record["coarsen"] = {"radius_px": radius_px}
    return net


@pytest.mark.parametrize(("area", "spacing", "working", "expected"), [(100, 1.0, 1.0, 5.64), (100, 0.5, 1.0, 2.82),
                                                                      (400, 0.625, 0.625, 11.28)])  # fmt: skip
def test_equivalent_radius_in_working_pixels(area, spacing, working, expected):
    mask = np.zeros((50, 50), bool)
    mask.flat[:area] = True
    assert equivalent_radius_px(mask, (spacing, spacing), working) == pytest.approx(expected, abs=0.01)


def test_rule_comes_from_the_record_and_the_pyramid_from_the_first_grid():
    assert Coarsen.of(BrightNet("seqpatch")) is None
    net = _bright("seqpatch", None)
    net.record["coarsen"] = None  # calibrate stores None when the first grid is best
    assert Coarsen.of(net) is None
    assert Coarsen.of(_bright("unet", 24.0)) == Coarsen(24.0)
    assert Coarsen.grids(1.0) == (1.0, 2.0, 4.0, 8.0)  # CT
    assert Coarsen.grids(0.625) == (0.625, 1.0, 2.0, 4.0, 8.0)  # MR
    assert Coarsen.grids(0.8) == (0.8, 1.0, 2.0, 4.0, 8.0) and Coarsen.grids(10.0) == (10.0,)


@pytest.mark.parametrize(("radius_px", "grids"), [(15.0, (1.0,)), (7.0, (1.0, 2.0)), (4.0, (1.0, 2.0, 4.0))])
@pytest.mark.parametrize("arch", ["seqpatch", "unet"])
def test_a_large_object_climbs_the_pyramid_until_its_mask_fits(arch, radius_px, grids):
    image, label = sphere_arrays(**BALL)
    vol = volume_from_array(image, spacing=BALL["spacing_zyx"], modality="CT")
    pred = Predictor({arch: _bright(arch, radius_px)}, device="cpu")
    pred.set_volume(vol)
    r = pred.predict((1, 32, 30), method=arch)
    assert r.grids_mm == grids and r.working_spacing == grids[-1] and r.coarsened is (len(grids) > 1)
    assert ("coarser_ms" in r.timings) is r.coarsened
    # the result is the last grid's pass: the patch centres lie on that grid's stride
    if arch == "seqpatch":
        step = np.linalg.norm(r.centres[0, 1] - r.centres[0, 0])
        assert step == pytest.approx(4.0 * r.working_spacing, rel=1e-3)
    assert dice(r.mask, label[1]) > 0.85  # the ball at every resolution, mapped back smoothly
    # --no-coarsen (Predictor(coarsen=False)) and predict_many(coarsen=False) keep the first grid
    one = Predictor(pred.models, device="cpu", coarsen=False)
    one.set_volume(vol)
    assert one.predict((1, 32, 30), method=arch).grids_mm == (1.0,)
    other = one.session()  # a new session keeps the setting
    other.set_volume(vol)
    assert not other.predict((1, 32, 30), method=arch).coarsened
    assert not pred.predict_many(1, [(32, 30)], arch, coarsen=False)[0].coarsened


@pytest.mark.parametrize(("radius_px", "grids"), [(15.0, (1.0,)), (7.0, (1.0, 2.0)), (4.0, (1.0, 2.0, 4.0))])
def test_predict_steps_shows_each_grid_and_ends_with_predicts_answer(radius_px, grids):
    """One answer per grid tried, only the last one final, and that one is predict's."""
    image, _ = sphere_arrays(**BALL)
    vol = volume_from_array(image, spacing=BALL["spacing_zyx"], modality="CT")
    pred = Predictor({"seqpatch": _bright("seqpatch", radius_px)}, device="cpu")
    pred.set_volume(vol)
    steps = list(pred.predict_steps((1, 32, 30)))
    assert [r.grids_mm for r, _ in steps] == [grids[: i + 1] for i in range(len(grids))]
    assert [final for _, final in steps] == [False] * (len(grids) - 1) + [True]
    last, one = steps[-1][0], pred.predict((1, 32, 30))
    assert last.working_spacing == one.working_spacing and np.array_equal(last.mask, one.mask)


def test_only_the_large_clicks_of_a_batch_climb():
    image, _ = sphere_arrays(**BALL)
    image[:, 55:59, 55:59] = 150  # a small object: 4 x 4 px, equivalent radius 2.3 px
    pred = Predictor({"seqpatch": _bright("seqpatch", 6.0)}, device="cpu")
    pred.set_volume(volume_from_array(image, spacing=BALL["spacing_zyx"], modality="CT"))
    alone = pred.predict((1, 56.5, 56.5))
    res = pred.predict_many(1, [(32, 30), (56.5, 56.5)])
    assert 10 <= res[1].mask.sum() <= 20
    assert [r.grids_mm for r in res] == [(1.0, 2.0), (1.0,)]
    # the small object's answer is exactly what it is alone: the first grid's
    np.testing.assert_array_equal(res[1].mask, alone.mask)
    np.testing.assert_array_equal(res[1].likelihood, alone.likelihood)


@pytest.mark.parametrize(("growth", "answer"), [(None, 2.0), (1.3, 1.0)])
def test_an_object_as_wide_on_the_coarser_grid_keeps_the_finer_answer(growth, answer):
    """The ball is 10 mm wide on every grid (BrightNet sees all of it): with ``growth`` the 2-mm pass
    finds it no wider, so the 1-mm answer stands and the climb stops there."""
    image, label = sphere_arrays(**BALL)
    net = BrightNet("seqpatch")
    net.record["coarsen"] = {"radius_px": 7.0, "growth": growth}
    pred = Predictor({"seqpatch": net}, device="cpu")
    pred.set_volume(volume_from_array(image, spacing=BALL["spacing_zyx"], modality="CT"))
    r = pred.predict((1, 32, 30))
    assert r.grids_mm == (1.0, 2.0) and r.working_spacing == answer and r.coarsened is (answer > 1.0)
    assert r.timings["coarser_ms"] > 0  # the 2-mm pass counts in the click's time either way
    assert dice(r.mask, label[1]) > 0.85


def test_a_growing_answer_climbs_on():
    """A network that answers a disc of 12 working px wherever it is (a blob inside an organ larger
    than its rays): 12, 24, 48 mm on the 1, 2, 4 mm grids grow, so the climb goes on to the
    pyramid's end, with or without ``growth``; the answer is the last grid's."""

    def blob_runner(method, img_w, clicks_w, cfg, device, dtype):
        yy, xx = np.mgrid[: img_w.shape[0], : img_w.shape[1]]
        out = []
        for cy, cx in clicks_w:
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < 12.0**2).astype(np.float32)
            out.append(WorkingResult(disc, np.ones_like(disc), np.zeros((1, 1, 1, 1), np.float32),
                                     np.zeros((1, 1, 1, 1), np.float32), np.zeros((1, 1, 2))))  # fmt: skip
        return out

    net = BrightNet("unet")
    net.record["coarsen"] = {"radius_px": 10.0, "growth": 1.3}
    pred = Predictor({"unet": net}, device="cpu", runner=blob_runner)
    pred.set_slice(np.zeros((400, 400), np.float32), 1.0)
    r = pred.predict((0, 200, 200), method="unet")
    assert r.grids_mm == (1.0, 2.0, 4.0, 8.0) and r.working_spacing == 8.0
    assert equivalent_radius_px(r.mask, (1.0, 1.0), 1.0) == pytest.approx(96.0, rel=0.05)


@pytest.mark.parametrize(("modality", "grids"), [("CT", (1.0, 2.0)), ("MR", (0.625, 1.0, 2.0))])
def test_mr_starts_finer_and_joins_the_ct_grids(modality, grids):
    image, _ = sphere_arrays(**BALL)
    pred = Predictor({"unet": _bright("unet", 8.0)}, device="cpu")
    pred.set_volume(volume_from_array(image, spacing=BALL["spacing_zyx"], modality=modality))
    assert pred.predict((1, 32, 30), method="unet").grids_mm == grids


def test_a_coarse_answer_is_mapped_back_smoothly_not_in_blocks():
    """The likelihood of an 8-mm grid is resampled onto the 1-mm slice and thresholded there: the
    mask follows the disc, and its edge is not the 8 x 8 staircase of nearest-neighbour steps."""
    yy, xx = np.mgrid[:240, :240]
    disc = (yy - 119.0) ** 2 + (xx - 121.0) ** 2 < 70.0**2
    image = np.where(disc, 0.9, 0.1).astype(np.float32)
    (r,) = segment_slice(_bright("unet", 4.0), image, [[119.0, 121.0]], "ct", 1.0, pick_device("cpu"))
    assert r.grids_mm == (1.0, 2.0, 4.0, 8.0)
    assert dice(r.mask, disc) > 0.97
    blocks = r.mask[:232, :232].reshape(29, 8, 29, 8).transpose(0, 2, 1, 3).reshape(29, 29, 64)
    mixed = blocks.any(-1) & ~blocks.all(-1)
    assert mixed.sum() > 20  # the edge runs through the coarse cells


def test_evaluate_synthetic_applies_the_rule_unless_told_not_to():
    models = {"seqpatch": _bright("seqpatch", 0.0)}
    cpu = pick_device("cpu")
    with_rule = evaluate_synthetic(models, 2, seed=5, backgrounds=None, device=cpu)
    one = evaluate_synthetic(models, 2, seed=5, backgrounds=None, device=cpu, coarsen=False)
    assert all(r.grid_mm > r.spacing_mm for r in with_rule["rows"])  # every mask is "large"
    assert with_rule["summary"]["seqpatch"]["coarsened"] == 2 and "pyramid" in with_rule["source"]
    assert [r.grid_mm for r in one["rows"]] == [1.0, 0.625]
    assert one["summary"]["seqpatch"]["coarsened"] == 0 and "no pyramid" in one["source"]


@pytest.mark.parametrize(
    ("radius_px", "growth", "expected"),
    [
        (math.inf, None, (0.5, 0, 1)),
        (20.0, None, (0.8, 1, 2)),
        (10.0, None, (0.7, 2, 3)),
        (1.0, None, (0.7, 2, 3)),  # the pyramid ends
        (10.0, 1.5, (0.5, 0, 2)),  # 30 px at 1 mm, 15 px at 2 mm: as wide; the finer answer stands
        (10.0, 0.9, (0.7, 2, 3)),  # a growth under 1 keeps every climb
    ],
)
def test_replay_is_the_predictors_rule(radius_px, growth, expected):
    levels = [(1.0, 30.0, 0.5), (2.0, 15.0, 0.8), (4.0, 7.0, 0.7)]
    assert replay(levels, radius_px, growth) == expected


def test_replay_climbs_while_the_object_grows():
    # a blob of 12 px inside an organ: 12 mm at 1 mm, 24 mm at 2 mm, 48 mm at 4 mm, then 50 mm at 8 mm
    levels = [(1.0, 12.0, 0.1), (2.0, 12.0, 0.3), (4.0, 12.0, 0.9), (8.0, 6.25, 0.8)]
    assert replay(levels, 10.0, 1.3) == (0.9, 2, 4)
    assert replay(levels, 10.0, None) == (0.8, 3, 4)


@pytest.mark.slow
def test_sweep_chooses_the_best_radius_and_never_equals_the_first_grid():
    models = {"seqpatch": BrightNet("seqpatch"), "unet": BrightNet("unet")}
    cpu = pick_device("cpu")
    sweep = coarsen_sweep(models, 4, seed=5, backgrounds=None, device=cpu, radii=[0.5, 1e6], growths=[None])
    one = evaluate_synthetic(models, 4, seed=5, backgrounds=None, device=cpu, coarsen=False)
    for name, e in sweep["methods"].items():
        radii = [row["radius_px"] for row in e["table"]]
        assert radii == [0.5, 1e6, math.inf]
        never = e["table"][-1]
        assert never["coarsened"] == 0 and e["table"][0]["coarsened"] == 4  # every BrightNet mask is > 0.5 px
        assert never["dice"] == pytest.approx(one["summary"][name]["dice"]["mean"])
        assert e["table"][1]["dice"] == pytest.approx(never["dice"])  # nothing is that large
        best = max(row["dice"] for row in e["table"])
        chosen = next(row for row in e["table"] if row["radius_px"] == e["chosen"]["radius_px"])
        assert chosen["dice"] == pytest.approx(best)
        if e["table"][0]["dice"] < best:  # ties go to fewer passes
            assert e["chosen"] == {"radius_px": math.inf, "growth": None}
    text = markdown_sweep(sweep)
    assert text.count(" * |") == 2 and "never" in text
    json.dumps(sweep, allow_nan=True)


@pytest.mark.slow
def test_calibrate_writes_the_rule_into_the_weights(tmp_path, capsys):
    ckpt = write_checkpoints(tmp_path)
    ckpt["seqpatch"].with_suffix(".json").write_text(json.dumps({"name": "seqpatch", "training": {"seed": 1}}))
    before = {k: load_checkpoint(p)[1] for k, p in ckpt.items()}
    out = tmp_path / "sweep.json"
    rc = main(["calibrate", "--synthetic", "2", "--seed", "3", "--backgrounds", "none", "--radii", "4,400",
               "--weights-seqpatch", str(ckpt["seqpatch"]), "--weights-unet", str(ckpt["unet"]), "--device", "cpu",
               "--write", "--json", str(out)])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "coarsen above" in printed and "unet" in printed
    sweep = json.loads(out.read_text())
    for name, path in ckpt.items():
        record, state = load_checkpoint(path)
        assert all(np.array_equal(state[k], before[name][k]) for k in state)  # the weights are untouched
        chosen = sweep["methods"][name]["chosen"]
        rule = Coarsen.of(build_model(name, checkpoint=path))
        if math.isinf(chosen["radius_px"]):
            assert record["coarsen"] is None and rule is None
        else:
            assert rule == Coarsen(chosen["radius_px"], chosen["growth"])
            assert record["coarsen"]["chosen_on"].startswith("calibrate")
    readable = json.loads(ckpt["seqpatch"].with_suffix(".json").read_text())  # the JSON beside follows
    assert readable["training"] == {"seed": 1}
    assert readable["coarsen"] == load_checkpoint(ckpt["seqpatch"])[0]["coarsen"]
    assert not ckpt["unet"].with_suffix(".json").exists()


@pytest.mark.parametrize("bad", [["--radii", "a,b"], ["--radii", "-3"], ["--growth", "x"], ["--growth", "0.5"]])
def test_calibrate_rejects_bad_options(tmp_path, capsys, bad):
    ckpt = write_checkpoints(tmp_path)
    rc = main(["calibrate", "--synthetic", "1", "--backgrounds", "none", "--weights-seqpatch", str(ckpt["seqpatch"]),
               "--weights-unet", str(ckpt["unet"]), "--device", "cpu", *bad])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_mr_volumes_default_to_the_promise12_preset():
    image, _ = sphere_arrays(**BALL)
    pred = Predictor({"unet": BrightNet("unet")}, device="cpu")
    pred.set_volume(volume_from_array(image, spacing=BALL["spacing_zyx"], modality="MR"))
    assert pred.default_preset() == "promise12"
    assert pred.predict((1, 32, 30), method="unet").preset == "promise12"


@pytest.mark.parametrize("ignored", [["--no-coarsen"], ["--preset", "mr"], ["--window", "lung"]])
def test_calibrate_has_no_click_options_it_would_ignore(capsys, ignored):
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--synthetic", "1", "--backgrounds", "none", *ignored])
    assert exc.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
