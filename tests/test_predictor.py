"""The Predictor on a synthetic disc, the CLI's predict command, and one golden end-to-end case."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import ROOT, example, needs_shipped_weights

from seqpatch_core.base.errors import InputError
from seqpatch_core.base.metrics import dice
from seqpatch_core.cli.main import main
from seqpatch_core.images.io import read_label, read_volume
from seqpatch_core.images.volume import volume_from_array
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method.models import build_model, load_models


@pytest.fixture(scope="module")
def disc_volume():
    yy, xx = np.mgrid[:90, :80]
    arr = np.full((3, 90, 80), -800.0, np.float32)
    arr[:, (yy - 45) ** 2 + (xx - 6) ** 2 < 15**2] = 40.0  # touches the left border
    return volume_from_array(arr, spacing=(4.0, 0.8, 0.7), modality="CT")


@pytest.mark.parametrize("method", ["seqpatch", "unet"])
@pytest.mark.parametrize("point", [(1, 45, 6), (0, 0, 0), (2, 89, 79)])
def test_predictor_shapes(small_weights, disc_volume, method, point):
    models = {m: build_model(m, checkpoint=p) for m, p in small_weights.items()}
    pred = Predictor(models, device="cpu")
    pred.set_volume(disc_volume)
    r = pred.predict(point, method=method)
    assert r.mask.shape == r.likelihood.shape == r.coverage.shape == (90, 80)
    assert r.mask.dtype == bool and r.likelihood.dtype == np.float32
    assert 0 <= r.likelihood.min() and r.likelihood.max() <= 1
    assert r.coverage[int(point[1]), int(point[2])] > 0
    if method == "seqpatch":
        assert r.patches.shape == r.ray_likelihoods.shape == (16, 15, 32, 32)
        assert r.centres.shape == (16, 15, 2)
        # the first patch centre of every ray is the click, in slice pixels
        assert np.allclose(r.centres[:, 0], point[1:], atol=1e-4)
    else:
        assert r.patches.shape == r.ray_likelihoods.shape == (160, 160)
    for stage in ("sampling_ms", "network_ms", "fusion_ms", "postprocess_ms", "total_ms"):
        assert r.timings[stage] >= 0
    # rethreshold reuses the cached likelihoods
    assert r.rethreshold(1.01).sum() == 0


def test_predictor_rejects_points_outside(small_weights, disc_volume):
    pred = Predictor({"unet": build_model("unet", checkpoint=small_weights["unet"])}, device="cpu")
    pred.set_volume(disc_volume)
    for p in [(3, 0, 0), (0, -1, 0), (0, 0, 80), (0, float("nan"), 0)]:
        with pytest.raises(InputError, match="outside the volume"):
            pred.predict(p, method="unet")
    with pytest.raises(Exception, match="no 'seqpatch' model"):
        pred.predict((0, 1, 1), method="seqpatch")


@pytest.mark.slow
def test_predict_many_equals_single_clicks(small_weights, disc_volume):
    pred = Predictor({"seqpatch": build_model("seqpatch", checkpoint=small_weights["seqpatch"])}, device="cpu")
    pred.set_volume(disc_volume)
    pts = [(45.0, 6.0), (40.0, 10.0), (50.0, 3.0)]
    many = pred.predict_many(1, pts)
    for p, r in zip(pts, many, strict=True):
        single = pred.predict((1, *p))
        assert np.allclose(single.likelihood, r.likelihood, atol=1e-5)


def _write(vol, path):
    img = sitk.GetImageFromArray(vol.array)
    img.SetSpacing(tuple(reversed(vol.spacing)))
    img.SetOrigin((12.5, -40.0, 7.0))
    sitk.WriteImage(img, str(path))


@pytest.mark.parametrize("method", ["seqpatch", "unet"])
@pytest.mark.slow
def test_cli_predict_keeps_geometry(tmp_path, small_weights, disc_volume, method, capsys):
    src = tmp_path / "vol.nii.gz"
    _write(disc_volume, src)
    out = tmp_path / "m.nii.gz"
    rc = main(
        [
            "predict",
            str(src),
            "--point",
            "2",
            "45",
            "0",
            "--point",
            "1",
            "45",
            "6",
            "--method",
            method,
            "--weights",
            str(small_weights[method]),
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["slice"] for x in lines] == [2, 1]
    assert all(x["method"] == method and x["latency_ms"] > 0 for x in lines)
    a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    assert a.GetSize() == b.GetSize() and a.GetSpacing() == b.GetSpacing()
    assert a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection()
    assert b.GetPixelID() == sitk.sitkUInt8


@pytest.mark.parametrize(
    "args,needle",
    [
        (["predict", "{txt}", "--point", "0", "1", "1"], "cannot read"),
        (["predict", "{missing}", "--point", "0", "1", "1"], "not found"),
        (["predict", "{vol}", "--point", "9", "1", "1"], "outside the volume"),
        (["predict", "{vol}", "--point", "0", "1", "1", "--window", "banana"], "window"),
        (["predict", "{vol}", "--point", "0", "1"], "error"),
    ],
)
@pytest.mark.slow
def test_cli_errors_exit_2_with_one_line(tmp_path, small_weights, disc_volume, args, needle):
    (tmp_path / "x.nii.gz").write_text("not an image")
    _write(disc_volume, tmp_path / "vol.nii.gz")
    names = {"txt": tmp_path / "x.nii.gz", "missing": tmp_path / "nope.nii.gz", "vol": tmp_path / "vol.nii.gz"}
    argv = [a.format(**names) for a in args] + [
        "--weights",
        str(small_weights["seqpatch"]),
        "--out",
        str(tmp_path / "o.nii.gz"),
    ]
    p = subprocess.run([sys.executable, "-m", "seqpatch_core", *argv], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2
    err = [ln for ln in p.stderr.strip().splitlines() if not ln.startswith(("INFO", "WARNING"))]
    assert len(err) == 1 and needle in err[0].lower() and "Traceback" not in p.stderr


@pytest.mark.slow
def test_cli_missing_weights_exit_2(tmp_path, disc_volume):
    _write(disc_volume, tmp_path / "vol.nii.gz")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "seqpatch_core",
            "predict",
            str(tmp_path / "vol.nii.gz"),
            "--point",
            "0",
            "1",
            "1",
            "--weights",
            str(tmp_path / "none.safetensors"),
            "--out",
            str(tmp_path / "o.nii.gz"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert p.returncode == 2 and "not found" in p.stderr and "Traceback" not in p.stderr


#: Golden cases: (image, label, modality, {method: (Dice, grids of the pyramid tried, the grid that
#: answered)}), measured with the shipped weights (float32, CPU), centre click on the largest labelled
#: slice. Both rules (SeqPatch R = 10 px, growth 1.3; U-net R = 8 px, growth 1.5) check each tumour on
#: the next grid, find it no wider there and keep the first grid's answer (lung2's SeqPatch mask on
#: the 2.0-mm grid scored 0.925: the growth check trades it for the sharper first grid, 0.883).
GOLDEN = [
    ("lung2_ct_crop", "CT", {"seqpatch": (0.883, (1.0, 2.0), 1.0), "unet": (0.886, (1.0, 2.0), 1.0)}),
    ("brain1_mr_crop", "MR", {"seqpatch": (0.746, (0.625, 1.0), 0.625), "unet": (0.725, (0.625, 1.0), 0.625)}),
]


@needs_shipped_weights
@pytest.mark.parametrize(("case", "modality", "expected"), GOLDEN)
@pytest.mark.slow
def test_golden_end_to_end_on_the_bundled_real_crops(case, modality, expected):
    """The shipped weights on a bundled real crop. The tolerance (0.05) guards against regressions in
    reading, windowing, presets, sampling, fusion, the scale rule and post-processing."""
    image, label = example(case)
    vol = read_volume(image)
    lab = read_label(label, vol)
    assert vol.modality == modality
    z = int(np.argmax(lab.reshape(lab.shape[0], -1).sum(1)))
    ys, xs = np.nonzero(lab[z])
    pred = Predictor(load_models(["seqpatch", "unet"]), device="cpu")
    pred.set_volume(vol)
    for method, (score, grids, answer) in expected.items():
        r = pred.predict((z, ys.mean(), xs.mean()), method=method)
        assert abs(dice(r.mask, lab[z]) - score) <= 0.05, (method, dice(r.mask, lab[z]))
        assert r.grids_mm == grids and r.working_spacing == answer
