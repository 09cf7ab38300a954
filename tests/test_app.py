"""Tests of the demo's handlers (no browser) and of its HTTP API through gradio_client.

The networks are small random-weight checkpoints written to a temporary folder, so the tests run in
seconds on a CPU and check the plumbing (shapes, geometry, undo, exports, errors), not accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import free_port

from app import LAUNCH_KWARGS, build_demo, find_examples, handlers, outputs, render
from app.drawing import COLOURS
from app.exports import clicks_record, export, mask_volume
from app.session import Session
from app.view import LIKELIHOOD_PX, plane_point, render_planes, render_view, running_note
from seqpatch_core.images.io import read_volume
from seqpatch_core.inference import predictor as predictor_module
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method import rays

SHAPE = (4, 64, 72)  # (z, y, x)
SPACING_XYZ = (0.9, 0.8, 3.0)
ORIGIN = (-31.5, 12.25, 40.0)
# 20° about z: the exported mask must keep a non-trivial direction too.
_A = np.deg2rad(20.0)
DIRECTION = (np.cos(_A), -np.sin(_A), 0.0, np.sin(_A), np.cos(_A), 0.0, 0.0, 0.0, 1.0)
CENTRE = (30.0, 38.0)  # (y, x) of the disc


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(small_weights) -> dict[str, Path]:
    return small_weights


@pytest.fixture(scope="module")
def models(small_models) -> dict:
    return dict(small_models)


@pytest.fixture(scope="module")
def predictor(models) -> Predictor:
    return Predictor(models, device="cpu")


def _write(arr: np.ndarray, path: Path, like: sitk.Image | None = None) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    if like is not None:
        img.CopyInformation(like)
    else:
        img.SetSpacing(SPACING_XYZ)
        img.SetOrigin(ORIGIN)
        img.SetDirection(DIRECTION)
    sitk.WriteImage(img, str(path))
    return img


@pytest.fixture(scope="module")
def volume_files(tmp_path_factory) -> tuple[str, str]:
    """A CT-like volume: soft tissue with a bright disc (largest on slice 2), and its label."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    z, y, x = SHAPE
    yy, xx = np.mgrid[:y, :x]
    r2 = (yy - CENTRE[0]) ** 2 + (xx - CENTRE[1]) ** 2
    arr = np.full(SHAPE, -900.0, dtype=np.float32)
    lab = np.zeros(SHAPE, dtype=np.uint8)
    for k, radius in enumerate((6, 9, 12, 8)):
        arr[k][r2 <= 28**2] = 30.0
        arr[k][r2 <= radius**2] = 200.0
        lab[k][r2 <= radius**2] = 1
    arr += rng.normal(0, 10, SHAPE).astype(np.float32)
    img = _write(arr, d / "disc.nii.gz")
    _write(lab, d / "disc_label.nii.gz", like=img)
    return str(d / "disc.nii.gz"), str(d / "disc_label.nii.gz")


@pytest.fixture()
def loaded(predictor, volume_files) -> Session:
    out = handlers.load(predictor, None, *volume_files)
    return out["state"]


def test_load_shows_summary_and_the_labels_largest_slice(predictor, volume_files):
    out = handlers.load(predictor, None, *volume_files)
    s = out["state"]
    assert s.volume.shape == SHAPE
    assert s.z == 2  # the label's largest slice
    assert out["slice"]["value"] == 2 and out["slice"]["maximum"] == SHAPE[0] - 1
    assert "72×64×4" in out["summary"] and "CT" in out["summary"] and "Label:" in out["summary"]
    f = render.display_factor(SHAPE[1:])
    assert out["overlay"].shape == (SHAPE[1] * f, SHAPE[2] * f, 3) and out["overlay"].dtype == np.uint8
    assert set(outputs.MAIN) >= set(out)


def test_click_runs_both_methods_on_the_slice_grid(loaded):
    out = handlers.segment(loaded, 2, *CENTRE)
    res = loaded.results[2]
    assert set(res) == {"seqpatch", "unet"}
    for r in res.values():
        assert r.mask.shape == SHAPE[1:] and r.mask.dtype == bool
        assert r.likelihood.shape == SHAPE[1:]
    sp = res["seqpatch"]
    assert sp.patches.shape[0] == 16 and sp.patches.shape == sp.ray_likelihoods.shape
    assert out["rays"].ndim == 3 and out["rays"].shape[2] == 3
    # drawn at the width it is shown at, in the slice's aspect
    lik, over = out["lik_seqpatch"].shape, out["overlay"].shape
    assert lik[1] == LIKELIHOOD_PX and abs(lik[0] / lik[1] - over[0] / over[1]) < 0.01
    assert "Dice" in out["metrics"] and "SeqPatch" in out["metrics"] and "U-net" in out["metrics"]
    assert "device: **cpu**" in out["metrics"]
    assert out["slice"] == 2


def test_status_and_clicks_record_say_which_working_grid_each_method_used(volume_files):
    from helpers import BrightNet

    coarse = BrightNet("seqpatch")
    coarse.record["coarsen"] = {"radius_px": 1.0}  # any object is "large": up the pyramid
    pred = Predictor({"seqpatch": coarse, "unet": BrightNet("unet")}, device="cpu")
    s = handlers.load(pred, None, *volume_files)["state"]
    out = handlers.segment(s, 2, *CENTRE)
    res = s.results[2]
    assert res["seqpatch"].coarsened and not res["unet"].coarsened
    base = rays.WORKING_SPACING_MM["CT"]
    grid = res["seqpatch"].working_spacing
    assert grid > base and f"SeqPatch {grid:g} mm (large object: segmented again" in out["status"]
    assert f"U-net {base:g} mm." in out["status"]
    rec = clicks_record(s)["clicks"][-1]["results"]
    assert rec["seqpatch"]["coarsened"] is True and rec["seqpatch"]["working_spacing_mm"] == pytest.approx(grid)
    assert rec["seqpatch"]["grids_mm"] == list(res["seqpatch"].grids_mm) and rec["seqpatch"]["grids_mm"][0] == base
    assert rec["unet"]["coarsened"] is False and rec["unet"]["working_spacing_mm"] == pytest.approx(1.0)
    # the page's checkbox: this session's next clicks take one pass; another session keeps its own
    other = handlers.load(pred, None, *volume_files)["state"]
    handlers.set_second_pass(s, False)
    out = handlers.segment(s, 2, *CENTRE)
    assert not s.results[2]["seqpatch"].coarsened and f"SeqPatch {base:g} mm," in out["status"]
    handlers.segment(other, 2, *CENTRE)
    assert other.results[2]["seqpatch"].coarsened
    # a new image keeps the checkbox's value
    fresh = handlers.load(pred, s, *volume_files, "auto", 0.5, 0.3, False, False)["state"]
    assert fresh.second_pass is False and pred.coarsen is True and fresh.predictor.coarsen is True  # per call
    assert handlers.set_second_pass(None, True) == {}


def test_click_shows_the_unet_first_then_seqpatch(loaded):
    """With no SeqPatch time yet in the session, or a slow one, the U-net's answer is sent first."""
    steps = handlers.segment_steps(loaded, 2, *CENTRE)
    first = next(steps)  # the U-net is done, SeqPatch not yet
    assert set(loaded.results[2]) == {"unet"} and len(loaded.history) == 1
    assert first["slice"] == 2 and first["lik_unet"].shape[1] == LIKELIHOOD_PX
    assert "SeqPatch running…" in first["status"] and "a few seconds" in first["status"]
    assert "(2, " in first["status"]  # the click's point is shown at once
    assert "**U-net**: Dice" in first["metrics"] and "| SeqPatch |" not in first["metrics"]
    assert "|---|" not in first["metrics"]  # the table (both rows) comes with SeqPatch
    last = next(steps)
    assert set(loaded.results[2]) == {"seqpatch", "unet"} and len(loaded.history) == 1
    assert "| SeqPatch |" in last["metrics"] and "| U-net |" in last["metrics"]
    assert "running" not in last["status"] and last["slice"] == 2
    assert last["lik_seqpatch"].shape[1] == LIKELIHOOD_PX
    # only what changed is redrawn: the U-net's map stands, the per-ray pictures follow in their event
    assert "lik_unet" not in last and "rays" not in last and "ray_detail" not in last
    assert set(handlers.draw_rays(loaded)) == {"rays", "ray_detail"}
    with pytest.raises(StopIteration):
        next(steps)
    took = loaded.seqpatch_seconds
    assert took is not None and took > 0
    assert loaded.seqpatch_first_seconds is not None and loaded.seqpatch_first_seconds <= took
    # the next click's estimate is the last SeqPatch time of this session
    loaded.seqpatch_seconds = loaded.seqpatch_first_seconds = 7.4
    first = next(handlers.segment_steps(loaded, 1, *CENTRE))
    assert "about 7 s on this machine" in first["status"] and set(loaded.results[1]) == {"unet"}
    loaded.seqpatch_seconds = 0.3
    assert "about a second" in running_note(loaded)


@pytest.mark.parametrize("took", [0.2, handlers.UNET_FIRST_S])
def test_a_fast_seqpatch_comes_in_one_view_with_the_unet(loaded, took):
    """SeqPatch's first grid as fast as :data:`handlers.UNET_FIRST_S` at the last click: no U-net-only
    view, both answers (and the full table) in the first one."""
    loaded.seqpatch_first_seconds = took
    views = list(handlers.segment_steps(loaded, 2, *CENTRE))
    assert len(views) == 1 and set(loaded.results[2]) == {"seqpatch", "unet"} and len(loaded.history) == 1
    (view,) = views
    assert "running" not in view["status"] and view["slice"] == 2
    assert "| SeqPatch |" in view["metrics"] and "| U-net |" in view["metrics"]
    assert view["lik_seqpatch"].shape[1] == view["lik_unet"].shape[1] == LIKELIHOOD_PX
    assert "rays" not in view  # (drawn by their own event)


@pytest.mark.parametrize(("growth", "stands"), [(100.0, True), (None, False)])
def test_seqpatch_first_grid_is_shown_while_the_next_is_checked(volume_files, growth, stands):
    """A click whose SeqPatch answer is checked on a coarser grid shows that answer at once, says the
    check runs, then ends with the answer of the grid that won; a finer answer that stood is not drawn
    again."""
    from helpers import BrightNet

    net = BrightNet("seqpatch")
    net.record["coarsen"] = {"radius_px": 1.0, "growth": growth}  # every mask checked on the next grid
    pred = Predictor({"seqpatch": net, "unet": BrightNet("unet")}, device="cpu")
    s = handlers.load(pred, None, *volume_files)["state"]
    views = list(handlers.segment_steps(s, 2, *CENTRE))  # the session's first click: the U-net first
    base = rays.WORKING_SPACING_MM["CT"]
    first_grid = views[1]
    assert "SeqPatch running: checking the" in first_grid["status"] and first_grid["lik_seqpatch"].ndim == 3
    assert f"its {base:g} mm answer is shown" in first_grid["progress"] and "lik_unet" not in first_grid
    last = views[-1]
    assert "running" not in last["status"] and "| SeqPatch |" in last["metrics"]
    sp = s.results[2]["seqpatch"]
    assert len(sp.grids_mm) == len(views) - 1  # the U-net's view, then one per SeqPatch grid
    assert (sp.working_spacing == base) is stands and ("lik_seqpatch" in last) is not stands
    # a fast SeqPatch: its first grid's answer comes in the U-net's view, with the check's note
    s.seqpatch_first_seconds = 0.0
    views = list(handlers.segment_steps(s, 1, *CENTRE))
    first = views[0]
    assert "SeqPatch running: checking the" in first["progress"] and first["slice"] == 1
    assert first["lik_unet"].ndim == first["lik_seqpatch"].ndim == 3 and "| U-net |" in first["metrics"]
    assert len(views) == len(s.results[1]["seqpatch"].grids_mm)  # one view per SeqPatch grid
    assert "running" not in views[-1]["status"] and "lik_unet" not in views[-1]


def test_undo_or_threshold_while_seqpatch_runs(loaded):
    handlers.segment(loaded, 2, *CENTRE)
    loaded.seqpatch_first_seconds = 9.0  # a slow SeqPatch: each click's U-net answer comes first
    before = loaded.results[2]
    steps = handlers.segment_steps(loaded, 2, CENTRE[0] + 1, CENTRE[1])
    next(steps)
    handlers.set_threshold(loaded, 0.3)  # while SeqPatch runs: the U-net result is re-thresholded now
    assert loaded.results[2]["unet"].threshold == 0.3
    next(steps)
    assert all(r.threshold == 0.3 for r in loaded.results[2].values())
    loaded.seqpatch_first_seconds = 9.0
    steps = handlers.segment_steps(loaded, 2, *CENTRE)
    next(steps)
    handlers.undo(loaded)  # the click is taken back before SeqPatch is done: its result is dropped
    handlers.undo(loaded)
    assert loaded.results[2] is before
    out = next(steps)
    assert loaded.results[2] is before and len(loaded.history) == 1
    assert "| SeqPatch |" in out["metrics"]  # the view of what the session holds


def test_one_method_loaded_gives_one_view(models, volume_files):
    for only in ("seqpatch", "unet"):
        s = handlers.load(Predictor({only: models[only]}, device="cpu"), None, *volume_files)["state"]
        views = list(handlers.segment_steps(s, 2, *CENTRE))
        assert len(views) == 1 and set(s.results[2]) == {only}
        assert "running" not in views[0]["status"]
    with pytest.raises(gr.Error, match="outside the volume"):  # errors are one line from the generator too
        next(handlers.segment_steps(s, 9, *CENTRE))


def test_click_events_stream_and_empty_the_teaching_panels(predictor):
    import inspect

    demo = build_demo(predictor, examples=[])
    by_name = {f.api_name: f for f in demo.fns.values()}
    for name in ("on_select", "segment"):
        assert inspect.isgeneratorfunction(by_name[name].fn)
    for name in ("on_select", "segment", "load", "undo", "reset"):  # emptied in the same answer
        ids = {getattr(o, "elem_id", None) for o in by_name[name].outputs}
        assert {"overlay", "metrics", "rob-plot", "rob-note", "obj-view", "cmp-ref", "feat-img"} <= ids, name
    # a click made while the previous one runs is sent, not dropped (Gradio's default drops it)
    assert by_name["on_select"].trigger_mode == "multiple"
    assert by_name["segment"].trigger_mode == "multiple"


def test_threshold_reuses_cached_likelihoods(loaded, monkeypatch):
    handlers.segment(loaded, 2, *CENTRE)

    def boom(*args, **kwargs):
        raise AssertionError("the network ran on a threshold change")

    monkeypatch.setattr(predictor_module, "run_network", boom)
    out = handlers.set_threshold(loaded, 0.3)
    for r in loaded.results[2].values():
        assert r.threshold == 0.3
        assert np.array_equal(r.mask, r.rethreshold(0.3))
    assert "threshold 0.30" in out["metrics"]
    with pytest.raises(AssertionError, match="network ran"):
        handlers.segment(loaded, 2, *CENTRE)  # the patch really is in the path a click takes


def _marker_rows(img: np.ndarray) -> np.ndarray:
    """Rows of a plane picture that are the current-slice line (marker colour across a band of the
    right half clear of the edge letters, which are drawn over the line)."""
    right = img[:, img.shape[1] * 6 // 10 : img.shape[1] * 9 // 10]
    return np.nonzero(np.all(right == COLOURS["marker"], axis=2).all(axis=1))[0]


def test_coronal_and_sagittal_views(loaded):
    sz, sy, sx = loaded.volume.spacing
    z, y, x = SHAPE
    out = render_view(loaded)
    for name, (cols, col_mm) in {"coronal": (x, sx), "sagittal": (y, sy)}.items():
        img = out[name]
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
        h, w = img.shape[:2]
        assert max(h, w) <= 512
        assert h / w == pytest.approx(z * sz / (cols * col_mm), rel=0.03)  # physical aspect
        # the line at the current slice (2 of 4): superior up, so slice k is plane row z - 1 - k
        assert abs(_marker_rows(img).mean() - (z - 1 - loaded.z + 0.5) * h / z) <= 1.5
        assert np.all(img == COLOURS["truth"], axis=2).any()  # the label's outline
    # a click: the planes go through it and show both methods' masks on its slice
    out = handlers.segment(loaded, 1, *CENTRE)
    assert plane_point(loaded) == (round(CENTRE[0]), round(CENTRE[1]))
    for name in ("coronal", "sagittal"):
        img = out[name]
        if any(r.mask.any() for r in loaded.results[1].values()):  # outlines (U-net's drawn last)
            assert any(np.all(img == COLOURS[m], axis=2).any() for m in ("seqpatch", "unet")), name
        h = img.shape[0]
        assert abs(_marker_rows(img).mean() - (z - 1 - 1 + 0.5) * h / z) <= 1.5
    # slice and window changes redraw them (the line moves)
    out = handlers.change_slice(loaded, 3)
    assert abs(_marker_rows(out["coronal"]).mean() - (z - 1 - 3 + 0.5) * out["coronal"].shape[0] / z) <= 1.5
    before = out["coronal"]
    out = handlers.change_window(loaded, "bone")
    assert out["coronal"].shape == before.shape and not np.array_equal(out["coronal"], before)


def test_planes_of_a_one_slice_volume_and_their_speed(predictor):
    from seqpatch_core.images.volume import Volume

    rng = np.random.default_rng(1)
    one = Session(
        predictor=predictor,
        volume=Volume(rng.normal(0, 100, (1, 40, 50)).astype(np.float32), (5.0, 0.7, 0.7), modality="CT"),
    )
    out = render_planes(one)
    assert out["coronal"].shape[1] == 512 and out["coronal"].shape[0] >= 1
    assert out["sagittal"].shape[1] == 512
    big = Session(
        predictor=predictor,
        volume=Volume(rng.normal(0, 100, (17, 256, 256)).astype(np.float32), (5.0, 0.7, 0.7), modality="CT"),
    )
    big.z = 8
    big.label = np.zeros((17, 256, 256), dtype=np.uint8)
    big.label[4:12, 100:160, 90:150] = 1
    render_planes(big)  # warm-up (font, window)
    import time

    t0 = time.perf_counter()
    for _ in range(5):
        out = render_planes(big)
    ms = (time.perf_counter() - t0) / 5 * 1000
    assert ms < 150, f"both planes took {ms:.1f} ms"  # about 5 ms here; generous for slow CI
    h, w = out["coronal"].shape[:2]
    assert w == 512 and h == pytest.approx(512 * 17 * 5.0 / (256 * 0.7), abs=1)


def test_click_replaces_slice_then_undo_and_reset(loaded):
    handlers.segment(loaded, 2, *CENTRE)
    first = loaded.results[2]["seqpatch"]
    handlers.segment(loaded, 2, CENTRE[0] + 2, CENTRE[1] - 1)  # same slice: replaces
    assert loaded.results[2]["seqpatch"] is not first
    handlers.segment(loaded, 1, *CENTRE)
    assert sorted(loaded.results) == [1, 2]
    out = handlers.undo(loaded)
    assert sorted(loaded.results) == [2] and out["slice"] == 1
    handlers.undo(loaded)
    assert loaded.results[2]["seqpatch"] is first
    handlers.undo(loaded)
    assert loaded.results == {}
    with pytest.raises(gr.Error, match="nothing to undo"):
        handlers.undo(loaded)
    handlers.segment(loaded, 3, *CENTRE)
    handlers.reset(loaded)
    assert loaded.results == {} and loaded.history == []


def test_export_mask_geometry_and_clicks_json(loaded, models, volume_files):
    with pytest.raises(gr.Error, match="nothing to export"):
        export(loaded)
    handlers.segment(loaded, 2, *CENTRE)
    handlers.segment(loaded, 0, CENTRE[0] + 1.5, CENTRE[1])
    files = export(loaded)["files"]
    names = [Path(f).name for f in files]
    assert {"disc_seqpatch_mask.nii.gz", "disc_unet_mask.nii.gz", "disc_clicks.json"} <= set(names)
    assert any(n.endswith("_overlay.png") for n in names)

    src = sitk.ReadImage(volume_files[0])
    for m in ("seqpatch", "unet"):
        img = sitk.ReadImage(next(f for f in files if f.endswith(f"_{m}_mask.nii.gz")))
        assert img.GetSize() == src.GetSize()
        assert np.allclose(img.GetSpacing(), src.GetSpacing())
        assert np.allclose(img.GetOrigin(), src.GetOrigin())
        assert np.allclose(img.GetDirection(), src.GetDirection())
        arr = sitk.GetArrayFromImage(img)
        assert np.array_equal(arr, mask_volume(loaded, m))
        assert np.array_equal(arr[2], loaded.results[2][m].mask.astype(np.uint8))
        assert not arr[1].any() and not arr[3].any()

    rec = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    vol = read_volume(volume_files[0])
    assert len(rec["clicks"]) == 2
    c = rec["clicks"][1]
    assert c["voxel_zyx"] == [0, CENTRE[0] + 1.5, CENTRE[1]]
    assert np.allclose(
        c["physical_xyz_mm"], vol.index_to_physical((0, CENTRE[0] + 1.5, CENTRE[1])), atol=1e-3
    )
    assert c["methods"] == ["seqpatch", "unet"] and c["threshold"] == 0.5
    sha = models["seqpatch"].record["sha256"]
    assert rec["weights"]["seqpatch"]["sha256"] == sha and len(sha) == 64
    assert c["results"]["seqpatch"]["weights_sha256"] == sha
    loaded.close()
    assert loaded.tmpdir is None and not Path(files[0]).exists()


def test_bad_upload_is_one_line_error(predictor, tmp_path, volume_files):
    bad = tmp_path / "notes.nii.gz"
    bad.write_text("this is not an image\n" * 20)
    with pytest.raises(gr.Error) as info:
        handlers.load(predictor, None, str(bad))
    msg = info.value.message
    assert "notes.nii.gz" in msg and "\n" not in msg and "Traceback" not in msg

    small = tmp_path / "small_label.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 8, 8), np.uint8)), str(small))
    with pytest.warns(UserWarning, match="label not used"):  # the image loads, without the label
        out = handlers.load(predictor, None, volume_files[0], str(small))
    assert out["state"].label is None
    assert "label not used: label geometry differs" in out["summary"]
    with pytest.raises(gr.Error) as info:  # a label chosen later is refused outright
        handlers.load_label(out["state"], volume_files[0], str(small))
    assert info.value.message.startswith("label not used: label geometry differs")

    # A refused image keeps the session that was there, results included.
    s = handlers.load(predictor, None, *volume_files)["state"]
    handlers.segment(s, 2, *CENTRE)
    with pytest.raises(gr.Error):
        handlers.load(predictor, s, str(bad))
    assert 2 in s.results and s.volume is not None


def test_label_loaded_later_and_view_controls(predictor, volume_files):
    s = handlers.load(predictor, None, volume_files[0])["state"]
    assert s.label is None and s.z == SHAPE[0] // 2
    assert handlers.load_label(s, "/elsewhere/other.nii.gz", volume_files[1]) == {}  # image still loading
    out = handlers.load_label(s, volume_files[0], volume_files[1])
    assert s.label is not None and out["slice"] == 2
    out = handlers.change_window(s, "bone")
    assert (out["width"], out["level"]) == (1800, 400)
    out = handlers.change_wl(s, 350, 50)
    assert out["window"] == "custom" and s.display_window() == s.custom
    out = handlers.change_slice(s, 3)
    assert s.z == 3 and "Ground truth on slice 3" in out["metrics"]
    handlers.change_display(s, 0.6, True)
    handlers.segment(s, 3, *CENTRE)
    assert s.results[3]["seqpatch"].window.name == "custom"


def test_missing_weights_message(volume_files):
    empty = Predictor({}, device="cpu")
    out = handlers.load(empty, None, *volume_files)
    assert "weights/README.md" in out["status"] and "python -m seqpatch_core train" in out["status"]
    with pytest.raises(gr.Error) as info:
        handlers.segment(out["state"], 2, *CENTRE)
    assert "weights/README.md" in info.value.message
    demo = build_demo(empty, examples=[])  # the app still starts
    assert isinstance(demo, gr.Blocks)


def test_click_position_mapping():
    f = 4
    yx = np.array([[0.0, 0.0], [10.0, 5.0], [63.0, 71.0]])
    shown = render.slice_to_display(yx, f)
    back = [render.display_to_slice((p[1], p[0]), f, SHAPE[1:]) for p in shown]
    assert np.allclose(back, yx)
    # Gradio gives [x, y]: a click right of the centre moves x, not y.
    assert render.display_to_slice((200, 8), f, SHAPE[1:]) == pytest.approx((1.625, 49.625))


def test_find_examples_skips_missing(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "a_label.nii.gz").write_bytes(b"x")
    (tmp_path / "orphan_label.nii.gz").write_bytes(b"x")
    assert find_examples(tmp_path) == [[str(tmp_path / "a.nii.gz"), str(tmp_path / "a_label.nii.gz")]]
    assert find_examples(tmp_path / "none") == []


@pytest.mark.slow
def test_gradio_client_load_and_click(predictor, volume_files, tmp_path):
    from gradio_client import Client, handle_file

    demo = build_demo(predictor, examples=[list(volume_files)])
    port = free_port()
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH_KWARGS
    )
    try:
        client = Client(
            f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path), analytics_enabled=False
        )
        out = client.predict(
            handle_file(volume_files[0]),
            handle_file(volume_files[1]),
            "auto",
            0.5,
            0.3,
            False,
            api_name="/load",
        )
        summary = out[0]
        assert "72×64×4" in summary
        out = client.predict(2, CENTRE[0], CENTRE[1], api_name="/segment")
        names = [n for n in outputs.MAIN if n != "state"]  # gradio_client leaves the state out
        overlay, metrics = out[names.index("overlay")], out[names.index("metrics")]
        assert Path(overlay).is_file()
        assert "| SeqPatch |" in metrics and "| U-net |" in metrics
        files = client.predict(api_name="/export")[-1]
        mask = next(f for f in files if str(f).endswith("_seqpatch_mask.nii.gz"))
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))
        assert arr.shape == SHAPE
    finally:
        demo.close()


def test_status_says_when_a_coarser_grid_found_the_object_no_wider(volume_files):
    from helpers import BrightNet

    checked = BrightNet("seqpatch")
    checked.record["coarsen"] = {"radius_px": 1.0, "growth": 1.3}  # climbs once, finds the same object
    pred = Predictor({"seqpatch": checked, "unet": BrightNet("unet")}, device="cpu")
    s = handlers.load(pred, None, *volume_files)["state"]
    out = handlers.segment(s, 2, *CENTRE)
    r = s.results[2]["seqpatch"]
    base = rays.WORKING_SPACING_MM["CT"]
    assert r.working_spacing == base and not r.coarsened and len(r.grids_mm) == 2
    assert f"SeqPatch {base:g} mm (checked on {r.grids_mm[-1]:g} mm: no wider there)" in out["status"]
    assert clicks_record(s)["clicks"][-1]["results"]["seqpatch"]["grids_mm"] == list(r.grids_mm)
