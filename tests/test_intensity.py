"""Tests of seqpatch_core.images.intensity: presets, percentiles, the auto rule and parsing."""

from __future__ import annotations

import time

import numpy as np
import pytest

from seqpatch_core.base.errors import InputError
from seqpatch_core.images.intensity import (
    CT_PRESETS,
    Window,
    apply_window,
    auto_window,
    mr_window,
    preset_window,
    resolve_window,
)
from seqpatch_core.images.volume import volume_from_array


@pytest.mark.parametrize(
    "name,lo,hi",
    [("soft", -160, 240), ("lung", -1350, 150), ("bone", -500, 1300), ("brain", 0, 80)],
)
def test_presets(name: str, lo: float, hi: float) -> None:
    w = preset_window(name)
    assert (w.lo, w.hi, w.name) == (lo, hi, name)
    assert (w.width, w.level) == CT_PRESETS[name]


def test_str() -> None:
    assert str(preset_window("lung")) == "lung W1500/L-600"
    with pytest.raises(InputError):
        Window(1.0, 1.0, "flat")


def test_mr_percentiles_and_speed() -> None:
    a = np.arange(1001, dtype=np.float32)
    w = mr_window(a, 10, 90)
    assert (w.lo, w.hi, w.name) == (100.0, 900.0, "mr")
    assert mr_window(np.array([0, 0, 0, 0, 5.0])).hi > mr_window(np.array([0, 0, 0, 0, 5.0])).lo

    big = np.random.default_rng(0).random((100, 512, 512), dtype=np.float32)
    mr_window(big)  # warm-up
    t0 = time.perf_counter()
    w = mr_window(big)
    assert time.perf_counter() - t0 < 0.2  # ~50 ms target; generous for a loaded CI box
    assert w.lo == pytest.approx(0.005, abs=0.002) and w.hi == pytest.approx(0.995, abs=0.002)


def _ct_slice_volume():
    """One 1 mm CT slice: left half air (-1000 HU), right half water (0 HU)."""
    a = np.zeros((3, 128, 128), np.float32)
    a[:, :, :64] = -1000.0
    a[:, 100:, 100:] = 700.0  # a bone block
    return volume_from_array(a, spacing=(2.0, 1.0, 1.0), modality="CT")


def test_auto_ct_rule() -> None:
    vol = _ct_slice_volume()
    assert auto_window(vol, (1, 64, 10)).name == "lung"
    assert auto_window(vol, (1, 40, 110)).name == "soft"
    assert auto_window(vol, (1, 120, 120)).name == "bone"
    assert auto_window(vol).name == "lung"  # whole slice: 50 % air
    with pytest.raises(InputError):
        auto_window(vol, (1, 200, 10))


def test_auto_mr_and_guess_ct_from_air() -> None:
    mr = volume_from_array(np.random.default_rng(1).random((4, 16, 16)) * 500, modality="MR")
    assert auto_window(mr).name == "mr"
    unknown_ct = volume_from_array(np.where(np.arange(256).reshape(16, 16) < 128, -1000.0, 40.0))
    assert auto_window(unknown_ct, (0, 2, 2)).name == "lung"


def test_resolve_window() -> None:
    vol = _ct_slice_volume()
    w = resolve_window(" 1500,-600 ", vol)
    assert (w.lo, w.hi, w.width, w.level) == (-1350, 150, 1500, -600)
    assert resolve_window("BONE", vol).name == "bone"
    assert resolve_window("mr", vol).name == "mr"
    assert resolve_window("auto", vol, (1, 40, 110)).name == "soft"
    for bad in ("banana", "0,40", "-5,40", "1,2,3", "nan,1", ""):
        with pytest.raises(InputError) as e:
            resolve_window(bad, vol)
        msg = str(e.value)
        assert "\n" not in msg and "auto" in msg and "W,L" in msg


def test_apply_window() -> None:
    a = np.linspace(-2000, 2000, 4 * 9 * 7, dtype=np.float32).reshape(4, 9, 7)
    before = a.copy()
    out = apply_window(a, preset_window("soft"))
    assert out.shape == a.shape and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_array_equal(a, before)  # input untouched
    np.testing.assert_allclose(apply_window(np.array([40.0]), preset_window("soft")), [0.5])
