"""LiteMedSAM on the command line and in the evaluation: box modes, rows beside the click methods,
and the one-line refusals."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import example

from seqpatch_core.base.errors import InputError
from seqpatch_core.cli.main import main
from seqpatch_core.evaluation import boxes as box_evaluation
from seqpatch_core.images.io import read_volume
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference.boxes import BoxPredictor
from seqpatch_core.method.models.litemedsam import LITEMEDSAM_WEIGHTS, LiteMedSAM


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
    rc, _o, err = _run(capsys, "evaluate", "--synthetic", "2", "--methods", "seqpatch,litemedsam")
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
    rc, stdout, _err = _run(capsys, "bench", "--litemedsam", "--clicks", "1", "--image", str(image),
                            "--label", str(label), "--json", str(out))  # fmt: skip
    assert rc == 0 and "| encoder (new slice) |" in stdout
    r = json.loads(out.read_text())
    assert r["encoder"]["n"] == 1 and r["decoder"]["n"] == 5
    assert r["encoder"]["min_ms"] > r["decoder"]["min_ms"] > 0
