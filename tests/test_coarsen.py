"""The second pass on a coarser grid for large objects (predictor.Coarsen) and ``calibrate``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import BrightNet, sphere_arrays, write_checkpoints

from seqpatch_core.cli.main import main
from seqpatch_core.evaluation.calibration import coarsen_sweep, markdown_sweep
from seqpatch_core.evaluation.evaluate import evaluate_synthetic
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference.predictor import Predictor, segment_adaptive, segment_resampled, segment_working
from seqpatch_core.method import rays
from seqpatch_core.method.models import build_model, load_checkpoint
from seqpatch_core.method.run import Coarsen, equivalent_radius_px, pick_device

#: A 10-mm ball on 1-mm pixels: equivalent radius 10 working px on its middle slice.
BALL = {"shape": (3, 64, 64), "centre": (1.0, 32.0, 30.0), "radius_mm": 10.0, "spacing_zyx": (4.0, 1.0, 1.0)}


def _bright(arch: str, radius_px: float | None, spacing_mm: float = 1.6) -> BrightNet:
    """BrightNet with a rule; 1.6 mm by default, so that the 1.0-mm CT grids below take it."""
    net = BrightNet(arch)
    if radius_px is not None:
        net.record["coarsen"] = {"radius_px": radius_px, "spacing_mm": spacing_mm}
    return net


@pytest.mark.parametrize(("area", "spacing", "working", "expected"), [(100, 1.0, 1.0, 5.64), (100, 0.5, 1.0, 2.82),
                                                                      (400, 0.625, 0.625, 11.28)])  # fmt: skip
def test_equivalent_radius_in_working_pixels(area, spacing, working, expected):
    mask = np.zeros((50, 50), bool)
    mask.flat[:area] = True
    assert equivalent_radius_px(mask, (spacing, spacing), working) == pytest.approx(expected, abs=0.01)


def test_rule_comes_from_the_record():
    assert Coarsen.of(BrightNet("seqpatch")) is None
    net = _bright("seqpatch", None)
    net.record["coarsen"] = None  # calibrate stores None when one pass is best
    assert Coarsen.of(net) is None
    assert Coarsen.of(_bright("unet", 24.0, 2.0)) == Coarsen(24.0, 2.0)
    assert Coarsen(24.0).spacing_mm == 1.0
    assert Coarsen(24.0).applies(0.625) and not Coarsen(24.0).applies(1.0)


@pytest.mark.parametrize(("radius_px", "redone"), [(5.0, True), (15.0, False)])
@pytest.mark.parametrize("arch", ["seqpatch", "unet"])
def test_predictor_redoes_large_objects_on_the_coarser_grid(arch, radius_px, redone):
    image, label = sphere_arrays(**BALL)
    vol = volume_from_array(image, spacing=BALL["spacing_zyx"], modality="CT")
    pred = Predictor({arch: _bright(arch, radius_px)}, device="cpu")
    pred.set_volume(vol)
    r = pred.predict((1, 32, 30), method=arch)
    assert r.coarsened is redone
    assert r.working_spacing == pytest.approx(1.6 if redone else 1.0)
    assert ("first_pass_ms" in r.timings) is redone
    # the result is that pass's: the patch centres lie on the coarser grid's stride
    if arch == "seqpatch":
        step = np.linalg.norm(r.centres[0, 1] - r.centres[0, 0])
        assert step == pytest.approx(4.0 * r.working_spacing, rel=1e-3)
    d = 2 * np.logical_and(r.mask, label[1]).sum() / (r.mask.sum() + label[1].sum())
    assert d > 0.9  # the ball at either resolution
    # --single-pass (Predictor(coarsen=False)) and predict_many(coarsen=False) keep one pass
    one = Predictor(pred.models, device="cpu", coarsen=False)
    one.set_volume(vol)
    assert not one.predict((1, 32, 30), method=arch).coarsened
    other = one.session()  # a new session keeps the setting
    other.set_volume(vol)
    assert not other.predict((1, 32, 30), method=arch).coarsened
    assert not pred.predict_many(1, [(32, 30)], arch, coarsen=False)[0].coarsened


def test_only_the_large_clicks_of_a_batch_are_redone():
    image, _ = sphere_arrays(**BALL)
    image[:, 55:59, 55:59] = 150  # a small object: 4 x 4 px, equivalent radius 2.3 px
    pred = Predictor({"seqpatch": _bright("seqpatch", 5.0)}, device="cpu")
    pred.set_volume(volume_from_array(image, spacing=BALL["spacing_zyx"], modality="CT"))
    res = pred.predict_many(1, [(32, 30), (56.5, 56.5)])
    assert 10 <= res[1].mask.sum() <= 20
    assert [r.coarsened for r in res] == [True, False]
    assert [r.working_spacing for r in res] == [pytest.approx(1.6), pytest.approx(1.0)]


def test_segment_adaptive_takes_the_coarse_mask_for_large_objects():
    yy, xx = np.mgrid[:96, :80]
    disc = (yy - 50.0) ** 2 + (xx - 37.0) ** 2 < 14.0**2
    bar = (np.abs(yy - 15.0) < 2) & (np.abs(xx - 40.0) < 3)  # a small object
    image = np.where(disc | bar, 0.9, 0.1).astype(np.float32)
    clicks = np.array([[50.0, 37.0], [15.0, 40.0]])
    cfg, cpu = rays.get_preset("ct"), pick_device("cpu")
    net = _bright("seqpatch", 8.0, 1.0)
    masks, redone = segment_adaptive(net, image, clicks, cfg, 0.625, cpu)
    assert redone == [True, False]
    coarse = segment_resampled(net, image, clicks[:1], cfg, 0.625, 1.0, cpu)[0]
    fine = segment_working(net, image, clicks[1:], cfg, cpu)[0]
    assert np.array_equal(masks[0], coarse) and np.array_equal(masks[1], fine)
    # no rule, or a grid already as coarse as the rule's: one pass
    _, redone = segment_adaptive(BrightNet("seqpatch"), image, clicks, cfg, 0.625, cpu)
    assert redone == [False, False]
    _, redone = segment_adaptive(net, image, clicks, cfg, 1.0, cpu)
    assert redone == [False, False]


@pytest.mark.parametrize(("modality", "redone"), [("CT", False), ("MR", True)])
def test_the_default_rule_redoes_mr_grids_at_the_ct_spacing(modality, redone):
    image, _ = sphere_arrays(**BALL)
    pred = Predictor({"unet": _bright("unet", 5.0, 1.0)}, device="cpu")
    pred.set_volume(volume_from_array(image, spacing=BALL["spacing_zyx"], modality=modality))
    r = pred.predict((1, 32, 30), method="unet")
    assert r.coarsened is redone
    assert r.working_spacing == pytest.approx(1.0 if redone or modality == "CT" else 0.625)


def test_evaluate_synthetic_applies_the_rule_unless_told_not_to():
    models = {"seqpatch": _bright("seqpatch", 0.0)}
    cpu = pick_device("cpu")
    with_rule = evaluate_synthetic(models, 2, seed=5, backgrounds=None, device=cpu)
    one = evaluate_synthetic(models, 2, seed=5, backgrounds=None, device=cpu, coarsen=False)
    redone = [r["coarsened"] for r in with_rule["rows"]]
    assert with_rule["summary"]["seqpatch"]["coarsened"] == sum(redone) > 0
    assert one["summary"]["seqpatch"]["coarsened"] == 0 and "one pass" in one["source"]


@pytest.mark.slow
def test_sweep_chooses_the_best_radius_and_never_equals_one_pass():
    models = {"seqpatch": BrightNet("seqpatch"), "unet": BrightNet("unet")}
    cpu = pick_device("cpu")
    sweep = coarsen_sweep(models, 4, seed=5, backgrounds=None, device=cpu, radii=[0.5, 1e6])
    one = evaluate_synthetic(models, 4, seed=5, backgrounds=None, device=cpu, coarsen=False)
    for name, e in sweep["methods"].items():
        radii = [row["radius_px"] for row in e["table"]]
        assert radii == [0.5, 1e6, math.inf]
        never = e["table"][-1]
        # only the 0.625-mm half can be redone (at 1.0 mm), and every BrightNet mask there is > 0.5 px
        assert never["redone"] == 0 and e["table"][0]["redone"] == 2
        assert len({row["dice_ct"] for row in e["table"]}) == 1
        assert never["dice"] == pytest.approx(one["summary"][name]["dice"]["mean"])
        assert e["table"][1]["dice"] == pytest.approx(never["dice"])  # nothing is that large
        best = max(row["dice"] for row in e["table"])
        chosen = next(row for row in e["table"] if row["radius_px"] == e["chosen"])
        assert chosen["dice"] == pytest.approx(best)
        if e["table"][0]["dice"] < best:  # ties go to the larger radius: fewer second passes
            assert e["chosen"] == math.inf
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
        if math.isinf(chosen):
            assert record["coarsen"] is None and rule is None
        else:
            assert rule == Coarsen(chosen, 1.0) and record["coarsen"]["chosen_on"].startswith("calibrate")
    readable = json.loads(ckpt["seqpatch"].with_suffix(".json").read_text())  # the JSON beside follows
    assert readable["training"] == {"seed": 1}
    assert readable["coarsen"] == load_checkpoint(ckpt["seqpatch"])[0]["coarsen"]
    assert not ckpt["unet"].with_suffix(".json").exists()


@pytest.mark.parametrize("bad", [["--radii", "a,b"], ["--radii", "-3"], ["--to-mm", "0.1"]])
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


@pytest.mark.parametrize("ignored", [["--single-pass"], ["--preset", "mr"], ["--window", "lung"]])
def test_calibrate_has_no_click_options_it_would_ignore(capsys, ignored):
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--synthetic", "1", "--backgrounds", "none", *ignored])
    assert exc.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
