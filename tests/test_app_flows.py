"""The demo's flows as a visitor meets them, without a browser (``test_browser_flows.py`` does them in
Chromium): a mistake is a notification that changes nothing, long results name their own click, one
window per volume, the 3D object on every slice and in undo and export, no invented metrics.

The networks are :class:`helpers.BrightNet` stand-ins (bright = object), so every test runs the real
pipeline in milliseconds with a predictable answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from helpers import BrightNet, write_case

from app import build_demo, handlers, outputs
from app.ablations import PREFIX
from app.binding import bind
from app.drawing import COLOURS
from app.exports import export
from app.notices import UserNotice
from app.session import Session, new_session
from app.teaching_handlers import COMPARE_GRID_PX, compare, robustness, segment_object
from app.view import RAY_DETAIL_PX, metric_cells, render_view
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference.predictor import Predictor

CENTRE = (6, 32.0, 30.0)  # (z, y, x) of the sphere in helpers.sphere_arrays


@pytest.fixture()
def predictor() -> Predictor:
    return Predictor({"seqpatch": BrightNet("seqpatch"), "unet": BrightNet("unet")}, device="cpu")


@pytest.fixture()
def case(tmp_path) -> tuple[str, str]:
    image, label = write_case(tmp_path)
    return str(image), str(label)


@pytest.fixture()
def session(predictor, case) -> Session:
    return handlers.load(predictor, None, *case)["state"]


# ----------------------------------------------------------------------------- 1. notices, not errors


@pytest.mark.parametrize(
    "act",
    [
        lambda s: handlers.undo(s),
        lambda s: export(s),
        lambda s: robustness(s, 3, 2.0),
        lambda s: segment_object(s),
        lambda s: next(handlers.segment_steps(s, 99, 5, 5)),
        lambda s: handlers.change_wl(s, -5, 10),
    ],
    ids=["undo-nothing", "export-before-click", "teaching-before-click", "3d-before-click", "outside", "bad-wl"],
)
def test_a_mistake_is_a_notification_that_changes_no_output(session, act, monkeypatch):
    shown = []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: shown.append(msg))
    bound = bind(lambda s: act(s), ("state", "overlay", "metrics"))
    out = bound(session, None)  # the last argument is Gradio's request (none: the page)
    assert len(shown) == 1 and "\n" not in shown[0]
    assert all(isinstance(v, type(gr.skip())) for v in out)  # nothing on the page changes


def test_an_api_client_still_gets_an_error(session):
    class Req:
        headers = {"x-gradio-user": "api"}

    bound = bind(lambda s: handlers.undo(s), ("state",))
    with pytest.raises(gr.Error, match="nothing to undo"):
        bound(session, Req())


def test_bind_refuses_an_output_the_event_does_not_have(session):
    with pytest.raises(KeyError, match="overlya"):  # a typo in the wiring fails when the page is built
        bind(lambda s: {}, ("state", "overlya"))
    bound = bind(lambda s: {"state": s, "overlya": None}, ("state", "overlay"))
    with pytest.raises(KeyError, match="overlya"):  # and a typo in a handler when it answers
        bound(session, None)
    assert bind(lambda s: {"overlay": 1}, ("state", "overlay"))(session, None)[1] == 1


def test_every_declared_output_has_a_component(predictor):
    with pytest.raises(KeyError, match="sagittal"):
        outputs.components({n: object() for n in outputs.TABLE_NAMES if n != "sagittal"})
    demo = build_demo(predictor, examples=[])  # the page builds with all of them
    assert demo is not None


def test_a_refused_replacement_keeps_image_label_and_results(predictor, session, tmp_path):
    """Issue 26 item 2: the box emptied (×), then a text file named .nii.gz: nothing is lost, and the
    box shows the image that is loaded, not the refused file."""
    handlers.segment(session, *CENTRE)
    results, label, volume = dict(session.results), session.label, session.volume
    assert handlers.box_cleared(session, "image")["summary"].endswith("another image file has been read._")
    assert handlers.load(predictor, session, None) == {}  # an empty box unloads nothing
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not an image")
    with pytest.raises(UserNotice) as info:
        handlers.load(predictor, session, str(bad))
    assert info.value.outputs == {"image_file": session.image_path, "state": session}
    assert session.volume is volume and session.label is label and session.results == results
    assert "Dice" in render_view(session)["metrics"]


def test_a_refused_first_upload_leaves_its_box_empty(predictor, tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not an image")
    with pytest.raises(UserNotice) as info:
        handlers.load(predictor, None, str(bad))
    assert info.value.outputs == {"image_file": None}


def test_a_single_slice_has_no_slice_slider(predictor, tmp_path):
    import SimpleITK as sitk

    arr = np.zeros((40, 40), np.float32)
    arr[10:30, 10:30] = 500
    path = tmp_path / "one.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(arr[None]), str(path))
    out = handlers.load(predictor, None, str(path))
    assert out["slice"]["visible"] is False
    assert out["state"].volume.modality == "MR"  # a one-slice medical file without negative values


# ----------------------------------------------------------------------------- 2. long results name their click


def test_robustness_names_the_click_it_started_from(session):
    z, y, x = CENTRE
    handlers.segment(session, z, y, x)
    later = []

    def progress(frac, text):  # a second click while the grid runs
        if not later:
            later.append(handlers.segment(session, z, y + 3, x + 3))

    out = robustness(session, 3, 1.0, progress=progress)
    assert later and session.results[z]["seqpatch"].point_zyx[1] == y + 3
    assert f"({y:.1f}, {x:.1f})" in out["rob_note"] and f"({y + 3:.1f}, {x + 3:.1f})" not in out["rob_note"]
    assert session.robustness.point_yx == (y, x)


@pytest.mark.slow
def test_the_3d_object_names_its_click(session):
    z, y, x = CENTRE
    handlers.segment(session, z, y, x)
    later = []

    def progress(frac, text):
        if not later:
            later.append(handlers.segment(session, z, y - 2, x))

    out = segment_object(session, "seqpatch", progress=progress)
    assert later and f"({y:.1f}, {x:.1f})" in out["obj_note"]
    assert session.objects3d["seqpatch"].seed_zyx == (z, y, x)


# ----------------------------------------------------------------------------- 4, 6. the 3D object


@pytest.mark.slow
def test_the_3d_object_is_drawn_everywhere_and_undo_takes_it_back(session):
    z, y, x = CENTRE
    handlers.segment(session, z, y, x)
    before = render_view(session)
    segment_object(session, "seqpatch")
    obj = session.objects3d["seqpatch"]
    lo, hi = obj.prop.z_range
    assert lo < z < hi
    session.z = hi  # a slice that was never clicked
    out = render_view(session)
    assert "3D object (SeqPatch, dotted)" in out["status"] and "on this slice." in out["status"]
    colour = np.array(COLOURS["seqpatch"])
    assert np.all(out["overlay"] == colour, axis=2).any()  # its outline on a slice without a click
    session.z = z
    assert not np.array_equal(render_view(session)["coronal"], before["coronal"])
    # export holds it; undo takes it back first, then the click
    names = [Path(f).name for f in export(session)["files"]]
    assert any("_seqpatch_3d_mask" in n for n in names)
    handlers.undo(session)
    assert session.objects3d == {} and z in session.results
    files = export(session)["files"]
    names = [Path(f).name for f in files]
    assert not any("_3d_mask" in n for n in names)
    rec = json.loads(Path(next(f for f in files if f.endswith("_clicks.json"))).read_text())
    assert rec["objects_3d"] == {} and len(rec["clicks"]) == 1
    assert "3D object" not in render_view(session)["status"]


def test_the_overlay_export_is_of_a_slice_with_a_result(session):
    z, y, x = CENTRE
    handlers.segment(session, z, y, x)
    handlers.segment(session, z + 1, y, x)
    handlers.undo(session)  # back on slice z + 1, which has no result now
    assert session.z == z + 1 and z + 1 not in session.results
    names = [Path(f).name for f in export(session)["files"]]
    assert any(n.endswith(f"_slice{z}_overlay.png") for n in names), names


# ----------------------------------------------------------------------------- 5. one window per volume


def test_nearby_clicks_get_one_window(predictor):
    """Air fills the left part of the slice: a click-based rule calls a click near it "lung" and one
    further right "soft"; the demo keeps the window it chose at load for every click."""
    arr = np.full((3, 80, 80), 40.0, np.float32)
    arr[:, :, :30] = -1000.0
    arr[:, 30:50, 38:58] = 200.0
    vol = volume_from_array(arr, spacing=(2.0, 1.0, 1.0), modality="CT")
    from seqpatch_core.images.intensity import auto_window

    assert auto_window(vol, (1, 40, 36)).name != auto_window(vol, (1, 40, 62)).name  # the rule flips
    s = new_session(predictor)
    s.volume, s.z = vol, 1
    s.predictor.set_volume(vol)
    s.auto = auto_window(vol, z=1)
    for x in (36.0, 48.0, 62.0):
        handlers.segment(s, 1, 40.0, x)
        assert s.results[1]["seqpatch"].window == s.auto
    assert f"Window auto → {s.auto.name}" in render_view(s)["status"]
    handlers.change_window(s, "soft")
    handlers.segment(s, 1, 40.0, 48.0)
    assert s.results[1]["seqpatch"].window.name == "soft"


# ----------------------------------------------------------------------------- 7. no invented metrics


def test_metric_cells_never_invent_numbers():
    empty = np.zeros((20, 20), bool)
    disc = empty.copy()
    disc[5:10, 5:10] = True
    both = metric_cells(empty, empty, (1.0, 1.0))
    assert set(both.values()) == {"n/a (both empty)"}
    missed = metric_cells(empty, disc, (1.0, 1.0))
    assert missed["Dice"] == "0.000" and missed["HD95"] == "n/a (empty mask)" and missed["CD x"] == "n/a (empty mask)"
    spurious = metric_cells(disc, empty, (1.0, 1.0))
    assert spurious["Dice"] == "0.000" and spurious["HD95"] == "n/a (no label here)"
    assert metric_cells(disc, None, (1.0, 1.0))["Dice"] == "–"
    real = metric_cells(disc, disc, (1.0, 1.0))
    assert real == {"Dice": "1.000", "CD y": "0.00", "CD x": "0.00", "HD95": "0.00"}
    assert "CD z" in metric_cells(disc[None], disc[None], (2.0, 1.0, 1.0))


# ----------------------------------------------------------------------------- teaching


@pytest.mark.slow
def test_the_ray_shown_large_has_both_directions(small_models, case):
    from app.readouts import direction_readouts

    s = handlers.load(Predictor(dict(small_models), device="cpu"), None, *case)["state"]
    out = handlers.segment(s, *CENTRE)
    sp = s.results[CENTRE[0]]["seqpatch"]
    r = direction_readouts(s.predictor.models["seqpatch"], sp.patches[3])
    assert set(r) == {"fused", "forward", "backward"}
    np.testing.assert_allclose(r["fused"], sp.ray_likelihoods[3], atol=1e-4)  # the same network
    assert not np.allclose(r["forward"], r["backward"])
    wide = handlers.change_ray(s, 3)["ray_detail"]
    assert wide.shape[1] == RAY_DETAIL_PX and not np.array_equal(wide, out["ray_detail"])


@pytest.mark.slow
def test_the_ablation_note_gives_budget_and_validation(small_models, case):
    from seqpatch_core.method.models import build_model

    fwd = build_model("forward", widths=(8, 16, 32))
    fwd.record.update({"training": {"minutes": 7.0, "device": "cpu", "samples_seen": 800},
                       "validation": {"synthetic_val_dice_best": 0.5}})  # fmt: skip
    models = {**small_models, PREFIX + "forward": fwd}
    s = handlers.load(Predictor(models, device="cpu"), None, *case)["state"]
    handlers.segment(s, *CENTRE)
    out = compare(s, "forward")
    assert "7 min on cpu, 800 slices seen" in out["cmp_note"] and "| 0.500 |" in out["cmp_note"]
    assert "One slice is one sample" in out["cmp_note"]
    assert out["cmp_var"].shape[1] <= COMPARE_GRID_PX + 2


def test_a_refused_label_keeps_the_label_in_use(session, tmp_path):
    """Issue 26 item 2: the label box emptied, then a label of another geometry: the good label, its
    Dice and the box showing it stay."""
    import SimpleITK as sitk

    handlers.segment(session, *CENTRE)
    label_before, path_before = session.label, session.label_path
    assert "label above stays in use" in handlers.box_cleared(session, "label")["summary"]
    bad = tmp_path / "small.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 5, 5), np.uint8)), str(bad))
    with pytest.raises(UserNotice, match="label not used") as info:
        handlers.load_label(session, None, str(bad))  # the image box may be empty meanwhile
    assert info.value.outputs == {"label_file": path_before}
    assert session.label is label_before and session.volume is not None
    assert re.search(r"\| SeqPatch \| \d\.\d{3} \|", render_view(session)["metrics"])


@pytest.mark.slow
def test_readouts_do_not_touch_another_threads_click(small_models):
    """The networks are shared by every session: the readouts' hooks must leave a click that runs
    through the same network at the same time, in another thread, unchanged."""
    import threading

    import torch

    from app.readouts import direction_readouts

    net = small_models["seqpatch"]
    x = torch.rand(4, 15, 1, 32, 32)
    with torch.inference_mode():
        alone = net(x)
    start = threading.Event()
    got = {}

    def other():
        start.wait()
        with torch.inference_mode():
            got["y"] = [net(x) for _ in range(20)]

    t = threading.Thread(target=other)
    t.start()
    start.set()
    for _ in range(20):
        direction_readouts(net, np.random.default_rng(0).random((15, 32, 32)).astype(np.float32))
    t.join()
    assert all(torch.equal(y, alone) for y in got["y"])


def test_a_click_empties_the_teaching_tabs_only_when_they_show_something(session):
    """Issue 26 item 9: a click sends the teaching tabs' blanks only when a tab shows a result."""
    from app.layout import segment
    from app.panels import _marks_shown

    first = next(segment(session, *CENTRE))
    assert not set(outputs.TEACHING) & set(first)  # blank already: nothing sent
    assert "coronal" not in first and "lik_seqpatch" in first  # the planes wait for SeqPatch's lines
    for _ in segment(session, *CENTRE):
        pass
    _marks_shown(robustness)(session, 3, 2.0)
    assert session.teaching_shown
    first = next(segment(session, CENTRE[0], CENTRE[1] + 1, CENTRE[2]))
    assert set(outputs.TEACHING) <= set(first) and first["rob_note"] == ""
    assert not session.teaching_shown
