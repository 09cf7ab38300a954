"""The file formats the project reads and writes, by suffix: the one list that the reader
(:mod:`seqpatch_core.images.io`), the background bank, the app's upload box and its export names use.

Plain data, no reader: modules that only need to recognise a file name import this without SimpleITK.
"""

from __future__ import annotations

__all__ = ["PICTURE_FORMATS", "SUPPORTED", "VOLUME_FORMATS", "VOLUME_SUFFIXES", "file_suffix"]

#: Suffix (lower case) -> format name shown to users; longest suffixes first, so matching in order works.
VOLUME_FORMATS: dict[str, str] = {
    ".nii.gz": "NIfTI",
    ".nii": "NIfTI",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".dcm": "DICOM",
}
#: 2D pictures, read as one slice with nominal 1.0 mm pixels.
PICTURE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
#: Suffixes of the single-file volume formats (read and written; DICOM comes as a folder or a zip).
VOLUME_SUFFIXES = tuple(k for k in VOLUME_FORMATS if k != ".dcm")
#: What a refusal of an unknown file lists.
SUPPORTED = (
    "NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd), NRRD (.nrrd, .nhdr), DICOM (folder, .zip, .dcm), "
    "PNG, JPEG, TIFF, BMP"
)


def file_suffix(name: str) -> str:
    """The format suffix of a file name in lower case (".nii.gz", ".png", ".zip", ...), "" when none is known."""
    low = name.lower()
    for ext in (*VOLUME_FORMATS, *PICTURE_FORMATS, ".zip"):
        if low.endswith(ext):
            return ext
    return ""
