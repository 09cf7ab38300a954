"""LiteMedSAM on the page (issue 28), without a browser: the third method after a click, its box (the
label's, an oracle prompt, else SeqPatch's mask plus a margin), the newest click winning, undo, the
exports, bad boxes and a page without its weights.

SeqPatch and the U-net are :class:`helpers.BrightNet` (they segment the bright disc, so the box is
known); LiteMedSAM is the shipped model (the tests skip without weights/litemedsam.safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import BrightNet
from test_app import CENTRE, SHAPE, volume_files  # noqa: F401 - volume_files: the module's fixture

from app import build_demo, handlers, outputs
from app.drawing import COLOURS
from app.exports import clicks_record, export, mask_volume
from app.notices import UserNotice
from app.session import BOX_WEIGHTS_MISSING, load_box_model
from app.view import LIKELIHOOD_PX
from seqpatch_core.evaluation.boxes import SEQPATCH_MARGIN_PX
from seqpatch_core.inference.boxes import box_around
from seqpatch_core.inference.predictor import Predictor

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def box_model():
    model = load_box_model()
    if model is None:
        pytest.skip("needs weights/litemedsam.safetensors")
    return model


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor({"seqpatch": BrightNet("seqpatch"), "unet": BrightNet("unet")}, device="cpu")


def _load(predictor, box_model, image, label=None):
    return handlers.load(predictor, None, image, label, box_model=box_model)["state"]


def test_a_click_gets_a_third_method_from_the_box_of_seqpatchs_mask(predictor, box_model, volume_files):  # noqa: F811
    s = _load(predictor, box_model, volume_files[0])
    out = handlers.segment(s, 2, *CENTRE)
    (answer,) = s.box_answers
    want = box_around(s.results[2]["seqpatch"].mask, 2, SEQPATCH_MARGIN_PX)
    assert answer.source == "seqpatch" and answer.result.box == want and not answer.oracle
    assert answer.follows is s.results[2] and s.box_answer(2) is answer
    # its row, with its time, in the table; its map, drawn as wide as the others'
    row = next(line for line in out["metrics"].splitlines() if line.startswith("| LiteMedSAM"))
    assert "SeqPatch box" in row and float(row.rstrip(" |").rsplit("|", 1)[1]) > 0
    assert out["lik_litemedsam"].shape[1] == LIKELIHOOD_PX
    # its contour and its box are drawn on the slice in its colour
    assert np.all(out["overlay"] == COLOURS["litemedsam"], axis=-1).sum() > 50
    assert out["progress"] == ""
    assert answer.result.mask.any() and answer.result.prob.dtype == np.float32  # (accuracy: test_litemedsam)


def test_with_a_label_the_box_is_the_labels_and_is_called_an_oracle(predictor, box_model, volume_files):  # noqa: F811
    s = _load(predictor, box_model, *volume_files)
    out = handlers.segment(s, 2, *CENTRE)
    (answer,) = s.box_answers
    assert answer.oracle and answer.result.box == box_around(s.label[2], 2)
    assert "LiteMedSAM (oracle: label box)" in out["metrics"]
    # a second box on the same slice runs only the decoder
    runs = s.boxes.encoder_runs
    handlers.segment(s, 2, *CENTRE)
    assert s.boxes.encoder_runs == runs and s.box_answers[-1].result.encoder_ms == 0.0


def test_a_newer_click_wins_over_litemedsams_answer_to_an_older_one(predictor, box_model, volume_files):  # noqa: F811
    s = _load(predictor, box_model, volume_files[0])
    handlers.segment(s, 2, *CENTRE)
    # a newer click still running (its first view shown, SeqPatch not done): nothing is answered
    s.seqpatch_first_seconds = 9.0  # (a slow SeqPatch: the U-net's answer is shown first)
    steps = handlers.segment_steps(s, 1, *CENTRE)
    next(steps)
    assert handlers.segment_box(s) == {}
    for _ in steps:
        pass
    # a newer click on that slice while LiteMedSAM answers the older one: the older answer is dropped
    older = s.results[1]
    run = s.boxes.predict

    def newer_click_meanwhile(box):
        for _ in handlers.segment_steps(s, 1, CENTRE[0] + 1, CENTRE[1]):
            pass
        return run(box)

    s.boxes.predict = newer_click_meanwhile
    try:
        out = handlers.segment_box(s)
    finally:
        del s.boxes.predict
    assert out == {"progress": ""} and s.results[1] is not older and s.box_answer(1) is None
    handlers.segment_box(s)  # the newer click's own follow-up
    assert s.box_answer(1).follows is s.results[1]
    assert s.box_answer(2).follows is s.results[2]  # the first click's answer stays on its slice
    n = len(s.box_answers)
    assert handlers.segment_box(s) == {"progress": ""} and len(s.box_answers) == n  # answered once


def test_undo_brings_back_the_older_answer_and_reset_forgets_them(predictor, box_model, volume_files):  # noqa: F811
    s = _load(predictor, box_model, *volume_files)
    handlers.segment(s, 2, *CENTRE)
    first = s.box_answer(2)
    handlers.segment(s, 2, CENTRE[0] + 2, CENTRE[1])
    assert s.box_answer(2) is not first
    out = handlers.undo(s)
    assert s.box_answer(2) is first and "LiteMedSAM" in out["metrics"]
    out = handlers.reset(s)
    assert s.box_answer(2) is None and not s.box_answers and "LiteMedSAM" not in out["metrics"]
    assert "follows a click" not in str(out.get("metrics"))


def test_exports_carry_its_mask_and_its_prompt_box(predictor, box_model, volume_files):  # noqa: F811
    s = _load(predictor, box_model, *volume_files)
    handlers.segment(s, 2, *CENTRE)
    answer = s.box_answer(2)
    files = export(s)["files"]
    lite = [f for f in files if f.endswith("_litemedsam_mask.nii.gz")]
    assert len(lite) == 1
    vol = mask_volume(s, "litemedsam")
    assert np.array_equal(vol[2], answer.result.mask) and not vol[[0, 1, 3]].any()
    record = json.loads(next(Path(f).read_text() for f in files if f.endswith("_clicks.json")))
    click = record["clicks"][-1]
    assert click["prompt_box"] == {"zyx_inclusive": answer.result.box.as_list(), "source": "label", "oracle": True}
    assert click["results"]["litemedsam"]["area_px"] == int(answer.result.mask.sum())
    assert record["weights"]["litemedsam"]["sha256"] == box_model.record["sha256"]
    assert clicks_record(s) == record


@pytest.mark.parametrize(
    ("box", "says"),
    [
        ((2, 10, 10, 10, 30), "has no area"),
        ((2, -1, 0, 10, 10), "outside the slice"),
        ((2, 10, 10, 20, SHAPE[2]), "outside the slice"),
    ],
)
def test_a_bad_box_is_one_line_and_the_page_keeps_its_state(predictor, box_model, volume_files, box, says):  # noqa: F811
    s = _load(predictor, box_model, *volume_files)
    handlers.segment(s, 2, *CENTRE)
    shown, answers = s.results[2], list(s.box_answers)
    with pytest.raises(UserNotice) as info:
        handlers.segment_box(s, list(box))
    assert says in info.value.message and "\n" not in info.value.message
    assert info.value.outputs == {}  # every output stays as it was
    assert s.results[2] is shown and s.box_answers == answers


def test_a_box_before_an_image_is_loaded_is_one_line(predictor, box_model):
    for session in (None, handlers.load(predictor, None, None, box_model=box_model)["state"]):
        with pytest.raises(UserNotice) as info:
            handlers.segment_box(session, [0, 1, 1, 5, 5])
        assert "no image loaded" in info.value.message
        assert handlers.segment_box(session) == ({} if session is None else {"progress": ""})


def test_a_given_box_is_answered_on_its_slice(predictor, box_model, volume_files):  # noqa: F811
    s = _load(predictor, box_model, volume_files[0])
    out = handlers.segment_box(s, [2, 15, 23, 45, 53])
    answer = s.box_answer(2)
    assert answer.source == "given" and answer.result.box.as_list() == [2, 15, 23, 45, 53]
    assert "LiteMedSAM (given box)" in out["metrics"]


def test_without_its_weights_the_page_runs_with_two_methods_and_says_so_once(predictor, volume_files, tmp_path):  # noqa: F811
    assert load_box_model(tmp_path / "missing.safetensors") is None
    demo = build_demo(predictor, examples=[], box_model=None)
    notes = [b.value for b in demo.blocks.values() if getattr(b, "elem_id", None) == "weights-warning"]
    assert notes == [f"⚠ **{BOX_WEIGHTS_MISSING}**"]
    out = handlers.load(predictor, None, *volume_files)
    s = out["state"]
    assert s.boxes is None and "LiteMedSAM" not in out["status"]  # said once, in the page's header
    out = handlers.segment(s, 2, *CENTRE)
    assert set(s.results[2]) == {"seqpatch", "unet"} and not s.box_answers
    assert "LiteMedSAM" not in out["metrics"] and out["progress"] == ""
    assert handlers.segment_box(s) == {}
    with pytest.raises(UserNotice) as info:
        handlers.segment_box(s, [2, 10, 10, 20, 20])
    assert info.value.message == BOX_WEIGHTS_MISSING


def test_the_page_declares_and_builds_its_map(predictor, box_model):
    assert "lik_litemedsam" in outputs.MAIN
    demo = build_demo(predictor, examples=[], box_model=box_model)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert "lik-litemedsam" in ids and "weights-warning" not in ids
