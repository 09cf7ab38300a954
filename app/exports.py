"""What a visitor takes home: the masks with the input's exact geometry, the overlay and the clicks."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from app.drawing import COLOURS, NAMES
from app.notices import inform, user_errors, warn
from app.session import BoxAnswer, Session, require
from app.view import render_view
from seqpatch_core.base.errors import InputError, first_line
from seqpatch_core.images.dicom_seg import Segment, write_seg
from seqpatch_core.images.formats import file_suffix
from seqpatch_core.images.io import write_mask
from seqpatch_core.inference.predictor import METHODS

log = logging.getLogger(__name__)


#: What a mask is exported for: the clicked methods, then LiteMedSAM (its answer to each click's box).
EXPORTED = (*METHODS, "litemedsam")


def slice_masks(session: Session, method: str) -> dict[int, np.ndarray]:
    """z -> the (y, x) bool mask ``method`` shows on slice z, on every slice where it shows one
    ("litemedsam": its answer that follows the slice's click, :meth:`Session.box_answer`)."""
    s = require(session)
    if method != "litemedsam":
        return {z: res[method].mask for z, res in s.results.items() if method in res}
    answers = {z: s.box_answer(z) for z in {a.result.box.z for a in s.box_answers}}
    return {z: a.result.mask for z, a in answers.items() if a is not None}


def mask_volume(session: Session, method: str) -> np.ndarray:
    """The (z, y, x) uint8 mask of ``method`` (one of :data:`EXPORTED`) over every segmented slice."""
    s = require(session)
    out = np.zeros(s.shape, dtype=np.uint8)
    for z, mask in slice_masks(s, method).items():
        out[z] = mask
    return out


def _records(session: Session) -> dict[str, dict]:
    """Method -> its weights' record (name, sha256, ...): the clicked networks and LiteMedSAM."""
    models = dict(session.predictor.models)
    if session.boxes is not None:
        models["litemedsam"] = session.boxes.model
    return {m: getattr(model, "record", {}) or {} for m, model in models.items()}


def _box_record(box: BoxAnswer, sha256: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(LiteMedSAM's prompt box, its result) as JSON-ready data: the box in voxel indices (z, y0, x0,
    y1, x1), corners inclusive, with its source; the mask's area and the times."""
    prompt = {"zyx_inclusive": box.result.box.as_list(), "source": box.source, "oracle": box.oracle}
    result = {
        "area_px": int(box.result.mask.sum()),
        "latency_ms": round(box.total_ms, 1),
        "encoder_ms": round(box.result.encoder_ms, 1),
        "decoder_ms": round(box.result.decoder_ms, 1),
        "weights_sha256": sha256,
    }
    return prompt, result


def clicks_record(session: Session) -> dict[str, Any]:
    """The clicks as JSON-ready data: voxel (z, y, x) and physical (x, y, z) mm coordinates; under
    "boxes", LiteMedSAM's answers to boxes drawn on slices with no click shown."""
    s = require(session)
    v = s.volume
    weights = {m: {"name": rec.get("name", m), "sha256": rec.get("sha256")} for m, rec in _records(s).items()}
    clicks = []
    answered: set[int] = set()  # slices whose box is recorded with their click
    history = s.clicks
    lite_sha = weights.get("litemedsam", {}).get("sha256")
    for i, c in enumerate(history):
        res = s.results.get(c.z) or {}
        current = any(r.point_zyx == (float(c.z), c.y, c.x) for r in res.values())
        later = any(o.z == c.z for o in history[i + 1 :])
        entry = {
            "slice": c.z,
            # exact: the click log is for reproducing the segmentation
            "voxel_zyx": [c.z, float(c.y), float(c.x)],
            "physical_xyz_mm": [float(p) for p in v.index_to_physical((c.z, c.y, c.x))],
            "methods": c.methods,
            "threshold": s.threshold,
            "superseded": bool(later or not current),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(c.time)),
        }
        if current and not later:
            entry["results"] = {
                m: {
                    "area_px": int(r.mask.sum()),
                    "latency_ms": round(r.timings.get("total_ms", 0.0), 1),
                    "window": str(r.window),
                    "preset": r.preset,
                    "working_spacing_mm": r.working_spacing,
                    "grids_mm": list(r.grids_mm),
                    "coarsened": r.coarsened,
                    "weights_sha256": weights.get(m, {}).get("sha256"),
                }
                for m, r in res.items()
            }
            box = s.box_answer(c.z)
            if box is not None:  # LiteMedSAM's prompt: the box it was given, and its answer
                entry["prompt_box"], entry["results"]["litemedsam"] = _box_record(box, lite_sha)
                answered.add(c.z)
        clicks.append(entry)
    boxes = []
    for z in sorted({a.result.box.z for a in s.box_answers} - answered):
        box = s.box_answer(z)
        if box is not None:  # a box drawn (or given) on a slice with no click
            prompt, result = _box_record(box, lite_sha)
            boxes.append({"slice": z, "prompt_box": prompt, "results": {"litemedsam": result}})
    return {
        "image": v.source,
        "size_zyx": list(v.shape),
        "spacing_zyx_mm": list(v.spacing),
        "origin_xyz_mm": list(v.origin),
        "direction": list(v.direction),
        "threshold": s.threshold,
        "device": str(s.predictor.device),
        "weights": weights,
        "clicks": clicks,
        "boxes": boxes,
        "objects_3d": {
            m: {
                "seed_voxel_zyx": [o.seed_zyx[0], float(o.seed_zyx[1]), float(o.seed_zyx[2])],
                "threshold": o.threshold,
                "slices": list(o.prop.z_range),
                "volume_ml": round(o.prop.volume_ml, 4),
                "stops": o.prop.stops,
            }
            for m, o in s.objects3d.items()
        },
    }


def file_stem(session: Session) -> str:
    """The image file's name without its format suffix, made safe for a file name ("image" when none)."""
    name = Path(session.image_path or "image").name
    ext = file_suffix(name)
    if ext:
        name = name[: -len(ext)]
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "image"


def seg_segments(session: Session) -> list[Segment]:
    """The exported masks as DICOM SEG segments: each method's clicked slices, then each 3D object,
    with the method's weights (name, SHA-256) as the algorithm."""
    s = require(session)
    records = _records(s)

    def segment(m: str, label: str, mask: np.ndarray) -> Segment:
        rec = records.get(m, {})
        return Segment(label, mask, rec.get("name", m), rec.get("sha256") or "unknown", COLOURS.get(m))

    out = [segment(m, NAMES.get(m, m), mask_volume(s, m)) for m in EXPORTED if slice_masks(s, m)]
    out += [segment(m, f"{NAMES.get(m, m)} 3D object", o.prop.mask3d) for m, o in s.objects3d.items()]
    return out


def _write_seg(session: Session, path: Path) -> bool:
    """The DICOM SEG of a DICOM input, beside the other exports: whether it was written. A source it
    cannot be written for costs only the SEG (a notice says why); repairs of the source's identifiers
    are told in one notice."""
    try:
        notes = write_seg(seg_segments(session), session.volume, path)
    except InputError as exc:
        warn(f"no DICOM SEG: {first_line(exc)}")
        return False
    if notes:
        warn("DICOM SEG: " + "; ".join(notes))
    return True


@user_errors
def export(session: Session | None) -> dict[str, Any]:
    """Write the masks (.nii.gz, the input's exact geometry), the overlay (.png) and the clicks (.json).

    ``<stem>_<method>_mask.nii.gz`` holds every clicked slice; ``<stem>_<method>_3d_mask.nii.gz`` the
    whole object followed in 3D (when segmented); ``<stem>_seg.dcm``, for a DICOM input, all of them
    as one DICOM SEG referencing the input's instances; ``<stem>_robustness.json`` the last
    robustness grid.
    """
    from PIL import Image

    s = require(session)
    if not s.results and not s.objects3d:
        raise InputError("nothing to export yet: click on the object first")
    d = s.workdir()
    stem = file_stem(s)
    files = []
    for m in EXPORTED:
        if slice_masks(s, m):
            p = d / f"{stem}_{m}_mask.nii.gz"
            write_mask(mask_volume(s, m), s.volume, p)
            files.append(str(p))
    for m, obj in s.objects3d.items():
        p = d / f"{stem}_{m}_3d_mask.nii.gz"
        write_mask(obj.prop.mask3d.astype(np.uint8), s.volume, p)
        files.append(str(p))
    if s.volume.dicom is not None and _write_seg(s, d / f"{stem}_seg.dcm"):
        files.append(str(d / f"{stem}_seg.dcm"))
    if s.robustness is not None:
        p = d / f"{stem}_robustness.json"
        p.write_text(json.dumps(asdict(s.robustness), indent=1))
        files.append(str(p))
    # The overlay of a slice that has a result: the one shown, else the latest click's still kept.
    shown = s.z
    if not s.results.get(shown):
        shown = next((c.z for c in reversed(s.clicks) if s.results.get(c.z)), None)
    if shown is not None:
        z_before, s.z = s.z, shown
        try:
            png = d / f"{stem}_slice{shown}_overlay.png"
            Image.fromarray(render_view(s)["overlay"]).save(png)
        finally:
            s.z = z_before
        files.append(str(png))
    js = d / f"{stem}_clicks.json"
    js.write_text(json.dumps(clicks_record(s), indent=2))
    files.append(str(js))
    inform(f"Exported {len(files)} files: the list is under the slice and its status line.")
    return {"state": s, "files": files}
