"""train --data: labelled pairs in either layout become training slices."""

import numpy as np
import pytest
import SimpleITK as sitk

from seqpatch_core.base.errors import InputError
from seqpatch_core.data.datasets import LabelledPairs, find_pairs
from seqpatch_core.training.batches import make_batch


def _pair(img_path, lab_path, centre=(30, 40)):
    yy, xx = np.mgrid[:64, :80]
    disc = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < 8**2).astype(np.uint8)
    arr = np.where(disc, 60.0, -900.0).astype(np.float32)[None].repeat(3, 0)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.8, 3.0))
    lab = sitk.GetImageFromArray(disc[None].repeat(3, 0))
    lab.CopyInformation(img)
    sitk.WriteImage(img, str(img_path))
    sitk.WriteImage(lab, str(lab_path))


@pytest.mark.parametrize("layout", ["suffix", "folders"])
def test_pairs_give_training_slices(tmp_path, layout):
    if layout == "suffix":
        _pair(tmp_path / "a_image.nii.gz", tmp_path / "a_label.nii.gz")
    else:
        (tmp_path / "images").mkdir()
        (tmp_path / "labels").mkdir()
        _pair(tmp_path / "images" / "a.nii.gz", tmp_path / "labels" / "a.nii.gz")
    assert len(find_pairs(tmp_path)) == 1
    pairs = LabelledPairs(tmp_path)
    s = pairs.sample(np.random.default_rng(0), 96)
    assert s.image.shape == s.label.shape == (96, 96)
    assert s.label[int(round(s.click[0])), int(round(s.click[1]))] == 1
    # the disc is 8 px * 0.8 mm = 6.4 mm in radius: about 130 working pixels at 1 mm
    assert 90 < s.label.sum() < 170
    batch = make_batch(np.random.default_rng(1), 3, None, pairs)
    assert batch.images.shape[0] == 3


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(InputError, match="no image/label pairs"):
        find_pairs(tmp_path)
