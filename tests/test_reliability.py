"""Reliability and security: every bad input gets one clear line, and nothing unsafe gets through.

The readers' own refusals (``read_volume``/``read_label`` on each bad file, one-line InputError) are
tested in ``test_io.py``; here the same inputs go through the paths a user takes: the app handlers
(a one-line ``gr.Error``, the session kept), the CLI (exit status 2 and exactly one line on stderr,
no traceback) and the HTTP API (no traceback or internal path in the error). Then the weights
(safetensors only, never unpickled), the file system (exports stay in the session's temp folder),
the default bind address, and the integrity of exports and the click log.

Networks are small random-weight checkpoints in a temporary folder (as in ``test_app.py``).
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.util
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import ROOT, free_port, write_dicom_series

from app import LAUNCH_KWARGS, build_demo, handlers, memory, outputs
from app.exports import export, mask_volume
from app.session import Session
from seqpatch_core.base.errors import InputError, WeightsError
from seqpatch_core.base.lru import LRU
from seqpatch_core.cli.main import main
from seqpatch_core.images import io as sp_io
from seqpatch_core.images.io import read_label, read_volume
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method.models import build_model, load_models

SHAPE = (3, 40, 44)  # (z, y, x)
SPACING_XYZ = (0.9, 0.8, 2.5)
ORIGIN = (-20.5, 11.25, 7.0)
_A = np.deg2rad(15.0)
DIRECTION = (np.cos(_A), -np.sin(_A), 0.0, np.sin(_A), np.cos(_A), 0.0, 0.0, 0.0, 1.0)
CENTRE = (18.0, 22.0)  # (y, x) of the bright disc
METHODS = ("seqpatch", "unet")


def _one_line(msg: str) -> str:
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    return msg


def _gr_message(info: pytest.ExceptionInfo) -> str:
    return _one_line(str(info.value.message))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(small_weights) -> dict[str, Path]:
    return small_weights


@pytest.fixture(scope="module")
def predictor(weights) -> Predictor:
    return Predictor({n: build_model(n, checkpoint=p) for n, p in weights.items()}, device="cpu")


def _write(arr: np.ndarray, path: Path, **kw) -> sitk.Image:
    img = sitk.GetImageFromArray(arr, **kw)
    if img.GetDimension() == 3:
        img.SetSpacing(SPACING_XYZ)
        img.SetOrigin(ORIGIN)
        img.SetDirection(DIRECTION)
    sitk.WriteImage(img, str(path))
    return img


def _ct(shape=SHAPE, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    r2 = (yy - CENTRE[0]) ** 2 + (xx - CENTRE[1]) ** 2
    a = np.full(shape, -950.0, np.float32)
    a[:, r2 <= 15**2] = 40.0
    a[:, r2 <= 7**2] = 220.0
    return a + rng.normal(0, 10, shape).astype(np.float32)


@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("good")
    _write(_ct(), d / "disc.nii.gz")
    return d / "disc.nii.gz"


# ----------------------------------------------------------------------------- bad files

def _make_text(d: Path) -> Path:
    (d / "text.nii.gz").write_text("this is not an image\nsecond line\n")
    return d / "text.nii.gz"


def _make_truncated(d: Path) -> Path:
    _write(_ct(seed=1).astype(np.int16), d / "full.nii.gz")
    data = (d / "full.nii.gz").read_bytes()
    (d / "truncated.nii.gz").write_bytes(data[: len(data) * 2 // 3])
    return d / "truncated.nii.gz"


def _make_zip_no_dicom(d: Path) -> Path:
    with zipfile.ZipFile(d / "notes.zip", "w") as zf:
        zf.writestr("readme.txt", "no images here\n")
        zf.writestr("more/data.csv", "1,2,3\n")
    return d / "notes.zip"


def _make_empty_zip(d: Path) -> Path:
    with zipfile.ZipFile(d / "empty.zip", "w"):
        pass
    return d / "empty.zip"


def _make_zero_bytes(d: Path) -> Path:
    (d / "zero.nii.gz").write_bytes(b"")
    return d / "zero.nii.gz"


def _make_1x1(d: Path) -> Path:
    _write(np.array([[7]], np.uint8), d / "dot.png")
    return d / "dot.png"


def _make_constant(d: Path) -> Path:
    _write(np.full(SHAPE, 12.0, np.float32), d / "constant.nii.gz")
    return d / "constant.nii.gz"


def _make_huge_header(d: Path) -> Path:
    """A valid small NIfTI whose header then claims 32767³ voxels (NIfTI-1 dims are int16)."""
    _write(_ct(seed=2), d / "small.nii")
    data = bytearray((d / "small.nii").read_bytes())
    assert struct.unpack("<i", data[:4])[0] == 348
    data[42:48] = struct.pack("<3h", 32767, 32767, 32767)
    with gzip.open(d / "huge.nii.gz", "wb") as f:
        f.write(bytes(data))
    return d / "huge.nii.gz"


def _make_missing(d: Path) -> Path:
    return d / "missing.nii.gz"


#: name -> (file maker, what the one-line message must say)
REFUSED = {
    "text file named .nii.gz": (_make_text, "text.nii.gz"),
    "truncated .nii.gz": (_make_truncated, "truncated"),
    "zip without DICOM": (_make_zip_no_dicom, "no DICOM"),
    "empty zip": (_make_empty_zip, "no DICOM"),
    "zero-byte file": (_make_zero_bytes, "empty file"),
    "1x1 picture": (_make_1x1, "too small"),
    "constant image": (_make_constant, "constant"),
    "header claiming 32767^3 voxels": (_make_huge_header, "too large"),
    "missing file": (_make_missing, "not found"),
}


def _make_two_series(d: Path) -> Path:
    write_dicom_series(d / "a", np.abs(_ct((2, 40, 44), 3)), "1.2.826.0.1.3680043.2.1125.7")
    write_dicom_series(d / "b", np.abs(_ct((4, 40, 44), 4)), "1.2.826.0.1.3680043.2.1125.8")
    with zipfile.ZipFile(d / "two.zip", "w") as zf:
        for sub in ("a", "b"):
            for f in sorted((d / sub).iterdir()):
                zf.write(f, f"{sub}/{f.name}")
    return d / "two.zip"


def _make_4d(d: Path) -> Path:
    vols = [sitk.GetImageFromArray(_ct(seed=5) + 10 * i) for i in range(3)]
    sitk.WriteImage(sitk.JoinSeries(vols), str(d / "four_d.nii.gz"))
    return d / "four_d.nii.gz"


def _make_rgb(d: Path) -> Path:
    rgb = np.zeros((40, 44, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[10:30, 12:32, 1] = 180
    _write(rgb, d / "colour.png", isVector=True)
    return d / "colour.png"


def _make_nan(d: Path) -> Path:
    a = _ct(seed=6)
    a[0, 0, :3] = np.nan
    a[1, 5, 5] = np.inf
    a[2, 6, 6] = -np.inf
    _write(a, d / "nan.mha")
    return d / "nan.mha"


#: name -> (file maker, shape (z, y, x) read, warning the app must show)
WARNED = {
    "zip with two DICOM series": (_make_two_series, (4, 40, 44), "found 2 DICOM series; took the largest"),
    "4D NIfTI": (_make_4d, SHAPE, "took the first of 3 volumes"),
    "RGB PNG": (_make_rgb, (1, 40, 44), "converted the colour image to grey"),
    "NaN/Inf voxels": (_make_nan, SHAPE, "replaced 5 NaN/Inf voxels"),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    return {name: make(d) for name, (make, _) in REFUSED.items()}


@pytest.fixture(scope="module")
def warned_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("warned")
    return {name: make(d) for name, (make, *_) in WARNED.items()}


@pytest.mark.parametrize("case", list(REFUSED))
def test_app_refuses_bad_file_with_one_line(case, bad_files, predictor, good_file):
    path = bad_files[case]
    with pytest.raises(gr.Error) as info:
        handlers.load(predictor, None, str(path))
    msg = _gr_message(info)
    assert REFUSED[case][1] in msg
    assert str(path.parent) not in msg  # the file's name, never the server's folders
    # The session that was there stays as it was.
    s = handlers.load(predictor, None, str(good_file))["state"]
    with pytest.raises(gr.Error):
        handlers.load(predictor, s, str(path))
    assert s.volume is not None and s.volume.shape == SHAPE


def test_huge_header_refused_before_allocating(bad_files, monkeypatch):
    """The voxel cap acts on the header: no pixel buffer is read (ITK would try 35 TB)."""
    calls = []
    real = sitk.ImageFileReader.Execute
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", lambda self: calls.append(1) or real(self))
    with pytest.raises(InputError, match="too large"):
        read_volume(bad_files["header claiming 32767^3 voxels"])
    assert not calls


@pytest.mark.parametrize("case", list(WARNED))
def test_app_loads_with_a_warning(case, warned_files, predictor):
    _make, shape, warning = WARNED[case]
    out = handlers.load(predictor, None, str(warned_files[case]))
    s = out["state"]
    assert s.volume.shape == shape and np.isfinite(s.volume.array).all()
    assert any(warning in w for w in s.volume.warnings)
    assert f"⚠ {warning}" in out["summary"]  # the app shows it


# ----------------------------------------------------------------------------- points


@pytest.fixture()
def session(predictor, good_file) -> Session:
    return handlers.load(predictor, None, str(good_file))["state"]


@pytest.mark.parametrize(
    "point",
    [(-1, 5, 5), (3, 5, 5), (1, -0.6, 5), (1, 5, 43.5), (1, 40, 0), (1, float("nan"), 2), (1, 2, float("inf"))],
)
def test_point_outside_is_one_line(session, point):
    with pytest.raises(gr.Error) as info:
        handlers.segment(session, *point)
    assert "outside the volume" in _gr_message(info)
    assert session.results == {}


def test_point_that_is_not_a_number(session):
    with pytest.raises(gr.Error) as info:
        handlers.segment(session, 1, "/tmp/out.nii.gz", 3)
    assert "three numbers" in _gr_message(info)


@pytest.mark.parametrize("point", [(0, 0, 0), (2, 39, 43), (1, 39, 0)])
def test_corner_pixels_work(session, point):
    handlers.segment(session, *point)
    for m in METHODS:
        r = session.results[point[0]][m]
        assert r.mask.shape == SHAPE[1:] and r.mask.dtype == bool
        assert np.isfinite(r.likelihood).all()


def test_click_on_empty_background_works(session):
    """Air far from the body: a mask may be empty (and is allowed to be); nothing breaks."""
    handlers.segment(session, 1, 1.0, 42.0)
    for m in METHODS:
        assert session.results[1][m].mask.shape == SHAPE[1:]
    out = export(session)
    assert len(out["files"]) >= 3


@pytest.mark.parametrize("what", ["origin", "spacing", "direction"])
def test_label_with_other_geometry(what, predictor, good_file, tmp_path):
    img = sitk.ReadImage(str(good_file))
    lab = sitk.GetImageFromArray(np.zeros(SHAPE, np.uint8))
    lab.CopyInformation(img)
    if what == "origin":
        lab.SetOrigin((ORIGIN[0] + 5.0, ORIGIN[1], ORIGIN[2]))
    elif what == "spacing":
        lab.SetSpacing((SPACING_XYZ[0], SPACING_XYZ[1], 3.0))
    else:
        lab.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(lab, str(tmp_path / "lab.nii.gz"))
    with pytest.warns(UserWarning, match="label not used"):  # the image loads, without the label
        out = handlers.load(predictor, None, str(good_file), str(tmp_path / "lab.nii.gz"))
    assert out["state"].label is None and f"label geometry differs from the image: {what}" in out["summary"]
    with pytest.raises(gr.Error) as info:
        handlers.load_label(out["state"], str(good_file), str(tmp_path / "lab.nii.gz"))
    assert _gr_message(info).startswith(f"label not used: label geometry differs from the image: {what}")


# ----------------------------------------------------------------------------- CLI


def _cli(capsys, *argv: str) -> tuple[int, list[str]]:
    code = main(list(argv))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return code, err


@pytest.mark.parametrize(
    "case", ["text file named .nii.gz", "truncated .nii.gz", "empty zip", "missing file",
             "zip without DICOM", "header claiming 32767^3 voxels"],
)
def test_cli_predict_bad_file_exit_2(case, bad_files, weights, tmp_path, capsys):
    code, err = _cli(capsys, "predict", str(bad_files[case]), "--point", "1", "5", "5", "--device", "cpu",
                     "--weights", str(weights["seqpatch"]), "--out", str(tmp_path / "m.nii.gz"))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and REFUSED[case][1] in _one_line(err[0])
    assert not (tmp_path / "m.nii.gz").exists()


@pytest.mark.parametrize("point", [("1", "40", "5"), ("3", "5", "5"), ("-1", "0", "0")])
def test_cli_predict_point_outside_exit_2(point, good_file, weights, tmp_path, capsys):
    code, err = _cli(capsys, "predict", str(good_file), "--point", *point, "--device", "cpu",
                     "--weights", str(weights["seqpatch"]), "--out", str(tmp_path / "m.nii.gz"))
    assert code == 2 and len(err) == 1 and "outside the volume" in _one_line(err[0]), err


def test_cli_predict_bad_weights_exit_2(good_file, tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_bytes(os.urandom(4096))
    for w, says in ((tmp_path / "junk.safetensors", "not a readable safetensors"), (tmp_path / "no.safetensors",
                                                                                    "not found")):
        code, err = _cli(capsys, "predict", str(good_file), "--point", "1", "5", "5", "--device", "cpu",
                         "--weights", str(w), "--out", str(tmp_path / "m.nii.gz"))
        assert code == 2 and len(err) == 1 and says in _one_line(err[0]), err


def test_cli_output_folders_are_made_and_unwritable_outputs_refused(good_file, weights, tmp_path, capsys):
    nested = tmp_path / "new" / "deeper" / "m.nii.gz"
    code, err = _cli(capsys, "predict", str(good_file), "--point", "1", "5", "5", "--device", "cpu",
                     "--weights", str(weights["seqpatch"]), "--out", str(nested))
    assert code == 0 and nested.exists(), err
    (tmp_path / "blocker").write_text("a file where a folder is needed")
    for argv in (("predict", str(good_file), "--point", "1", "5", "5", "--device", "cpu", "--weights",
                  str(weights["seqpatch"]), "--out", str(tmp_path / "blocker" / "m.nii.gz")),
                 ("prepare-backgrounds", str(tmp_path), "--out", str(tmp_path / "blocker" / "b.npz"))):
        code, err = _cli(capsys, *argv)
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "blocker" in err[0], err


@pytest.mark.slow
def test_cli_in_a_real_process(bad_files, weights, tmp_path):
    """The installed entry point, as a user runs it: status 2, exactly one stderr line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "seqpatch_core", "predict", str(bad_files["truncated .nii.gz"]), "--point", "0",
         "1", "1", "--device", "cpu", "--weights", str(weights["seqpatch"]), "--out", str(tmp_path / "m.nii.gz")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert err[0].startswith("error: truncated.nii.gz is truncated") and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- weights


class _Boom:
    """Unpickling this object creates a file: the proof that something was unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _bad_weights(d: Path, good: Path) -> dict[str, Path]:
    out = {}
    out["random bytes"] = d / "random.safetensors"
    out["random bytes"].write_bytes(np.random.default_rng(0).bytes(10_000))
    out["truncated"] = d / "truncated.safetensors"
    out["truncated"].write_bytes(good.read_bytes()[:5000])
    out["empty"] = d / "empty.safetensors"
    out["empty"].write_bytes(b"")
    out["text"] = d / "text.safetensors"
    out["text"].write_text("<html>404 Not Found</html>\n")
    out["torch.save pickle"] = d / "torchsave.safetensors"
    torch.save({"w": torch.zeros(3), "boom": _Boom(str(d / "UNPICKLED_1"))}, out["torch.save pickle"])
    out["plain pickle"] = d / "plain.safetensors"
    out["plain pickle"].write_bytes(pickle.dumps(_Boom(str(d / "UNPICKLED_2"))))
    out["missing"] = d / "missing.safetensors"
    return out


@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory, weights) -> dict[str, Path]:
    return _bad_weights(tmp_path_factory.mktemp("badweights"), weights["seqpatch"])


@pytest.mark.parametrize(
    "case", ["random bytes", "truncated", "empty", "text", "torch.save pickle", "plain pickle", "missing"]
)
def test_bad_weights_one_line_never_unpickled(case, bad_weights):
    with pytest.raises(WeightsError) as info:
        build_model("seqpatch", checkpoint=bad_weights[case])
    msg = _one_line(str(info.value))
    assert bad_weights[case].name in msg
    assert str(bad_weights[case].parent) not in msg
    assert not list(bad_weights[case].parent.glob("UNPICKLED_*"))


def test_the_pickles_would_have_run(bad_weights, tmp_path):
    """Guard for the test above: the same files DO run code when unpickled."""
    marker = bad_weights["plain pickle"].parent / "UNPICKLED_2"
    pickle.loads(bad_weights["plain pickle"].read_bytes())
    assert marker.exists()
    marker.unlink()


def test_app_starts_with_only_the_unet(bad_weights, weights, good_file):
    models = load_models(
        ["seqpatch", "unet"], {"seqpatch": str(bad_weights["random bytes"]), "unet": str(weights["unet"])},
        strict=False,
    )
    assert list(models) == ["unet"]
    pred = Predictor(models, device="cpu")
    demo = build_demo(pred, examples=[])  # starts
    notes = [b.value for b in demo.blocks.values() if getattr(b, "elem_id", None) == "weights-warning"]
    assert notes and "SeqPatch" in notes[0] and "weights/README.md" in notes[0]
    assert "python -m seqpatch_core train" in notes[0]

    out = handlers.load(pred, None, str(good_file))
    assert "SeqPatch" in out["status"] and "weights/README.md" in out["status"]
    s = out["state"]
    handlers.segment(s, 1, *CENTRE)
    assert list(s.results[1]) == ["unet"]  # only what is loaded runs
    with pytest.raises(WeightsError) as info:
        s.predictor.predict((1, *CENTRE), method="seqpatch")
    assert "no 'seqpatch' model is loaded" in _one_line(str(info.value))

    none = Predictor(load_models(["seqpatch"], {"seqpatch": str(bad_weights["missing"])}, strict=False))
    s = handlers.load(none, None, str(good_file))["state"]
    with pytest.raises(gr.Error) as info:
        handlers.segment(s, 1, *CENTRE)
    assert "weights/README.md" in _gr_message(info)
    with pytest.raises(WeightsError):  # strict (the CLI): refused with one line
        load_models(["seqpatch"], {"seqpatch": str(bad_weights["missing"])})


# ----------------------------------------------------------------------------- security


def _calls(tree: ast.AST, dotted: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == dotted:
            yield node


def _sources() -> list[Path]:
    return [*sorted((ROOT / "seqpatch_core").rglob("*.py")), *sorted((ROOT / "app").rglob("*.py")), ROOT / "app.py"]


def test_no_unpickling_anywhere_in_the_code():
    """torch.load only with weights_only=True; no pickle, no np.load(allow_pickle=True)."""
    torch_loads = 0
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "dill", "cloudpickle", "joblib"} & set(names), f"{path}: {names}"
        for call in _calls(tree, "torch.load"):
            torch_loads += 1
            kw = {k.arg: k.value for k in call.keywords}
            assert "weights_only" in kw and ast.literal_eval(kw["weights_only"]) is True, (
                f"{path.name}:{call.lineno}: torch.load without weights_only=True"
            )
        for call in _calls(tree, "np.load"):
            kw = {k.arg: k.value for k in call.keywords}
            assert "allow_pickle" not in kw or ast.literal_eval(kw["allow_pickle"]) is False, path
        for name in ("pickle.load", "pickle.loads", "torch.jit.load", "eval", "exec"):
            assert not list(_calls(tree, name)), f"{path.name}: {name}"
    assert torch_loads >= 1  # training's resume; the grep does look


def test_uploads_are_read_with_size_caps(predictor, good_file, monkeypatch):
    import inspect

    sig = inspect.signature(read_volume).parameters
    assert sig["max_voxels"].default == sp_io.DEFAULT_MAX_VOXELS <= 512 * 512 * 2000
    assert sig["max_bytes_zip"].default == sp_io.DEFAULT_MAX_BYTES_ZIP <= 4 * 1024**3
    # The app passes uploads to the capped readers and nothing else (no override of the caps).
    seen = []
    real = sp_io.read_volume
    monkeypatch.setattr(sp_io, "read_volume", lambda p, **kw: seen.append((str(p), kw)) or real(p, **kw))
    monkeypatch.setattr(memory, "_SHARED", LRU(4))  # nothing cached from other tests
    handlers.load(predictor, None, str(good_file))
    assert seen == [(str(good_file), {})]
    # The readers decode with SimpleITK only (Pillow/imageio do not touch uploads).
    tree = ast.parse((ROOT / "seqpatch_core" / "images" / "io.py").read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
                for a in n.names} | {(n.module or "").split(".")[0] for n in ast.walk(tree)
                                     if isinstance(n, ast.ImportFrom)}
    assert not imported & {"PIL", "imageio", "cv2", "nibabel", "pydicom"}


def test_exports_stay_in_the_session_folder(predictor, good_file, tmp_path):
    nasty = tmp_path / "a b;$(touch x) & ..nii.gz"
    nasty.write_bytes(good_file.read_bytes())
    s = handlers.load(predictor, None, str(nasty))["state"]
    handlers.segment(s, 1, *CENTRE)
    for image_path in (str(nasty), "/tmp/../../etc/passwd", "..\\..\\evil.nii.gz"):
        s.image_path = image_path
        files = [Path(f) for f in export(s)["files"]]
        folder = Path(s.tmpdir).resolve()
        assert folder.name.startswith("seqpatch_session_")
        assert folder.parent == Path(tempfile.gettempdir()).resolve()
        for f in files:
            assert f.resolve().parent == folder, f
            assert set(f.name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    assert not (tmp_path / "x").exists() and not Path("x").exists()
    s.close()
    assert not folder.exists()


def test_api_takes_no_path_from_the_user(predictor):
    """The click and export endpoints take numbers and the session only: no output path."""
    demo = build_demo(predictor, examples=[])
    fns = {f.api_name: f for f in demo.fns.values() if f.api_name}
    seg = [type(c).__name__ for c in fns["segment"].inputs]
    assert seg == ["State", "Number", "Number", "Number"]
    assert [type(c).__name__ for c in fns["export"].inputs] == ["State"]
    for name, fn in fns.items():  # no endpoint takes a free-text box (a place to type a path)
        assert not any(isinstance(c, gr.Textbox) for c in fn.inputs), name


def _load_app_module():
    spec = importlib.util.spec_from_file_location("seqpatch_app_main", ROOT / "app.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_server_binds_loopback_by_default(monkeypatch):
    mod = _load_app_module()
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    assert mod.parse_args([]).host == "127.0.0.1"
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # a Space sets it explicitly
    assert mod.parse_args([]).host == "0.0.0.0"
    assert mod.parse_args(["--host", "127.0.0.1"]).host == "127.0.0.1"
    assert "server_name" not in LAUNCH_KWARGS and not LAUNCH_KWARGS.get("share")


@pytest.mark.slow
def test_http_errors_have_no_traceback_or_internal_paths(predictor, bad_files, good_file, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    demo = build_demo(predictor, examples=[])
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH_KWARGS)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False, analytics_enabled=False)
        msgs = []
        with pytest.raises(AppError) as info:  # a click before any image
            client.predict(1, 5, 5, api_name="/segment")
        msgs.append(str(info.value))
        for case in ("text file named .nii.gz", "truncated .nii.gz", "header claiming 32767^3 voxels"):
            with pytest.raises(AppError) as info:
                client.predict(handle_file(str(bad_files[case])), None, "auto", 0.5, 0.3, False, api_name="/load")
            msgs.append(str(info.value))
            assert REFUSED[case][1] in msgs[-1]
        client.predict(handle_file(str(good_file)), None, "auto", 0.5, 0.3, False, api_name="/load")
        with pytest.raises(AppError) as info:
            client.predict(1, 99, 5, api_name="/segment")
        msgs.append(str(info.value))
        assert "outside the volume" in msgs[-1]
        for msg in msgs:
            assert "Traceback" not in msg and "site-packages" not in msg and "/work/" not in msg, msg
            assert "/tmp/" not in msg and str(ROOT) not in msg and "File \"" not in msg, msg
        # The server keeps serving after all that.
        out = client.predict(1, *CENTRE, api_name="/segment")
        assert "| U-net |" in out[[n for n in outputs.MAIN if n != "state"].index("metrics")]
        client.close()
    finally:
        demo.close()


# ----------------------------------------------------------------------------- integrity


def test_exported_mask_and_click_log(predictor, weights, good_file):
    """What test_app.py does not check: on-disk pixel type and values, geometry equal to the input's
    to float32 precision, the mask read back as a label, the exact voxel of a click made on the
    picture (k/8 px), and the sha256 of the weights files themselves."""
    s = handlers.load(predictor, None, str(good_file))["state"]
    clicks = [(1, 17.625, 21.375), (2, 18.0, 23.125)]
    for z, y, x in clicks:
        handlers.segment(s, z, y, x)
    files = [Path(f) for f in export(s)["files"]]
    src = sitk.ReadImage(str(good_file))
    for m in METHODS:
        f = next(p for p in files if p.name.endswith(f"_{m}_mask.nii.gz"))
        img = sitk.ReadImage(str(f))
        assert img.GetPixelID() == sitk.sitkUInt8
        arr = sitk.GetArrayFromImage(img)
        assert set(np.unique(arr)) <= {0, 1}
        assert img.GetSize() == src.GetSize()
        for a, b in ((img.GetSpacing(), src.GetSpacing()), (img.GetOrigin(), src.GetOrigin()),
                     (img.GetDirection(), src.GetDirection())):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        lab = read_label(f, s.volume)  # the strict geometry check of a label passes
        assert np.array_equal(lab, mask_volume(s, m))
    rec = json.loads(next(p for p in files if p.suffix == ".json").read_text())
    for c, (z, y, x) in zip(rec["clicks"], clicks, strict=True):
        assert c["voxel_zyx"] == [z, y, x]
        assert c["physical_xyz_mm"] == list(s.volume.index_to_physical((z, y, x)))  # exact, not rounded
        # and independently of the app's own conversion: SimpleITK on the input file
        np.testing.assert_allclose(c["physical_xyz_mm"], src.TransformContinuousIndexToPhysicalPoint((x, y, z)),
                                   atol=1e-9)
    for m, path in weights.items():
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        assert rec["weights"][m]["sha256"] == sha
        assert rec["clicks"][-1]["results"][m]["weights_sha256"] == sha
    s.close()


def test_stderr_is_one_line_even_for_multiline_causes(capsys, monkeypatch, good_file, tmp_path):
    """A core error whose text spans lines (e.g. from a library) still leaves one line on stderr."""
    import seqpatch_core.images.io as mod

    def boom(*a, **k):
        raise InputError("first line\nsecond line\n  File \"/work/x.py\", line 1")

    monkeypatch.setattr(mod, "read_volume", boom)
    code, err = _cli(capsys, "predict", str(good_file), "--point", "1", "5", "5", "--out",
                     str(tmp_path / "m.nii.gz"))
    assert code == 2 and err == ["error: first line"]
