"""DICOM Segmentation out and in, with highdicom: masks of a DICOM image as a SEG that references it.

:func:`write_seg` writes one binary segment per mask over the source instances the image was read
from (``Volume.dicom``, see :mod:`seqpatch_core.images.dicom`): only the frames that hold a mask,
each referencing its source slice (or frame), with patient, study and frame of reference copied from
the source. Identifiers the source leaves empty are repaired where that is sound (SOP UIDs from the
file meta, when the reader found them there; a study, series or frame of reference UID derived from
the instances' UIDs) and each repair is returned as one line; a SEG that would reference nothing is
refused. :func:`read_seg_label` places a SEG's segments on the image through those same references.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqpatch_core.base.errors import InputError, first_line
from seqpatch_core.images.dicom import text
from seqpatch_core.images.volume import Volume

__all__ = ["Segment", "read_seg_label", "write_seg"]

#: The SEG's own series number: after any a scanner gives its series, so viewers list it last.
SEG_SERIES_NUMBER = 1000

#: What a repaired identifier means for the SEG, by attribute (said once when it is generated).
_GENERATED = {
    "StudyInstanceUID": "the SEG carries a new one derived from the instances' UIDs, so an archive files it "
    "apart from the images",
    "SeriesInstanceUID": "the SEG names the source series by a new UID derived from the instances' UIDs; its "
    "references to the instances hold",
    "FrameOfReferenceUID": "the SEG carries a new one derived from the instances' UIDs; viewers place it "
    "through its references to the instances",
}


@dataclass(frozen=True)
class Segment:
    """One segment of a SEG: a mask and the algorithm that made it.

    Attributes:
        label: the segment's label, e.g. ``"SeqPatch"``.
        mask: (z, y, x) of the image's shape; nonzero voxels are inside (any dtype).
        algorithm: the algorithm's name, e.g. ``"SeqPatch bidirectional ConvRNN"``.
        version: the algorithm's version: the SHA-256 of its weights file.
        color: display colour, RGB 0-255 (optional).
    """

    label: str
    mask: np.ndarray
    algorithm: str
    version: str
    color: tuple[int, int, int] | None = None


def _repaired_sources(like: Volume) -> tuple[list, list[str]]:
    """Copies of the source instances with the identifiers a SEG needs, and what was repaired.

    Raises:
        InputError: an instance lacks SOPClassUID or SOPInstanceUID (the SEG could not reference it),
            two instances share a SOPInstanceUID, or the instances disagree on their study, series
            or frame of reference.
    """
    from pydicom.uid import generate_uid

    src = like.dicom
    notes = list(src.repairs)
    instances = [copy.deepcopy(ds) for ds in src.instances]  # the Volume's headers stay as read
    n = len(instances)
    for key in ("SOPClassUID", "SOPInstanceUID"):
        missing = sum(not text(ds, key) for ds in instances)
        if missing:
            raise InputError(
                f"cannot write a DICOM SEG: {missing} of {n} source instances have no {key}, neither in the "
                "dataset nor in the file meta, so the SEG could not reference them; write the mask as .nii.gz"
            )
    sops = [text(ds, "SOPInstanceUID") for ds in instances]
    if len(set(sops)) < n:
        raise InputError(
            f"cannot write a DICOM SEG: the {n} source slices have only {len(set(sops))} distinct SOPInstanceUIDs, "
            "so its references would be ambiguous; write the mask as .nii.gz"
        )
    for key, why in _GENERATED.items():
        values = {text(ds, key) for ds in instances} - {""}
        if len(values) > 1:
            raise InputError(
                f"cannot write a DICOM SEG: the source slices disagree on their {key} ({len(values)} values)"
            )
        empty = sum(not text(ds, key) for ds in instances)
        if not empty:
            continue
        if values:
            uid = values.pop()
            notes.append(f"{key} was empty in {empty} of {n} source datasets: took the other slices' value")
        else:
            # Derived from the instances, so that writing the SEG again gives the same UID.
            uid = generate_uid(entropy_srcs=[key, *sops])
            notes.append(f"{key} is empty in the source (and no file meta holds it): {why}")
        for ds in instances:
            setattr(ds, key, uid)
    return instances, notes


def write_seg(
    segments: Sequence[Segment],
    like: Volume,
    path: str | Path,
    *,
    software_version: str = "SeqPatch",
    series_description: str = "SeqPatch segmentation",
) -> list[str]:
    """Writes ``segments`` of the DICOM image ``like`` as a binary DICOM Segmentation at ``path``.

    Segments are numbered in the given order, typed "Morphologically abnormal structure / Lesion" and
    marked SEMIAUTOMATIC (a click starts them) with their algorithm's name and version. Only frames
    where some segment holds a voxel are stored; each references its source instance (and frame, for
    a multi-frame source), and the SEG references the source series.

    Returns:
        What was repaired in the source's identifiers to write it, one line each (empty when nothing).

    Raises:
        InputError: one line: the image is not DICOM, a mask's shape differs, every mask is empty, the
            source cannot be referenced (see :func:`_repaired_sources`), or highdicom refuses the source.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    path = Path(path)
    if like.dicom is None:
        raise InputError(f"a DICOM SEG needs a DICOM image, and {like.source} is not; write the mask as .nii.gz")
    if not segments:
        raise InputError("nothing to write as a DICOM SEG: no segment")
    masks = []
    for s in segments:
        m = np.asarray(s.mask)
        if m.shape != like.shape:
            raise InputError(f"the {s.label} mask's shape {m.shape} differs from the image's {like.shape} (z, y, x)")
        masks.append(m != 0)
    if not any(m.any() for m in masks):
        raise InputError("nothing to write as a DICOM SEG: every mask is empty")
    instances, notes = _repaired_sources(like)
    stack = np.stack(masks, axis=-1)  # (z, y, x, segment)
    if like.dicom.multiframe:
        # highdicom matches a multi-frame source frame by frame, in the source's frame order.
        n_frames = int(instances[0].NumberOfFrames)
        pixels = np.zeros((n_frames, *stack.shape[1:]), dtype=bool)
        pixels[np.asarray(like.dicom.frames) - 1] = stack
    else:
        pixels = stack
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i,
            segment_label=s.label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=s.algorithm, family=codes.DCM.ArtificialIntelligence, version=s.version
            ),
            display_color=hd.color.CIELabColor.from_rgb(*s.color) if s.color else None,
        )
        for i, s in enumerate(segments, start=1)
    ]
    try:
        seg = hd.seg.Segmentation(
            source_images=instances,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="SeqPatch",
            manufacturer_model_name="SeqPatch",
            software_versions=software_version,
            device_serial_number="none",
            content_label="SEQPATCH",
            content_description="One-click segmentation",
            series_description=series_description,
            omit_empty_frames=True,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # highdicom's verdict on the source
        raise InputError(f"cannot write a DICOM SEG from {like.source}: {first_line(exc)}") from None
    try:
        seg.save_as(path)
    except OSError as exc:
        raise InputError(f"cannot write {path.name}: {first_line(exc)}") from None
    return notes


def read_seg_label(path: str | Path, like: Volume, name: str | None = None) -> np.ndarray:
    """A DICOM SEG as a label on ``like``'s grid: uint8 (z, y, x), 1 where any segment holds the voxel.

    Frames are placed through the source instances (and frames) they reference, which must be
    ``like``'s own (``like.dicom``); a fractional segment counts from 0.5.

    Raises:
        InputError: one line: the image is not DICOM, the SEG cannot be read, or it references none
            of the image's slices.
    """
    import highdicom as hd

    path = Path(path)
    name = name or path.name
    src = like.dicom
    if src is None:
        raise InputError(
            f"{name} is a DICOM SEG, placed through the DICOM slices it references, and the image "
            f"({like.source}) is not DICOM"
        )
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # pydicom and highdicom raise many types on a damaged SEG
        raise InputError(f"cannot read the DICOM SEG {name}: {first_line(exc)}") from None
    referenced = {str(sop) for _study, _series, sop in seg.get_source_image_uids()}
    sops = [text(ds, "SOPInstanceUID") for ds in src.instances]
    theirs = sorted({str(series) for _study, series, _sop in seg.get_source_image_uids()})
    if not referenced & set(sops):
        raise InputError(
            f"{name} references none of the image's slices (it segments series {', '.join(theirs) or '?'}, "
            f"the image is series {src.series_uid or '(no series UID)'})"
        )
    out = np.zeros(like.shape, dtype=np.uint8)
    try:
        if src.multiframe:
            # The SEG references this instance; its frames that hold no mask are stored nowhere.
            px = seg.get_pixels_by_source_frame(
                source_sop_instance_uid=sops[0],
                source_frame_numbers=list(src.frames),
                combine_segments=False,
                assert_missing_frames_are_empty=True,
            )
            out[...] = (px.astype(np.float32) >= 0.5).any(axis=-1)
        else:
            zs = [z for z, sop in enumerate(sops) if sop in referenced]
            px = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[sops[z] for z in zs], combine_segments=False
            )
            out[zs] = (px.astype(np.float32) >= 0.5).any(axis=-1)
    except (ValueError, KeyError, IndexError) as exc:  # e.g. frames of another size than the image's
        raise InputError(f"cannot place the DICOM SEG {name} on the image: {first_line(exc)}") from None
    return out
