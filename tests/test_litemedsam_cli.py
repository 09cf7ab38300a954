"""LiteMedSAM on the command line and in the evaluation: box modes, rows beside the click methods
on real volumes, synthetic and atlas slices, and the one-line refusals."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import BrightNet, example
from test_atlases import tiny_atlas_source

from seqpatch_core.base.errors import InputError
from seqpatch_core.cli.main import main
from seqpatch_core.data import atlases
from seqpatch_core.data.synth import SynthSlice
from seqpatch_core.evaluation import boxes as box_evaluation
from seqpatch_core.evaluation import evaluate as evaluation
from seqpatch_core.images.io import read_volume
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference import boxes as inference_boxes
from seqpatch_core.inference.boxes import BoxPredictor
from seqpatch_core.inference.predictor import segment_slice
from seqpatch_core.method.box_prompt import to_255
from seqpatch_core.method.models.litemedsam import LITEMEDSAM_WEIGHTS, LiteMedSAM
from seqpatch_core.training.batches import SLICE_SIZE


class _FlatEncoder(LiteMedSAM):
    """Random weights and a constant embedding: the plumbing, without an encoder pass."""

    def encode(self, image):
        return torch.zeros((image.shape[0], 256, 64, 64))


def _case():
    """A small CT volume whose label is a square on slices 1 and 2."""
    arr = np.full((4, 40, 48), 40.0, dtype=np.float32)
    arr[0, 0, 0] = -1000.0
    label = np.zeros(arr.shape, dtype=np.uint8)
    label[1:3, 10:20, 12:30] = 1
    arr[label != 0] = 200.0
    return volume_from_array(arr, spacing=(3.0, 0.7, 0.7)), label


def test_box_modes():
    assert box_evaluation.parse_box_mode("label") == ("label", 0)
    assert box_evaluation.parse_box_mode("label+4") == ("label", 4)
    assert box_evaluation.parse_box_mode("from-seqpatch") == ("from-seqpatch", box_evaluation.SEQPATCH_MARGIN_PX)
    assert box_evaluation.parse_box_mode("From-SeqPatch+0") == ("from-seqpatch", 0)
    for bad in ("centroid", "label+", "label-2", "from-seqpatch+x", ""):
        with pytest.raises(InputError, match="unknown box mode"):
            box_evaluation.parse_box_mode(bad)


def test_label_boxes_give_one_row_per_labelled_slice():
    vol, label = _case()
    bp = BoxPredictor(_FlatEncoder().eval())
    bp.set_volume(vol)
    res = box_evaluation.evaluate_boxes(bp, label, "label+2")
    assert [p["z"] for p in res["prompts"]] == [1, 2]
    assert res["prompts"][0]["box"] == [1, 8, 10, 21, 31]  # the label's box, 2 px wider
    assert [r.method for r in res["rows"]] == ["litemedsam", "litemedsam"]
    assert res["rows"][0].grid_mm == round(48 * 0.7 / 256, 3)
    assert res["encoder_ms"] > 0 and res["decoder_ms"] > 0
    merged = box_evaluation.with_boxes(None, res, ["litemedsam"], vol.source)
    assert list(merged["summary"]) == ["litemedsam"] and merged["summary"]["litemedsam"]["n"] == 2
    assert merged["clicks"] == "centroid; litemedsam boxes: label+2"
    assert "encoder" in box_evaluation.markdown_boxes(merged["boxes"])


def test_from_seqpatch_takes_the_box_of_seqpatchs_mask():
    vol, label = _case()
    bp = BoxPredictor(_FlatEncoder().eval())
    bp.set_volume(vol)
    asked = []

    class Clicks:  # SeqPatch answering a smaller square than the label, and nothing on slice 2
        models = {"seqpatch": None}

        def predict_many(self, z, points, method, threshold):
            asked.append((z, tuple(np.round(points[0], 1)), method))
            mask = np.zeros(label.shape[1:], dtype=bool)
            if z == 1:
                mask[12:18, 15:25] = True
            return [SimpleNamespace(mask=mask)]

    res = box_evaluation.evaluate_boxes(bp, label, "from-seqpatch+3", clicks=Clicks())
    assert [a[2] for a in asked] == ["seqpatch", "seqpatch"]
    assert res["prompts"][0]["box"] == [1, 9, 12, 20, 27]
    assert res["prompts"][1]["box"] is None  # an empty SeqPatch mask: no box, an empty answer
    assert res["rows"][1].dice == 0.0
    with pytest.raises(InputError, match="needs the SeqPatch network"):
        box_evaluation.evaluate_boxes(bp, label, "from-seqpatch")


def _known_slice() -> SynthSlice:
    """A windowed 64 x 64 slice (1 mm) whose bright square (rows 20-35, columns 24-43) is what
    :class:`BrightNet` segments, and whose label is a smaller square inside it (rows 22-33, columns
    26-41): the label's box and SeqPatch's differ."""
    image = np.full((64, 64), 0.2, dtype=np.float32)
    image[20:36, 24:44] = 0.9
    label = np.zeros((64, 64), dtype=np.uint8)
    label[22:34, 26:42] = 1
    return SynthSlice(image, label, (27.5, 33.5), 1.0, "known square")


#: Each box mode's box [z, y0, x0, y1, x1] on :func:`_known_slice`.
KNOWN_BOXES = {
    "label": [0, 22, 26, 33, 41],
    "label+3": [0, 19, 23, 36, 44],
    "from-seqpatch": [0, 15, 19, 40, 48],  # the bright square, 5 px wider
    "from-seqpatch+0": [0, 20, 24, 35, 43],
}


@pytest.mark.parametrize("mode", list(KNOWN_BOXES))
def test_synthetic_slices_get_their_modes_box(mode, monkeypatch):
    known = _known_slice()
    monkeypatch.setattr(evaluation, "synthetic_set", lambda n, seed, bank: [(known, "ct")] * n)
    scorer = box_evaluation.SliceBoxes(BoxPredictor(_FlatEncoder().eval()), mode)
    models = {"seqpatch": BrightNet("seqpatch"), "unet": BrightNet("unet")}
    res = evaluation.evaluate_synthetic(models, 2, 0, None, torch.device("cpu"), coarsen=False, extra=scorer)
    res = scorer.annotate(res)
    assert [p["box"] for p in res["boxes"]["prompts"]] == [KNOWN_BOXES[mode]] * 2
    assert [p["case"] for p in res["boxes"]["prompts"]] == [0, 1]
    # what LiteMedSAM saw: the windowed slice as its uint8 input, not windowed a second time
    np.testing.assert_array_equal(scorer.boxes._u8[0], to_255(known.image))
    lite = [r for r in res["rows"] if r.method == "litemedsam"]
    text = "+".join(map(str, box_evaluation.parse_box_mode(mode)))
    assert [(r.case, r.box, r.preset, r.kind, r.click) for r in lite] == [(i, text, "ct", "known square", known.click)
                                                                          for i in (0, 1)]  # fmt: skip
    assert {r.box for r in res["rows"] if r.method != "litemedsam"} == {None}
    assert list(res["summary"]) == ["seqpatch", "unet", "litemedsam"]
    assert list(res["by_preset"]["ct"]["summary"]) == ["seqpatch", "unet", "litemedsam"]
    assert "litemedsam" in res["by_size"][0]
    assert [(e["a"], e["b"], e["n"]) for e in res["paired"]] == [("seqpatch", "unet", 2), ("seqpatch", "litemedsam", 2)]
    assert res["clicks"] == f"centroid; litemedsam boxes: {text}"


def test_a_seqpatch_box_without_seqpatch_is_refused():
    scorer = box_evaluation.SliceBoxes(BoxPredictor(_FlatEncoder().eval()), "from-seqpatch")
    with pytest.raises(InputError, match="needs the SeqPatch network"):
        scorer(0, _known_slice(), "ct", {"unet": []})


@pytest.fixture(scope="module")
def tiny_bank(tmp_path_factory):
    d = tmp_path_factory.mktemp("atlas")
    atlases.prepare_atlases(d / "bank", [tiny_atlas_source(d)])
    return d / "bank"


@pytest.mark.parametrize("mode", ["label+2", "from-seqpatch+0"])
def test_atlas_slices_get_their_modes_box(mode, tiny_bank):
    """The atlas object evaluate_atlas draws first (seed 0): LiteMedSAM's box is the label's or
    SeqPatch's mask's from the same centre click, on the same slice the click models get."""
    s = atlases.AtlasBank(tiny_bank).sample(np.random.default_rng(np.random.SeedSequence([0, 17])), SLICE_SIZE, "val")
    source, margin = box_evaluation.parse_box_mode(mode)
    if source == "label":
        ref = s.label != 0
    else:
        ref = segment_slice(BrightNet("seqpatch"), s.image, np.array([s.click]), "promise12", s.spacing_mm,
                            torch.device("cpu"), coarsen=False)[0].mask  # fmt: skip
    ys, xs = np.nonzero(ref)
    expected = [0, ys.min() - margin, xs.min() - margin, ys.max() + margin, xs.max() + margin]
    scorer = box_evaluation.SliceBoxes(BoxPredictor(_FlatEncoder().eval()), mode)
    models = {"seqpatch": BrightNet("seqpatch")}
    res = evaluation.evaluate_atlas(models, 1, 0, tiny_bank, torch.device("cpu"), coarsen=False, extra=scorer,
                                    methods=["litemedsam"])  # fmt: skip
    assert scorer.prompts[0]["box"] == [int(v) for v in expected]
    assert [(r.method, r.box, r.preset) for r in res["rows"]] == [("litemedsam", f"{source}+{margin}", "promise12")]
    assert list(res["summary"]) == ["litemedsam"] and res["paired"] == []


def test_cli_synthetic_scores_litemedsam_beside_the_networks(capsys, tmp_path, small_weights, monkeypatch):
    """--box from-seqpatch loads SeqPatch for the boxes even when only the U-net is scored."""
    monkeypatch.setattr(inference_boxes, "load_litemedsam", lambda: _FlatEncoder())
    out = tmp_path / "syn.json"
    weights = ["--weights-seqpatch", str(small_weights["seqpatch"]), "--weights-unet", str(small_weights["unet"])]
    rc, stdout, _err = _run(capsys, "evaluate", "--synthetic", "2", "--seed", "1", "--backgrounds", "none",
                            "--methods", "unet,litemedsam", "--box", "from-seqpatch", *weights, "--device", "cpu",
                            "--no-coarsen", "--json", str(out))  # fmt: skip
    assert rc == 0 and "| litemedsam |" in stdout and "- unet − litemedsam (centre clicks, 2 slices)" in stdout
    assert "litemedsam boxes from-seqpatch+5" in stdout
    res = json.loads(out.read_text())
    assert list(res["summary"]) == ["unet", "litemedsam"]
    assert [(r["method"], r["box"]) for r in res["rows"]] == [("unet", None), ("litemedsam", "from-seqpatch+5")] * 2
    assert len(res["boxes"]["prompts"]) == 2


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_refuses_bad_prompts_in_one_line(capsys, tmp_path):
    image, _label = example("brain1_mr_crop")
    out = str(tmp_path / "m.nii.gz")
    cases = [
        (["--method", "litemedsam", "--box", "0", "5", "5", "5", "40"], "has no area"),
        (["--method", "litemedsam", "--box", "0", "5", "5", "9999", "40"], "outside the slice"),
        (["--method", "litemedsam", "--point", "0", "5", "5"], "takes --box"),
        (["--method", "seqpatch", "--box", "0", "5", "5", "20", "40"], "takes --point"),
        (["--method", "litemedsam", "--box", "0", "5", "5", "20", "40", "--propagate"], "float32"),
    ]
    for extra, words in cases:
        rc, _o, err = _run(capsys, "predict", str(image), *extra, "--out", out)
        assert rc == 2 and words in err and err.count("\n") == 1, (extra, err)
    rc, _o, err = _run(capsys, "evaluate", "--synthetic", "2", "--methods", "seqpatch,litemedsam", "--clicks",
                       "jitter:2")  # fmt: skip
    assert rc == 2 and "centre clicks only" in err
    rc, _o, err = _run(capsys, "evaluate", "--atlas", "2", "--methods", "litemedsam", "--box", "seqpatch")
    assert rc == 2 and "unknown box mode" in err
    rc, _o, err = _run(capsys, "calibrate", "--synthetic", "2", "--methods", "seqpatch,litemedsam")
    assert rc == 2 and "takes boxes" in err
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--methods", "seqpatch,sam2"])
    assert exit_.value.code == 2
    rc, _o, err = _run(capsys, "evaluate", "--image", str(image), "--label", str(image), "--methods", "litemedsam",
                       "--box", "oracle")  # fmt: skip
    assert rc == 2 and "unknown box mode" in err


@pytest.mark.slow
@pytest.mark.skipif(not LITEMEDSAM_WEIGHTS.is_file(), reason="weights/litemedsam.safetensors absent")
def test_cli_predict_writes_the_mask_and_one_line_per_box(capsys, tmp_path):
    image, label = example("brain1_mr_crop")
    vol = read_volume(image)
    lab = read_volume(label).array != 0
    z = int(np.argmax(lab.reshape(lab.shape[0], -1).sum(1)))
    ys, xs = np.nonzero(lab[z])
    box = [z, ys.min(), xs.min(), ys.max(), xs.max()]
    out = tmp_path / "m.nii.gz"
    args = ["predict", str(image), "--method", "litemedsam", "--box", *map(str, box), "--label", str(label)]
    rc, stdout, _err = _run(capsys, *args, "--box", *map(str, box), "--out", str(out))
    assert rc == 0
    lines = [json.loads(x) for x in stdout.splitlines()]
    assert len(lines) == 2 and lines[0]["box_zyxyx"] == box
    assert lines[0]["encoder_ms"] > 0 and lines[1]["encoder_ms"] == 0.0  # the second box reuses the slice
    assert lines[0]["metrics"]["dice"] > 0.7
    mask = read_volume(out).array
    assert mask.shape == vol.shape and mask[z].sum() == lines[0]["area_px"]
    assert mask.sum() == mask[z].sum()  # only the boxed slice


@pytest.mark.slow
@pytest.mark.skipif(not LITEMEDSAM_WEIGHTS.is_file(), reason="weights/litemedsam.safetensors absent")
def test_bench_times_encoder_and_decoder(capsys, tmp_path):
    image, label = example("lung2_ct_crop")
    out = tmp_path / "b.json"
    rc, stdout, _err = _run(capsys, "bench", "--litemedsam", "--clicks", "1", "--agreement-slices", "1",
                            "--image", str(image), "--label", str(label), "--json", str(out))  # fmt: skip
    assert rc == 0 and "| torch-float32 |" in stdout
    r = json.loads(out.read_text())["paths"]["torch-float32"]
    assert r["encoder"]["n"] == 1 and r["decoder"]["n"] == 5
    assert r["encoder"]["min_ms"] > r["decoder"]["min_ms"] > 0
