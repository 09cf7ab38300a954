"""Tests of the demo's teaching and robustness panels (app.teaching_handlers, app.ablations,
app.readouts), without a browser.

Small random-weight networks (as in test_app.py): the tests check the plumbing (shapes, geometry,
references, exports), not accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import BrightBoxNet, BrightNet, free_port
from matplotlib.figure import Figure

from app import build_demo, handlers, outputs
from app.ablations import ablation_choices, load_ablations
from app.exports import clicks_record, export
from app.notices import UserNotice
from app.readouts import ray_features
from app.session import BOX_WEIGHTS_MISSING, Session
from app.teaching_handlers import compare, ray_features_view, robustness, segment_object
from seqpatch_core.base.metrics import dice
from seqpatch_core.evaluation.boxes import SEQPATCH_MARGIN_PX
from seqpatch_core.inference.boxes import box_around
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method.models import build_model, save_checkpoint

SHAPE = (9, 48, 52)  # (z, y, x)
SPACING_XYZ = (0.9, 0.8, 2.5)
ORIGIN = (-12.5, 30.0, 7.0)
_A = np.deg2rad(15.0)
DIRECTION = (np.cos(_A), -np.sin(_A), 0.0, np.sin(_A), np.cos(_A), 0.0, 0.0, 0.0, 1.0)
CENTRE = (4, 24.0, 26.0)  # (z, y, x) of the sphere


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ablation_dir(tmp_path_factory) -> Path:
    """weights/ablations-like folder with small "forward" and "bottom" checkpoints."""
    d = tmp_path_factory.mktemp("ablations")
    torch.manual_seed(1)
    for name in ("forward", "bottom"):
        save_checkpoint(build_model(name, widths=(8, 16, 32)), d / f"{name}.safetensors")
    return d


@pytest.fixture(scope="module")
def predictor(small_models, ablation_dir) -> Predictor:
    models = dict(small_models)
    models.update(load_ablations(ablation_dir))
    return Predictor(models, device="cpu")


@pytest.fixture(scope="module")
def sphere_files(tmp_path_factory) -> tuple[str, str]:
    """A CT-like volume with a bright sphere (radius 9 mm) in soft tissue, and its label."""
    d = tmp_path_factory.mktemp("sphere")
    sx, sy, sz = SPACING_XYZ
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    r_mm = np.sqrt(((zz - CENTRE[0]) * sz) ** 2 + ((yy - CENTRE[1]) * sy) ** 2 + ((xx - CENTRE[2]) * sx) ** 2)
    arr = np.full(SHAPE, 30.0, dtype=np.float32)
    arr[r_mm <= 9.0] = 200.0
    arr += np.random.default_rng(0).normal(0, 8, SHAPE).astype(np.float32)
    lab = (r_mm <= 9.0).astype(np.uint8)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING_XYZ)
    img.SetOrigin(ORIGIN)
    img.SetDirection(DIRECTION)
    sitk.WriteImage(img, str(d / "sphere.nii.gz"))
    label = sitk.GetImageFromArray(lab)
    label.CopyInformation(img)
    sitk.WriteImage(label, str(d / "sphere_label.nii.gz"))
    return str(d / "sphere.nii.gz"), str(d / "sphere_label.nii.gz")


@pytest.fixture()
def clicked(predictor, sphere_files) -> Session:
    s = handlers.load(predictor, None, *sphere_files)["state"]
    handlers.segment(s, *CENTRE)
    return s


def test_ablations_load_under_their_own_keys(predictor, ablation_dir):
    assert {"ablation:forward", "ablation:bottom"} <= set(predictor.models)
    assert predictor.models["ablation:forward"].record["name"] == "forward"
    assert [k for _, k in ablation_choices(predictor)] == ["ablation:forward", "ablation:bottom"]
    assert load_ablations(ablation_dir / "none") == {}


def test_a_click_runs_only_the_two_methods(clicked):
    assert set(clicked.results[CENTRE[0]]) == {"seqpatch", "unet"}


def test_panels_need_a_click_on_the_shown_slice(predictor, sphere_files):
    s = handlers.load(predictor, None, *sphere_files)["state"]
    for call in (
        lambda: robustness(s, 3, 2.0),
        lambda: segment_object(s, "seqpatch"),
        lambda: compare(s, "ablation:forward"),
        lambda: ray_features_view(s, 0),
    ):
        with pytest.raises(gr.Error, match="click on the object on slice"):
            call()


@pytest.mark.slow
def test_robustness_against_label_then_self(clicked, predictor, sphere_files):
    calls = []
    out = robustness(clicked, 3, 2.0, progress=lambda f, t: calls.append((f, t)))
    assert isinstance(out["rob_plot"], Figure)
    assert "Scored against the label" in out["rob_note"]
    res = clicked.robustness
    assert res.reference == "label" and res.slice == CENTRE[0]
    assert np.asarray(res.dice["seqpatch"]).shape == (3, 3) and np.asarray(res.dice["unet"]).shape == (3, 3)
    assert calls and calls[-1][0] == 1.0
    # 9 clicks per network in batches of ROBUSTNESS_CHUNK = 5: the bar moves within each network
    assert [round(f, 3) for f, _ in calls] == [0.0, 0.278, 0.5, 0.778, 1.0]
    assert "5 of 9 clicks done" in calls[1][1]
    z = CENTRE[0]
    for m in ("seqpatch", "unet"):  # the centre cell is the click itself, scored against the label
        assert res.dice[m][1][1] == pytest.approx(dice(clicked.results[z][m].mask, clicked.label[z] != 0))
    titles = [ax.get_title() for ax in out["rob_plot"].axes]
    assert any(t.startswith("SeqPatch") for t in titles) and any(t.startswith("U-net") for t in titles)
    # the click's window is held for the moved clicks and restored afterwards
    assert clicked.predictor.window_spec == "auto"

    s = handlers.load(predictor, None, sphere_files[0])["state"]  # no label
    handlers.segment(s, *CENTRE)
    out = robustness(s, 3, 2.0)
    assert s.robustness.reference == "self"
    assert "against each method's own result at the original click" in out["rob_note"]
    assert s.robustness.dice["seqpatch"][1][1] == pytest.approx(1.0)  # the original click vs itself

    with pytest.raises(gr.Error, match="grid"):
        robustness(s, 0, 2.0)


@pytest.mark.slow
def test_whole_object_3d_and_export_geometry(clicked, sphere_files):
    ticks = []
    out = segment_object(clicked, "seqpatch", progress=lambda f, t: ticks.append(f))
    obj = clicked.objects3d["seqpatch"]
    assert obj.prop.mask3d.shape == SHAPE and obj.prop.mask3d.dtype == bool
    lo, hi = obj.prop.z_range
    assert lo <= CENTRE[0] <= hi
    assert f"slices **{lo}–{hi}**" in out["obj_note"] and " mL" in out["obj_note"]
    assert "| Dice | CD x (mm) | CD y (mm) | CD z (mm)" in out["obj_note"]  # a label is loaded
    assert ticks and all(0 <= f < 1 for f in ticks)
    assert out["obj_view"].ndim == 3 and out["obj_view"].dtype == np.uint8
    assert out["files"] is None

    files = export(clicked)["files"]
    path = next(f for f in files if f.endswith("sphere_seqpatch_3d_mask.nii.gz"))
    src, img = sitk.ReadImage(sphere_files[0]), sitk.ReadImage(path)
    assert img.GetSize() == src.GetSize()
    assert np.allclose(img.GetSpacing(), src.GetSpacing())
    assert np.allclose(img.GetOrigin(), src.GetOrigin())
    assert np.allclose(img.GetDirection(), src.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(img), obj.prop.mask3d.astype(np.uint8))
    rec = json.loads(Path(next(f for f in files if f.endswith("_clicks.json"))).read_text())
    assert rec["objects_3d"]["seqpatch"]["slices"] == [lo, hi]

    with pytest.raises(gr.Error, match="unknown method"):
        segment_object(clicked, "nonsense")
    handlers.reset(clicked)
    assert clicked.objects3d == {} and clicked.robustness is None


def test_ablation_compare_with_a_forward_checkpoint(clicked):
    out = compare(clicked, "ablation:forward")
    assert out["cmp_ref"].ndim == 3 and out["cmp_var"].ndim == 3
    assert out["cmp_ref"].shape == out["cmp_var"].shape  # the same rays and patches
    assert "SeqPatch (the app's model)" in out["cmp_note"]  # no seqpatch_paper here
    assert out["cmp_note"].count("| 0.") + out["cmp_note"].count("| 1.0") >= 2  # both Dice values
    with pytest.raises(gr.Error, match="not loaded"):
        compare(clicked, "ablation:convlstm")


def test_ray_features_shapes_and_hooks_removed(clicked):
    sp = clicked.results[CENTRE[0]]["seqpatch"]
    k, p = sp.patches.shape[1], sp.patches.shape[2]
    model = clicked.predictor.models["seqpatch"]
    feats = ray_features(model, sp.patches[3])
    assert list(feats) == ["bottom", "middle", "top"]
    for level, size, ch in (("bottom", p // 4, 32), ("middle", p // 2, 16), ("top", p, 8)):
        f = feats[level]
        assert f.after.shape == (k, size, size) and f.before.shape == (k, size, size)
        assert f.source == f"rnn.{level}" and f.channels == ch
    mods = [model.enc1, model.enc2, model.enc3, *model.rnn.values()]
    assert all(not m._forward_hooks for m in mods)

    bottom_only = clicked.predictor.models["ablation:bottom"]
    fb = ray_features(bottom_only, sp.patches[0])
    assert fb["bottom"].source == "rnn.bottom" and fb["top"].source == "enc1"
    assert fb["top"].after.shape == (k, p, p)

    out = ray_features_view(clicked, 5)
    assert out["feat_img"].ndim == 3 and "Ray 5" in out["feat_note"]


def test_the_teaching_outputs_empty_to_their_blanks():
    out = outputs.empty(*outputs.TEACHING)
    names = {"rob_plot", "rob_note", "obj_note", "obj_view", "cmp_ref", "cmp_var", "cmp_note", "feat_img", "feat_note"}
    assert set(out) == names
    assert out["rob_plot"] is None and out["rob_note"] == "" and out["obj_note"] == ""
    for name in ("obj_view", "cmp_ref", "cmp_var", "feat_img"):
        assert out[name].ndim == 3 and out[name].dtype == np.uint8


@pytest.mark.parametrize("box_model", [None, BrightBoxNet()], ids=["without LiteMedSAM", "with LiteMedSAM"])
def test_demo_builds_with_ablations(predictor, box_model):
    demo = build_demo(predictor, examples=[], box_model=box_model)
    assert isinstance(demo, gr.Blocks)
    names = {d.get("api_name") for d in demo.config["dependencies"]}
    assert {"robustness", "segment_3d", "compare", "ray_features"} <= names
    (radio,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "obj-method"]
    assert [m for _, m in radio.choices] == ["seqpatch", "unet", *(["litemedsam"] if box_model else [])]


@pytest.mark.slow
def test_teaching_endpoints_through_gradio_client(predictor, sphere_files, tmp_path):
    """The wiring: gr.Progress injected, outputs in place, errors one line."""
    from gradio_client import Client, handle_file

    from app import LAUNCH_KWARGS

    port = free_port()
    demo = build_demo(predictor, examples=[])
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH_KWARGS
    )
    try:
        client = Client(
            f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path), analytics_enabled=False
        )
        client.predict(
            handle_file(sphere_files[0]), handle_file(sphere_files[1]), "auto", 0.5, 0.3, False, api_name="/load"
        )
        with pytest.raises(Exception, match="click on the object on slice"):
            client.predict(3, 2.0, api_name="/robustness")
        client.predict(*CENTRE, api_name="/segment")
        plot, note = client.predict(3, 2.0, api_name="/robustness")
        assert "Scored against the label" in note and plot is not None
        note, view, files, *main_view = client.predict("seqpatch", api_name="/segment_3d")
        assert "3D object" in main_view[1]  # overlay, status, coronal, sagittal
        assert " mL" in note and Path(view).is_file()
        ref, var, note = client.predict("ablation:forward", api_name="/compare")
        assert Path(ref).is_file() and Path(var).is_file() and "forward" in note
        img, note = client.predict(2, api_name="/ray_features")
        assert Path(img).is_file() and "Ray 2" in note
        files = client.predict(api_name="/export")[-1]
        assert any(str(f).endswith("sphere_seqpatch_3d_mask.nii.gz") for f in files)
    finally:
        demo.close()


# ----------------------------------------------------------------------------- LiteMedSAM in the tabs
# BrightNet for the click methods and BrightBoxNet for LiteMedSAM: both segment the bright ball, so
# the boxes (the label's, or SeqPatch's mask plus the margin) are known


@pytest.fixture(scope="module")
def bright() -> Predictor:
    return Predictor({"seqpatch": BrightNet("seqpatch"), "unet": BrightNet("unet")}, device="cpu")


def _boxed(bright, sphere_files, with_label: bool) -> Session:
    files = sphere_files if with_label else sphere_files[:1]
    s = handlers.load(bright, None, *files, box_model=BrightBoxNet())["state"]
    handlers.segment(s, *CENTRE)  # the main view's LiteMedSAM answer encodes the slice
    return s


@pytest.mark.parametrize("with_label", [True, False], ids=["label box", "SeqPatch box"])
def test_robustness_with_litemedsam_moves_the_clicks_box(bright, sphere_files, with_label):
    s = _boxed(bright, sphere_files, with_label)
    z = CENTRE[0]
    assert s.boxes.encoder_runs == 1
    out = robustness(s, 3, 2.0)
    res = s.robustness
    assert res.methods == ["seqpatch", "unet", "litemedsam"]
    assert s.boxes.encoder_runs == 1  # the slice's embedding is the main view's, from the cache
    want = box_around(s.label[z], z) if with_label else box_around(s.results[z]["seqpatch"].mask, z, SEQPATCH_MARGIN_PX)
    assert res.prompt == {"box": want.as_list(), "source": "label" if with_label else "seqpatch"}
    assert s.box_answer(z).result.box == want  # the same box as the main view's
    source = "the label's box on the slice" if with_label else "SeqPatch's mask plus a margin"
    assert f"LiteMedSAM's box, {source}" in out["rob_note"]
    assert f"LiteMedSAM mean Dice {res.mean('litemedsam'):.3f} (worst {res.worst('litemedsam'):.3f})" in out["rob_note"]
    assert res.dice["litemedsam"][1][1] > (0.9 if with_label else 0.99)  # vs the label, or itself
    titles = [ax.get_title() for ax in out["rob_plot"].axes if ax.get_title()]
    assert [t.split(":")[0] for t in titles] == ["SeqPatch", "U-net", "LiteMedSAM"]


def test_robustness_without_litemedsam_or_its_box_runs_the_two_networks(bright, sphere_files):
    s = handlers.load(bright, None, *sphere_files)["state"]  # no LiteMedSAM weights
    handlers.segment(s, *CENTRE)
    out = robustness(s, 3, 2.0)
    assert s.robustness.methods == ["seqpatch", "unet"] and s.robustness.prompt is None
    assert "LiteMedSAM" not in out["rob_note"]
    # with its weights but no box (SeqPatch found nothing, no label): left out, said in the note
    s = _boxed(bright, sphere_files, with_label=False)
    s.results[CENTRE[0]]["seqpatch"].mask[:] = False
    out = robustness(s, 3, 2.0)
    assert s.robustness.methods == ["seqpatch", "unet"]
    assert "LiteMedSAM is left out: LiteMedSAM has no box" in out["rob_note"]


def test_litemedsam_whole_object_box_to_box_shown_and_exported(bright, sphere_files):
    s = _boxed(bright, sphere_files, with_label=True)
    z = CENTRE[0]
    out = segment_object(s, "litemedsam")
    obj = s.objects3d["litemedsam"]
    rows = {r["z"]: r for r in obj.prop.per_slice}
    assert rows[z]["box"] == box_around(s.label[z], z).as_list()  # the main view's box, the label's
    lo, hi = obj.prop.z_range
    assert lo <= 1 and hi >= 7  # the ball's slices (1..7) are all reached
    ball = slice(1, 8)
    assert dice(obj.prop.mask3d[ball], s.label[ball] != 0) > 0.9
    note = out["obj_note"]
    assert f"**LiteMedSAM, whole object**: **{obj.prop.volume_ml:.2f} mL** on slices **{lo}–{hi}**" in note
    assert "threshold 0.50" in note and "the label's box on the slice" in note
    assert "\n| LiteMedSAM | " in note  # its row of the 3D table
    assert out["obj_view"].ndim == 3 and "3D object (LiteMedSAM, dotted)" in out["status"]
    # beside SeqPatch's object, each exported as its own mask
    segment_object(s, "seqpatch")
    assert set(s.objects3d) == {"litemedsam", "seqpatch"}
    assert set(clicks_record(s)["objects_3d"]) == {"litemedsam", "seqpatch"}
    files = export(s)["files"]
    path = next(f for f in files if f.endswith("sphere_litemedsam_3d_mask.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(path)) != 0, obj.prop.mask3d)
    handlers.undo(s)
    handlers.undo(s)
    assert not s.objects3d


def test_litemedsam_whole_object_without_its_weights_is_one_line(bright, sphere_files):
    s = handlers.load(bright, None, *sphere_files)["state"]
    handlers.segment(s, *CENTRE)
    with pytest.raises(UserNotice) as info:
        segment_object(s, "litemedsam")
    assert info.value.message == BOX_WEIGHTS_MISSING and not s.objects3d
