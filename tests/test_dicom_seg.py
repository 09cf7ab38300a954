"""DICOM in, DICOM SEG out: a CT series with a scanner's headers, one click, the SEG checked against the
NIfTI mask of the same click, against the input series, by dciodvfy and read back; the same on a
series stored as a real scanner's export was (JPEG 2000 lossless, SOP UIDs only in the file meta,
study and series UIDs blanked); odd series and bad inputs refused in one line.

The series is the bundled lung2 CT crop (256 × 256 × 17, 5 mm slices) written slice by slice with pydicom.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from helpers import BrightNet, example, needs_shipped_weights
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from seqpatch_core.base.errors import InputError
from seqpatch_core.cli.main import main
from seqpatch_core.images.dicom_seg import Segment, write_seg
from seqpatch_core.images.io import read_label, read_volume
from seqpatch_core.inference.predictor import Predictor
from seqpatch_core.method.models import DEFAULT_WEIGHTS, file_sha256

#: Centre of the lung2 tumour on its middle labelled slice (z, y, x).
CLICK = (8, 127, 118)
DCIODVFY = shutil.which("dciodvfy")


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters, as the DS VR requires."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def write_ct_series(
    folder: Path,
    arr: np.ndarray | None = None,
    *,
    spacing_zyx: tuple[float, float, float] = (5.0, 0.626953125, 0.626953125),
    origin: tuple[float, float, float] = (-24.42, -175.912109, -300.0),
    positions: list[tuple[float, float, float]] | None = None,
    syntax: str = ExplicitVRLittleEndian,
    blank_uids: bool = False,
    series_uid: str | None = None,
) -> dict[str, str]:
    """Writes ``arr`` ((z, y, x) HU, default the lung2 crop) as one CT file per slice, headers as a
    scanner writes them (patient, study, series, frame of reference, equipment, CT image modules).

    ``blank_uids`` stores the files as the issue's anonymised scanner export: SOPClassUID and
    SOPInstanceUID empty in the datasets (the file meta keeps them), study and series UIDs empty.
    Returns the UIDs written (study, series, frame of reference, SOP instances in slice order).
    """
    if arr is None:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(example("lung2_ct_crop")[0])))
    folder.mkdir(parents=True, exist_ok=True)
    uids = {"study": generate_uid(), "series": series_uid or generate_uid(), "for": generate_uid(), "sops": []}
    sz, sy, sx = spacing_zyx
    for i, plane in enumerate(arr):
        sop = generate_uid()
        uids["sops"].append(sop)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240314", "101500", "A123"
        ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "CT", "SIEMENS", "SOMATOM Definition AS"
        ds.ReferringPhysicianName, ds.SeriesDescription = "", "Thorax 5.0 B31f"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Lung^Two", "LUNG2", "19600101", "M"
        ds.SliceThickness, ds.KVP = _ds(sz), "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
        ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber, ds.InstanceNumber = "1", 2, 1, i + 1
        pos = positions[i] if positions else (origin[0], origin[1], origin[2] + i * sz)
        ds.ImagePositionPatient = [_ds(v) for v in pos]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = uids["for"], ""
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = plane.shape
        ds.PixelSpacing = [_ds(sy), _ds(sx)]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
        ds.PixelData = np.ascontiguousarray(plane, dtype=np.int16).tobytes()
        if syntax != ExplicitVRLittleEndian:
            ds.compress(syntax, generate_instance_uid=False)  # the same instance, stored compressed
        if blank_uids:
            ds.SOPClassUID = ds.SOPInstanceUID = ds.StudyInstanceUID = ds.SeriesInstanceUID = ""
        ds.save_as(folder / f"IM{i:04d}", enforce_file_format=True)
    return uids


def zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder.parent))
    return out


def dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    return [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """{"plain": (zip, uids), "scanner": (zip, uids)}: the lung2 series as a zip, once uncompressed with
    every identifier, once as the scanner export (JPEG 2000 lossless, UIDs as in ``blank_uids``)."""
    d = tmp_path_factory.mktemp("dicom")
    out = {}
    for name, kw in {"plain": {}, "scanner": {"syntax": JPEG2000Lossless, "blank_uids": True}}.items():
        uids = write_ct_series(d / name, **kw)
        out[name] = (zip_folder(d / name, d / f"{name}.zip"), uids)
    return out


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("name", ["plain", "scanner"])
def test_series_reads_as_the_nifti_with_its_instances(series, name):
    z, uids = series[name]
    vol = read_volume(z)
    ref = sitk.ReadImage(str(example("lung2_ct_crop")[0]))
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref))  # JPEG 2000 lossless is exact
    assert vol.modality == "CT" and vol.shape == (17, 256, 256)
    np.testing.assert_allclose(vol.spacing, (5.0, 0.626953125, 0.626953125), atol=1e-5)
    np.testing.assert_allclose(vol.origin, (-24.42, -175.912109, -300.0), atol=1e-5)
    # the instances in the volume's slice order, SOP UIDs from the file meta where the datasets lack them
    assert [ds.SOPInstanceUID for ds in vol.dicom.instances] == uids["sops"]
    assert not any("PixelData" in ds for ds in vol.dicom.instances)


def test_zip_with_several_series_takes_the_largest_or_the_chosen(tmp_path):
    big = write_ct_series(tmp_path / "s" / "big")
    arr = np.zeros((4, 64, 64), np.int16) - 1000
    arr[:, 20:40, 20:40] = 50
    small = write_ct_series(tmp_path / "s" / "small", arr)
    z = zip_folder(tmp_path / "s", tmp_path / "two.zip")
    vol = read_volume(z)
    assert vol.shape == (17, 256, 256) and vol.dicom.series_uid == big["series"]
    assert any("2 DICOM series" in w and small["series"] in w for w in vol.warnings)
    chosen = read_volume(z, series=small["series"])
    assert chosen.shape == (4, 64, 64) and chosen.dicom.series_uid == small["series"]
    with pytest.raises(InputError) as e:
        read_volume(z, series="1.2.3.4")
    line = _one_line(e)
    assert "no image series 1.2.3.4" in line and big["series"] in line and small["series"] in line


def test_enhanced_multiframe_ct_reads_and_takes_a_seg(series, tmp_path):
    """A legacy-converted enhanced CT (one file, 17 frames) reads as the series did; a SEG of it
    references its frames and reads back on its grid."""
    import highdicom as hd

    folder = tmp_path / "classic"
    write_ct_series(folder)
    slices = [pydicom.dcmread(f) for f in sorted(folder.iterdir())]
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=slices[::-1],  # frames stored top to bottom: the reader orders them
        series_instance_uid=hd.UID(), series_number=3, sop_instance_uid=hd.UID(), instance_number=1,
    )
    mf.save_as(tmp_path / "enhanced.dcm")
    classic = read_volume(folder)
    vol = read_volume(tmp_path / "enhanced.dcm")
    assert "multi-frame" in vol.source and vol.dicom.frames == tuple(range(17, 0, -1))
    np.testing.assert_array_equal(vol.array, classic.array)
    np.testing.assert_allclose(vol.spacing, classic.spacing, atol=1e-5)
    np.testing.assert_allclose(vol.origin, classic.origin, atol=1e-5)
    np.testing.assert_allclose(vol.direction, classic.direction, atol=1e-6)
    mask = np.zeros(vol.shape, np.uint8)
    mask[8, 100:140, 90:130] = 1
    mask[3, 10:20, 10:20] = 1
    assert write_seg([Segment("box", mask, "test", "0")], vol, tmp_path / "seg.dcm", software_version="test") == []
    assert hd.seg.segread(tmp_path / "seg.dcm").NumberOfFrames == 2
    np.testing.assert_array_equal(read_label(tmp_path / "seg.dcm", vol), mask)
    if DCIODVFY:
        assert dciodvfy_errors(tmp_path / "seg.dcm") == []


# ----------------------------------------------------------------------------- one click, SEG out


@needs_shipped_weights
@pytest.mark.slow
@pytest.mark.parametrize("name", ["plain", "scanner"])
def test_one_click_seg_equals_the_nifti_mask_and_references_the_series(series, name, tmp_path, capsys, caplog):
    import highdicom as hd

    z, uids = series[name]
    click = ["--point", *map(str, CLICK), "--method", "unet", "--device", "cpu", "--dtype", "float32"]
    assert main(["predict", str(z), *click, "--out", str(tmp_path / "mask.nii.gz")]) == 0
    capsys.readouterr()
    caplog.clear()
    assert main(["predict", str(z), *click, "--out", str(tmp_path / "seg.dcm")]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert record["area_px"] > 100  # the tumour, not an empty mask

    nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "mask.nii.gz")))
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    # only the frames that hold the mask: here the clicked slice, referencing its source instance
    assert seg.NumberOfFrames == int(nifti.any(axis=(1, 2)).sum()) == 1
    frame_refs = [
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        for f in seg.PerFrameFunctionalGroupsSequence
    ]
    assert frame_refs == [uids["sops"][CLICK[0]]]
    # the frames equal the NIfTI mask voxel for voxel, placed through the referenced instances
    frames = seg.get_pixels_by_source_instance(uids["sops"], combine_segments=False)[..., 0]
    np.testing.assert_array_equal(frames, nifti)
    vol = read_volume(z)
    np.testing.assert_array_equal(read_label(tmp_path / "seg.dcm", vol), nifti)

    # references the input series and its instances; patient and frame of reference copied
    source = vol.dicom.instances[0]
    (ref_series,) = seg.ReferencedSeriesSequence
    assert {r.ReferencedSOPInstanceUID for r in ref_series.ReferencedInstanceSequence} == set(uids["sops"])
    assert seg.PatientID == "LUNG2" and seg.PatientName == "Lung^Two"
    assert seg.FrameOfReferenceUID == uids["for"]
    # one segment: the method, its weights' SHA-256 as the version, semi-automatic
    (desc,) = seg.SegmentSequence
    assert desc.SegmentAlgorithmType == "SEMIAUTOMATIC" and desc.SegmentLabel == "unet"
    algorithm = desc.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "unet" and algorithm.AlgorithmVersion == file_sha256(DEFAULT_WEIGHTS["unet"])
    if name == "plain":
        assert ref_series.SeriesInstanceUID == uids["series"] and seg.StudyInstanceUID == uids["study"]
        assert source.SeriesInstanceUID == uids["series"]
        assert warned == []
        # the SEG as the reference label of the same click: a perfect score
        again = ["--label", str(tmp_path / "seg.dcm"), "--out", str(tmp_path / "again.nii.gz")]
        assert main(["predict", str(z), *click, *again]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["metrics"]["dice"] == 1.0
    else:  # blanked by the anonymiser: new UIDs, said in one line each; instance references hold
        assert ref_series.SeriesInstanceUID and seg.StudyInstanceUID
        assert any("SOPInstanceUID" in w and "file meta" in w for w in warned)
        assert any(w.startswith("StudyInstanceUID is empty") for w in warned)
        assert any(w.startswith("SeriesInstanceUID is empty") for w in warned)
    if DCIODVFY is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed: the SEG was not validated")
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []


def test_page_export_adds_the_seg_for_a_dicom_input(series):
    """The page's export of a DICOM input holds a SEG with one segment per method, equal to the
    NIfTI masks beside it (BrightNet stands in for the networks: bright = inside)."""
    import highdicom as hd

    from app import handlers
    from app.exports import export

    pred = Predictor({"seqpatch": BrightNet("seqpatch"), "unet": BrightNet("unet")}, device="cpu")
    z, uids = series["plain"]
    s = handlers.load(pred, None, str(z))["state"]
    try:
        handlers.segment(s, *CLICK)
        files = export(s)["files"]
        (seg_file,) = [f for f in files if f.endswith("_seg.dcm")]
        seg = hd.seg.segread(seg_file)
        assert [d.SegmentLabel for d in seg.SegmentSequence] == ["SeqPatch", "U-net"]
        frames = seg.get_pixels_by_source_instance(uids["sops"], combine_segments=False)
        for i, m in enumerate(["seqpatch", "unet"]):
            (nii,) = [f for f in files if f.endswith(f"_{m}_mask.nii.gz")]
            mask = sitk.GetArrayFromImage(sitk.ReadImage(nii))
            assert mask[CLICK[0]].sum() > 100
            np.testing.assert_array_equal(frames[..., i], mask)
        if DCIODVFY:
            assert dciodvfy_errors(Path(seg_file)) == []
    finally:
        s.close()


# ----------------------------------------------------------------------------- refused in one line


def test_seg_that_would_reference_nothing_is_refused(series, tmp_path):
    vol = read_volume(series["plain"][0])
    for ds in vol.dicom.instances[:3]:  # as if neither the dataset nor the file meta held it
        ds.SOPInstanceUID = ""
    mask = np.zeros(vol.shape, np.uint8)
    mask[8, 120:130, 110:120] = 1
    with pytest.raises(InputError) as e:
        write_seg([Segment("x", mask, "x", "0")], vol, tmp_path / "seg.dcm", software_version="test")
    assert "3 of 17 source instances have no SOPInstanceUID" in _one_line(e)
    assert not (tmp_path / "seg.dcm").exists()


def _odd(kind: str, d: Path) -> Path:
    arr = np.zeros((6, 32, 32), np.int16) - 1000
    arr[:, 10:20, 10:20] = 40
    base = [(0.0, 0.0, 3.0 * i) for i in range(6)]
    if kind == "missing slice":
        write_ct_series(d, arr[[0, 1, 2, 4, 5]], positions=base[:3] + base[4:])
    elif kind == "uneven spacing":
        write_ct_series(d, arr, positions=[(0.0, 0.0, z) for z in (0, 3, 6, 8, 11, 14)])
    elif kind == "gantry tilt":
        write_ct_series(d, arr, positions=[(0.0, 1.5 * i, 3.0 * i) for i in range(6)])
    elif kind == "mixed sizes":
        uid = generate_uid()
        write_ct_series(d / "a", arr[:4], positions=base[:4], series_uid=uid)
        write_ct_series(d / "b", np.zeros((2, 40, 40), np.int16) + arr.min(), positions=base[4:], series_uid=uid)
        (d / "b" / "IM0000").write_bytes(b"")  # a zero-byte member is skipped, not fatal
    elif kind == "two slices at one position":
        write_ct_series(d, arr, positions=base[:3] + base[2:5])
    return zip_folder(d, d.parent / f"{d.name}.zip")


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("missing slice", "a gap of 6 mm after slice 3"),
        ("uneven spacing", "uneven slice spacing, 2 to 3 mm"),
        ("gantry tilt", "gantry tilt"),
        ("mixed sizes", "mixes slice sizes: 32×32 (4 slices), 40×40 (1 slices)"),
        ("two slices at one position", "6 slices at only 5 distinct positions"),
    ],
)
def test_odd_series_refused_in_one_line(kind, needle, tmp_path):
    z = _odd(kind, tmp_path / kind.replace(" ", "_"))
    with pytest.raises(InputError) as e:
        read_volume(z)
    assert needle in _one_line(e)


def test_bad_inputs_one_line(series, tmp_path):
    vol = read_volume(series["plain"][0])
    mask = np.zeros(vol.shape, np.uint8)
    mask[8, 120:130, 110:120] = 1
    seg = tmp_path / "seg.dcm"
    write_seg([Segment("x", mask, "x", "0")], vol, seg, software_version="test")
    cases = {
        "a SEG as the image": (lambda: read_volume(seg), "is a DICOM Segmentation, a label and not an image"),
        "a zip of a SEG as the image": (
            lambda: read_volume(zip_folder(_folder_with(seg, tmp_path / "z"), tmp_path / "seg.zip")),
            "holds only a DICOM Segmentation",
        ),
        "a zip without DICOM": (lambda: read_volume(_zip_of_text(tmp_path)), "holds no DICOM series"),
        "pixel data no decoder reads": (lambda: read_volume(_undecodable(tmp_path)), "no installed decoder"),
        "a SEG on another series": (lambda: read_label(seg, read_volume(_other_series(tmp_path))), "references none"),
        "a SEG on a NIfTI image": (
            lambda: read_label(seg, read_volume(example("lung2_ct_crop")[0])),
            "the image (lung2_ct_crop.nii.gz (NIfTI)) is not DICOM",
        ),
        "a SEG of a NIfTI image": (
            lambda: write_seg(
                [Segment("x", mask, "x", "0")], read_volume(example("lung2_ct_crop")[0]), seg, software_version="t"
            ),
            "a DICOM SEG needs a DICOM image",
        ),
        "an empty mask": (
            lambda: write_seg([Segment("x", 0 * mask, "x", "0")], vol, seg, software_version="t"),
            "every mask is empty",
        ),
    }
    for what, (call, needle) in cases.items():
        with pytest.raises(InputError) as e:
            call()
        assert needle in _one_line(e), what


@needs_shipped_weights
@pytest.mark.slow
def test_cli_seg_of_a_nifti_input_exits_2_with_one_line(tmp_path):
    run = subprocess.run(
        ["python3", "-m", "seqpatch_core", "predict", str(example("lung2_ct_crop")[0]), "--point", *map(str, CLICK),
         "--method", "unet", "--device", "cpu", "--dtype", "float32", "--out", str(tmp_path / "x.dcm")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300,
    )
    err = [ln for ln in run.stderr.splitlines() if not ln.startswith(("INFO", "WARNING"))]
    assert run.returncode == 2 and len(err) == 1 and "needs a DICOM image" in err[0], run.stderr
    assert not (tmp_path / "x.dcm").exists()


def _folder_with(f: Path, d: Path) -> Path:
    d.mkdir()
    shutil.copy(f, d / f.name)
    return d


def _zip_of_text(d: Path) -> Path:
    with zipfile.ZipFile(d / "notes.zip", "w") as zf:
        zf.writestr("readme.txt", "no images\n")
        zf.writestr("IM0001", "not DICOM either\n")
    return d / "notes.zip"


def _undecodable(d: Path) -> Path:
    """One CT slice whose pixel data claims High-Throughput JPEG 2000 and is not a codestream."""
    from pydicom.encaps import encapsulate

    write_ct_series(d / "htj2k", np.zeros((1, 16, 16), np.int16))
    f = next((d / "htj2k").iterdir())
    ds = pydicom.dcmread(f)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.201"
    ds.PixelData = encapsulate([b"\xff\x4f" + bytes(100)])
    ds["PixelData"].VR = "OB"
    ds.save_as(d / "htj2k.dcm", enforce_file_format=True)
    return d / "htj2k.dcm"


def _other_series(d: Path) -> Path:
    write_ct_series(d / "other")
    return d / "other"
