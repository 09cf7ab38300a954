"""Tests of seqpatch_core.inference.propagate: the slice-to-slice walk, its stopping rules and the 3D result.

The sphere volumes, ``BrightNet`` and ``BrightBoxNet`` (stand-ins for the click networks and for
LiteMedSAM, so the real pipeline runs in milliseconds) come from ``helpers``.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from helpers import BrightBoxNet, bright_predictor, sphere_arrays

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import dice, mask_click
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference.boxes import BoxPredictor, box_around
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.inference.propagate import box_step_margin_px, iter_propagate_boxes, propagate, propagate_boxes


def test_follows_sphere_and_stops_on_area_jump():
    # radius 9 mm, 2 mm slices: areas at dz = 0..4 are about 254, 241, 204, 141, 53 px; the last
    # step (53 / 141 < 1/2) is an area jump under the default ratio 2, allowed under ratio 3.
    pred = bright_predictor()
    prop = propagate(pred, (6, 32, 30), method="seqpatch")
    assert prop.mask3d.shape == (12, 64, 64) and prop.mask3d.dtype == bool
    assert prop.z_range == (3, 9)
    assert prop.stops == {"+z": "area_jump", "-z": "area_jump"}
    zs = np.flatnonzero(prop.mask3d.any(axis=(1, 2)))
    assert (zs.min(), zs.max()) == prop.z_range
    assert [r["z"] for r in prop.per_slice] == list(range(3, 10))

    wide = propagate(pred, (6, 32, 30), method="seqpatch", max_area_ratio=3.0)
    assert wide.z_range == (2, 10)
    assert wide.stops == {"+z": "vanished", "-z": "vanished"}
    _, label = sphere_arrays()
    inter = np.logical_and(wide.mask3d, label).sum()
    assert 2 * inter / (wide.mask3d.sum() + label.sum()) > 0.85
    # volume from the voxel count and spacing (2 x 1 x 1 mm = 0.002 mL per voxel)
    assert wide.volume_ml == pytest.approx(wide.mask3d.sum() * 0.002)
    assert wide.volume_ml == pytest.approx(4 / 3 * np.pi * 9.0**3 / 1000, rel=0.2)


def test_stops_at_volume_end_and_keeps_window():
    # a ball far larger than the volume: every slice holds the object
    pred = bright_predictor(shape=(5, 48, 48), centre=(2.0, 24.0, 24.0), radius_mm=40.0, spacing_zyx=(0.5, 1.0, 1.0))
    before = pred.window_spec
    prop = propagate(pred, (2, 24, 24), method="unet")
    assert prop.z_range == (0, 4)
    assert prop.stops == {"+z": "volume_end", "-z": "volume_end"}
    assert pred.window_spec == before  # the session's window setting is restored


# ----------------------------------------------------------------------------- stopping rules, stubbed


def _disc(r: float, cy=20.0, cx=20.0, shape=(40, 40)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _stub(monkeypatch, masks: dict[int, np.ndarray]) -> list[tuple]:
    """Predictor.predict answers ``masks[z]`` (empty if absent); returns the list of calls (z, y, x)."""
    calls: list[tuple] = []

    def fake_predict(self, point_zyx, method="seqpatch", preset=None, threshold=0.5, **options):
        calls.append(tuple(point_zyx))
        return SimpleNamespace(mask=masks.get(int(point_zyx[0]), np.zeros((40, 40), bool)))

    monkeypatch.setattr(Predictor, "predict", fake_predict)
    return calls


def _stub_predictor(nz=8) -> Predictor:
    vol = volume_from_array(np.random.default_rng(1).normal(size=(nz, 40, 40)), spacing=(3.0, 0.5, 0.5))
    pred = Predictor({}, device="cpu")
    pred.set_volume(vol)
    return pred


def test_area_ratio_and_vanish_rules(monkeypatch):
    a = _disc(8)  # 197 px
    masks = {
        4: a,
        5: _disc(7),  # x0.77: kept
        6: _disc(12),  # x2.9 of slice 5: a leak, discarded, +z stops
        7: _disc(7),  # never reached
        3: _disc(6, cy=22, cx=18),  # x0.58: kept
        2: _disc(1),  # 5 px: x0.045, an area jump
    }
    calls = _stub(monkeypatch, masks)
    prop = propagate(_stub_predictor(), (4, 20, 20), max_area_ratio=2.0)
    assert prop.z_range == (3, 5)
    assert prop.stops == {"+z": "area_jump", "-z": "area_jump"}
    assert [r["z"] for r in prop.per_slice] == [3, 4, 5]
    assert not prop.mask3d[6].any() and not prop.mask3d[2].any()
    assert prop.volume_ml == pytest.approx(prop.mask3d.sum() * 3.0 * 0.25 / 1000)
    # each next click is the previous accepted slice's centroid
    assert calls[0] == (4, 20.0, 20.0)
    assert [c[0] for c in calls] == [4, 5, 6, 3, 2]
    assert calls[3][1:] == pytest.approx((20.0, 20.0))  # slice 3 is clicked at slice 4's centre
    assert calls[4][1:] == pytest.approx((22.0, 18.0))  # slice 2 at slice 3's centre

    # a ratio of 50 keeps slices 6 and 7 (then the volume ends) and the 5 px slice 2 (then slice 1 vanishes)
    _stub(monkeypatch, masks)
    loose = propagate(_stub_predictor(), (4, 20, 20), max_area_ratio=50.0)
    assert loose.z_range == (2, 7)
    assert loose.stops == {"+z": "volume_end", "-z": "vanished"}


def test_empty_first_slice_and_bad_ratio(monkeypatch):
    _stub(monkeypatch, {})
    prop = propagate(_stub_predictor(), (4, 20, 20))
    assert prop.z_range == (4, 4) and not prop.mask3d.any() and prop.volume_ml == 0.0
    assert prop.stops == {"+z": "empty_start", "-z": "empty_start"}
    with pytest.raises(InputError):
        propagate(_stub_predictor(), (4, 20, 20), max_area_ratio=1.0)
    with pytest.raises(InputError):
        propagate(_stub_predictor(), (99, 20, 20))


def test_mask_click_uses_nearest_pixel_for_a_ring():
    ring = _disc(10) & ~_disc(6)
    y, x = mask_click(ring)
    assert ring[int(round(y)), int(round(x))]
    assert np.hypot(y - 20, x - 20) == pytest.approx(7.0, abs=1.0)
    assert mask_click(_disc(3, cy=10, cx=30)) == pytest.approx((10.0, 30.0))
    with pytest.raises(InputError):
        mask_click(np.zeros((5, 5), bool))


def test_iter_propagate_yields_each_slice_as_it_is_segmented():
    """The generator behind propagate: the clicked slice, then +z, then -z; a rejected slice ends its
    direction with its reason; the caller may stop early, and nothing more is segmented then."""
    from seqpatch_core.inference.propagate import iter_propagate

    pred = bright_predictor()
    steps = list(iter_propagate(pred, (6, 32, 30), method="seqpatch"))
    assert [(s.z, s.direction) for s in steps[:2]] == [(6, "click"), (7, "+z")]
    assert [s.z for s in steps if s.accepted] == [6, 7, 8, 9, 5, 4, 3]
    assert [(s.z, s.stop) for s in steps if not s.accepted] == [(10, "area_jump"), (2, "area_jump")]
    assert all(s.mask.shape == (64, 64) and s.area_px == int(s.mask.sum()) for s in steps)
    prop = propagate(pred, (6, 32, 30), method="seqpatch")
    np.testing.assert_array_equal(prop.mask3d[6], steps[0].mask)

    calls = []
    real = pred.predict
    pred.predict = lambda *a, **k: calls.append(a) or real(*a, **k)
    first = next(iter_propagate(pred, (6, 32, 30)))
    assert len(calls) == 1 and first.z == 6


# ----------------------------------------------------------------------------- LiteMedSAM, box to box


def _box_predictor(**kw) -> BoxPredictor:
    """A BoxPredictor with :class:`helpers.BrightBoxNet` holding ``sphere_arrays(**kw)`` and a bone
    corner, which keeps every slice's range the same whether the ball is on it or not."""
    image, _ = sphere_arrays(**kw)
    image[:, -2:, -2:] = 1000
    boxes = BoxPredictor(BrightBoxNet())
    boxes.set_volume(volume_from_array(image, spacing=kw.get("spacing_zyx", (2.0, 1.0, 1.0)), modality="CT"))
    return boxes


@pytest.mark.parametrize("z0", [4, 6, 8])  # growing, then shrinking, from either side of the equator
def test_litemedsam_follows_the_sphere_box_to_box_and_stops_at_its_ends(z0):
    _, label = sphere_arrays()  # the ball holds slices 2..10 (radius 9 mm, 2 mm slices)
    boxes = _box_predictor()
    start = box_around(label[z0], z0, 2)
    steps = list(iter_propagate_boxes(boxes, start))
    assert steps[0].box == start and steps[0].direction == "click"
    assert steps[0].click == ((start.y0 + start.y1) / 2, (start.x0 + start.x1) / 2)
    margin = box_step_margin_px((64, 64))
    assert margin == 1  # 3 px of the 256 px input is 0.75 px of a 64 px slice, at least 1
    accepted = {s.z: s for s in steps if s.accepted}
    for s in steps[1:]:  # each box is the previous accepted slice's mask's box plus the margin
        prev = accepted[s.z - 1 if s.direction == "+z" else s.z + 1]
        assert s.box == box_around(prev.mask, s.z, margin)
    assert [(s.z, s.stop) for s in steps if not s.accepted] == [(11, "vanished"), (1, "vanished")]
    assert boxes.encoder_runs == len(steps)  # one encoder pass per slice

    prop = propagate_boxes(boxes, start.as_list())
    assert prop.z_range == (2, 10) and prop.stops == {"+z": "vanished", "-z": "vanished"}
    assert [r["z"] for r in prop.per_slice] == list(range(2, 11))
    assert prop.per_slice[z0 - 2]["box"] == start.as_list()
    assert dice(prop.mask3d, label) > 0.95
    assert prop.volume_ml == pytest.approx(prop.mask3d.sum() * 0.002)


def test_litemedsam_stops_at_the_volume_end_and_on_an_empty_start():
    boxes = _box_predictor(shape=(5, 48, 48), centre=(2.0, 24.0, 24.0), radius_mm=40.0, spacing_zyx=(0.5, 1.0, 1.0))
    ticks = []
    prop = propagate_boxes(boxes, [2, 10, 10, 37, 37], on_slice=ticks.append)
    assert prop.z_range == (0, 4) and prop.stops == {"+z": "volume_end", "-z": "volume_end"}
    assert ticks == [1, 2, 3, 4, 5]

    empty = propagate_boxes(_box_predictor(), [0, 10, 10, 20, 20])  # slice 0 holds no ball
    assert empty.stops == {"+z": "empty_start", "-z": "empty_start"} and not empty.mask3d.any()


@pytest.mark.parametrize(
    ("box", "options", "says"),
    [
        ([6, 10, 10, 10, 20], {}, "no area"),
        ([6, 10, 10, 70, 20], {}, "outside the slice"),
        ([6, 10, 10, 20, 20], {"margin_px": 0}, ">= 1 px"),
    ],
)
def test_litemedsam_refuses_a_bad_box_before_any_work(box, options, says):
    boxes = _box_predictor()
    with pytest.raises(InputError, match=says):
        propagate_boxes(boxes, box, **options)
    assert boxes.encoder_runs == 0
