"""Real atlas structures: prepare -> bank -> sample on a tiny synthetic atlas, the hemisphere split,
the refusal of the Colin27 brain and its atlases, and the training mix and record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from seqpatch_core.base.errors import InputError
from seqpatch_core.data import atlases
from seqpatch_core.data.synth import SynthSlice
from seqpatch_core.training.batches import SLICE_SIZE, make_batch
from seqpatch_core.training.config import TrainConfig
from seqpatch_core.training.loop import _record


def tiny_atlas_source(folder, name="labels.nii.gz"):
    """A template (40 x 36 x 30 voxels of 1.5 x 1.2 x 2.0 mm, flipped x axis) with a bright ellipsoid
    brain, and a label map on another grid (1 mm, identity) with two blobs: label 1 left (RAS x < 0,
    LPS x > 0) and label 2 right; the midline is x = 0."""
    nx, ny, nz, sp = 40, 36, 30, (1.5, 1.2, 2.0)
    z, y, x = np.mgrid[:nz, :ny, :nx].astype(np.float32)
    xw, yw, zw = -(x - 19.5) * sp[0], (y - 17.5) * sp[1], (z - 14.5) * sp[2]  # LPS world, x flipped
    brain = (xw / 26) ** 2 + (yw / 19) ** 2 + (zw / 26) ** 2 < 1
    tpl = sitk.GetImageFromArray(np.where(brain, 100 + 20 * np.sin(yw / 3), 0).astype(np.float32))
    tpl.SetSpacing(sp)
    tpl.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    tpl.SetOrigin((19.5 * sp[0], -17.5 * sp[1], -14.5 * sp[2]))
    n = 64
    z, y, x = np.mgrid[:n, :n, :n].astype(np.float32) - 31.5  # 1 mm, world = index - 31.5 (LPS)
    lab = np.zeros((n, n, n), np.int16)
    lab[(x - 12) ** 2 + y**2 + z**2 < 7**2] = 1  # LPS x > 0: left hemisphere
    lab[(x + 12) ** 2 + y**2 + z**2 < 7**2] = 2  # right hemisphere
    labels = sitk.GetImageFromArray(lab)
    labels.SetOrigin((-31.5, -31.5, -31.5))
    sitk.WriteImage(tpl, str(folder / "template.nii.gz"))
    sitk.WriteImage(labels, str(folder / name))
    return atlases.AtlasSource("tiny", str(folder / name), None, str(folder / "template.nii.gz"), None, "test")


@pytest.fixture(scope="module")
def bank_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("atlas")
    summary = atlases.prepare_atlases(d / "bank", [tiny_atlas_source(d)])
    assert summary["tiny"]["objects"] == summary["tiny"]["train"] + summary["tiny"]["val"]
    return d / "bank"


def test_prepare_splits_objects_by_hemisphere(bank_dir):
    with np.load(bank_dir / "tiny.npz") as z:
        objects, spacing, tpl = z["objects"], z["spacing_zyx"], z["template"]
        prov = json.loads(str(z["provenance"]))
    assert prov["id"] == "tiny" and tpl.dtype == np.float16 and 0 <= tpl.min() and tpl.max() <= 1
    np.testing.assert_allclose(spacing, [2.0, 1.2, 1.5])  # (z, y, x) of the template grid
    cols = dict(zip(atlases.OBJECT_COLUMNS, objects.T, strict=True))
    # label 1 lies wholly left, label 2 wholly right: every object of one label has one hemisphere
    assert set(cols["hemi"][cols["value"] == 1]) == {-1}
    assert set(cols["hemi"][cols["value"] == 2]) == {1}
    # each blob shows in all three orientations; the sagittal slices through it are the same on both sides
    for orient in range(3):
        assert ((cols["orient"] == orient) & (cols["value"] == 1)).any()
    sag = cols["orient"] == 2
    assert (sag & (cols["value"] == 1)).sum() == (sag & (cols["value"] == 2)).sum() > 0
    # small objects (the blobs' caps, < 40 mm²) are left out
    px_area = {0: 1.2 * 1.5, 1: 2.0 * 1.5, 2: 2.0 * 1.2}
    areas = np.array([a * px_area[o] for a, o in zip(cols["area_px"], cols["orient"], strict=True)])
    assert areas.min() >= 40


def test_bank_samples_each_split_from_its_own_hemisphere(bank_dir):
    bank = atlases.AtlasBank(bank_dir)
    rng = np.random.default_rng(0)
    for split, side in (("train", "left"), ("val", "right")):
        for _ in range(6):
            s = bank.sample(rng, 96, split, spacing_mm=0.8)
            assert isinstance(s, SynthSlice) and s.kind.endswith(f"{side})")
            assert s.image.shape == s.label.shape == (96, 96) and s.image.dtype == np.float32
            assert s.label.dtype == np.uint8 and 0 <= s.image.min() and s.image.max() <= 1
            assert s.label[int(round(s.click[0])), int(round(s.click[1]))] == 1
            assert s.spacing_mm == 0.8 and s.label.sum() * 0.8**2 > 30
            assert abs(s.click[0] - 48) < 20 and abs(s.click[1] - 48) < 20  # cropped around the object
    with pytest.raises(ValueError):
        bank.split("test")


@pytest.mark.parametrize("name", ["ch2.nii.gz", "ch2better.nii.gz", "aal.nii.gz", "atlas_aal.nii.gz",
                                  "brodmann.nii.gz", "atlas_marsatlas.nii.gz", "Colin27.nii"])
def test_colin27_and_its_atlases_are_refused(tmp_path, name):
    with pytest.raises(InputError, match="Colin27"):
        atlases.check_allowed(tmp_path / name)
    src = tiny_atlas_source(tmp_path, name=name) if name.endswith(".nii.gz") else None
    if src is not None:  # prepare refuses before reading anything
        with pytest.raises(InputError, match="Colin27"):
            atlases.prepare_atlases(tmp_path / "bank", [src])
        assert not (tmp_path / "bank").exists()
    atlases.check_allowed(tmp_path / "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz")  # allowed


def test_unknown_source_and_empty_bank_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="unknown atlas source"):
        atlases.prepare_atlases(tmp_path, ["nope"])
    with pytest.raises(InputError, match="prepare-atlases"):
        atlases.AtlasBank(tmp_path)


def test_training_mix_and_record_carry_the_atlases(bank_dir):
    bank = atlases.AtlasBank(bank_dir)
    batch = make_batch(np.random.default_rng(1), 3, None, atlases=bank, atlas_ratio=1.0)
    assert batch.images.shape == batch.labels.shape == (3, SLICE_SIZE, SLICE_SIZE)
    # without atlases the stream is drawn exactly as before
    a = make_batch(np.random.default_rng(2), 1, None)
    b = make_batch(np.random.default_rng(2), 1, None, atlases=bank, atlas_ratio=0.0)
    assert (a.images == b.images).all()
    tc = TrainConfig(atlas_ratio=0.25, atlas_bank=str(bank_dir))
    state = {"step": 0, "samples": 0, "best": 0.5, "history": []}
    rec = _record(tc, state, 0.0, "unet")
    assert rec["training"]["atlas_ratio"] == 0.25
    assert rec["training"]["atlas"] == {"ratio": 0.25, "bank": str(bank_dir), "sources": ["tiny"],
                                        "split": "train (left/midline)"}
    assert _record(TrainConfig(), state, 0.0, "unet")["training"]["atlas"] is None


def test_evaluate_atlas_reports_dice_per_method(bank_dir, small_weights, one_thread, capsys):
    from seqpatch_core.cli.main import main

    argv = ["evaluate", "--atlas", "2", "--atlas-bank", str(bank_dir), "--device", "cpu", "--no-coarsen",
            "--weights-seqpatch", str(small_weights["seqpatch"]), "--weights-unet", str(small_weights["unet"])]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "atlas val (n=2, seed=0, sources=tiny)" in out and "seqpatch" in out and "unet" in out
    assert main(["evaluate", "--atlas", "2", "--synthetic", "2"]) == 2  # one set at a time


def test_keep_leaves_only_the_listed_labels(tmp_path):
    """A source's ``keep`` (structures with visible borders) drops every other label before objects are listed."""
    from dataclasses import replace

    src = replace(tiny_atlas_source(tmp_path), keep=(2,))
    atlases.prepare_atlases(tmp_path / "bank", [src])
    with np.load(tmp_path / "bank" / "tiny.npz") as z:
        cols = dict(zip(atlases.OBJECT_COLUMNS, z["objects"].T, strict=True))
    assert set(cols["value"]) == {2} and len(cols["value"]) > 0
