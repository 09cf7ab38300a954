"""What the demo does, as functions of a per-session :class:`Session`: testable without a browser.

Every handler takes the session (and plain values) and returns a dict keyed by output name
(:data:`OUTPUTS`); the layout maps names to components and leaves absent outputs unchanged. Errors a
user can cause (:class:`~seqpatch_core.errors.SeqPatchError`) become a one-line ``gr.Error``.

Axis order: arrays are (z, y, x) and points (z, y, x) or (y, x) slice pixels, as in the core. The UI
layer alone converts Gradio's click position ``[x, y]`` on the enlarged picture into (y, x).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from app import memory, render
from seqpatch_core.errors import InputError, SeqPatchError
from seqpatch_core.intensity import Window, apply_window, auto_window, resolve_window
from seqpatch_core.io import Volume, read_label, write_mask
from seqpatch_core.metrics import evaluate_masks
from seqpatch_core.predictor import METHODS, Predictor, Result
from seqpatch_core.propagate import Propagation

log = logging.getLogger(__name__)

#: Names of everything a handler may update (the layout has one component per name).
OUTPUTS = (
    "state",
    "summary",
    "slice",
    "window",
    "width",
    "level",
    "overlay",
    "lik_seqpatch",
    "lik_unet",
    "rays",
    "ray_detail",
    "metrics",
    "status",
    "coronal",
    "sagittal",
    "files",  # last: API clients take the exports as the last output
)
#: Window choices shown in the dropdown ("custom" = the W/L sliders).
WINDOWS = ("auto", "soft", "lung", "bone", "brain", "mr", "custom")
#: Expired sessions are dropped after this many seconds without use.
SESSION_TTL_S = 2 * 3600

WEIGHTS_HELP = (
    "train them with `python -m seqpatch_core train --model {m} --out weights/{m}.safetensors` "
    "or see weights/README.md"
)


def weights_message(missing: list[str]) -> str:
    names = " and ".join(render.NAMES.get(m, m) for m in missing)
    return f"{names} weights are not loaded: " + WEIGHTS_HELP.format(m=missing[0])


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class UserNotice(gr.Error):
    """A one-line message for the user (no stack trace). The layout shows it as a notification
    (``gr.Warning``) and leaves every output as it was, but for ``outputs`` (``{name: value}``, e.g. an
    upload box to empty): the page keeps its state and stays clickable."""

    def __init__(self, message: str, outputs: dict[str, Any] | None = None, **kwargs):
        kwargs.setdefault("print_exception", False)
        super().__init__(message, **kwargs)
        self.outputs = dict(outputs or {})


def user_errors(fn):
    """Turns a :class:`SeqPatchError` into a one-line :class:`UserNotice`.

    Works on generator functions too (the error is raised while iterating).
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def steps(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except SeqPatchError as exc:
                log.info("%s: %s", fn.__name__, _one_line(exc))
                raise UserNotice(_one_line(exc), print_exception=False) from None

        return steps

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SeqPatchError as exc:
            log.info("%s: %s", fn.__name__, _one_line(exc))
            raise UserNotice(_one_line(exc), print_exception=False) from None

    return inner


# ----------------------------------------------------------------------------- session


@dataclass
class Click:
    """One click: the point, what ran, and what it replaced on its slice (for undo)."""

    z: int
    y: float
    x: float
    methods: list[str]
    replaced: dict[str, Result] | None
    time: float = field(default_factory=time.time)


@dataclass
class Object3D:
    """A clicked object followed through the volume (:func:`seqpatch_core.propagate.propagate`)."""

    method: str
    seed_zyx: tuple[int, float, float]
    threshold: float
    prop: Propagation
    window: Window | None = None


@dataclass
class ObjectStep:
    """One "Segment the whole object" in the undo history: what it replaced for its method."""

    method: str
    replaced: Object3D | None
    time: float = field(default_factory=time.time)


@dataclass
class Session:
    """Everything one browser session holds (kept in ``gr.State``, never module-level)."""

    predictor: Predictor
    volume: Volume | None = None
    label: np.ndarray | None = None
    image_path: str | None = None
    label_path: str | None = None
    label_note: str = ""
    z: int = 0
    window_name: str = "auto"
    #: The window "auto" stands for: chosen once per volume (on the slice it opens at), so that nearby
    #: clicks never get different windows; the dropdown and the W/L sliders change it.
    auto: Window | None = None
    custom: Window | None = None
    #: The second pass for large objects (each network's calibrated rule), for the next clicks.
    second_pass: bool = True
    threshold: float = 0.5
    opacity: float = 0.3
    show_rays: bool = False
    #: The ray shown large in the per-ray view (with its forward- and backward-only readouts).
    ray: int = 0
    results: dict[int, dict[str, Result]] = field(default_factory=dict)
    #: Undo history: clicks and 3D objects, oldest first.
    history: list[Click | ObjectStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    objects3d: dict[str, Object3D] = field(default_factory=dict)
    robustness: dict | None = None
    #: Wall time (s) of this session's last SeqPatch click: the estimate shown while the next one runs.
    seqpatch_seconds: float | None = None
    tmpdir: str | None = None
    #: The image box was emptied after a refused file: its "change" must not unload the image.
    upload_cleared: bool = False
    #: The server released this session's arrays while it was idle (:class:`app.memory.SessionPool`).
    released: bool = False
    _windows: dict[str, Window] = field(default_factory=dict)
    _slices: OrderedDict = field(default_factory=OrderedDict)
    #: (id of a SeqPatch result, ray) -> (that result, its direction readouts): a few network runs kept.
    _readouts: OrderedDict = field(default_factory=OrderedDict)

    def readouts(self, result: Result, ray: int) -> dict[str, np.ndarray]:
        """The fused, forward-only and backward-only likelihoods of one ray of ``result`` (each
        (K, P, P) float32; :func:`app.features.direction_readouts`), cached for the last few rays."""
        from app import zerogpu

        key = (id(result), ray)
        hit = self._readouts.get(key)
        if hit is not None and hit[0] is result:
            self._readouts.move_to_end(key)
            return hit[1]
        got = zerogpu.readouts("seqpatch", self.predictor.models["seqpatch"], result.patches[ray])
        self._readouts[key] = (result, got)
        while len(self._readouts) > 8:
            self._readouts.popitem(last=False)
        return got

    # -- geometry and display helpers

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.volume.shape if self.volume is not None else (0, 0, 0)

    @property
    def factor(self) -> int:
        return render.display_factor(self.shape[1:])

    @property
    def clicks(self) -> list[Click]:
        """The clicks of the undo history, oldest first."""
        return [h for h in self.history if isinstance(h, Click)]

    def display_window(self, z: int | None = None) -> Window:
        """The window every slice is shown in, which is also what the networks see at the next click.

        One window for the whole volume (``z`` is accepted for callers that name a slice): "auto" is
        :attr:`auto`, chosen at load; a named preset is resolved once; "custom" is the W/L sliders'.
        """
        if self.window_name == "custom" and self.custom is not None:
            return self.custom
        if self.window_name in ("auto", "custom"):
            if self.auto is None:
                self.auto = auto_window(self.volume, z=self.z)
            return self.auto
        if self.window_name not in self._windows:
            self._windows[self.window_name] = resolve_window(self.window_name, self.volume, None)
        return self._windows[self.window_name]

    def windowed(self, z: int) -> np.ndarray:
        """The windowed slice in [0, 1] (cached, so scrolling and re-drawing stay fast)."""
        w = self.display_window(z)
        key = (z, w.lo, w.hi)
        if key in self._slices:
            self._slices.move_to_end(key)
            return self._slices[key]
        out = apply_window(self.volume.array[z], w)
        self._slices[key] = out
        while len(self._slices) > 32:
            self._slices.popitem(last=False)
        return out

    def window_text(self) -> str:
        """The window in words, e.g. "auto → lung (W 1500, L -600)"."""
        w = self.display_window()
        head = f"auto → {w.name}" if self.window_name == "auto" else w.name
        return f"{head} (W {w.width:g}, L {w.level:g})"

    def workdir(self) -> Path:
        if self.tmpdir is None or not Path(self.tmpdir).is_dir():
            self.tmpdir = tempfile.mkdtemp(prefix="seqpatch_session_")
        return Path(self.tmpdir)

    def memory_bytes(self) -> int:
        """The bytes of this session's arrays (a shared read-only example image not counted)."""
        own = [self.label, self.results, self.history, self.objects3d, self._slices, self._readouts]
        own.append(list(self.predictor._cache.values()))
        vol = 0
        if self.volume is not None and not memory.is_shared(self.volume.array):
            vol = int(self.volume.array.nbytes)
        return vol + memory.nbytes(own)

    def release(self) -> None:
        """Drops every array (image, label, results, caches): the server needs the memory. The next
        action says so in one line (:data:`app.memory.RELEASED`)."""
        self.released = self.volume is not None
        self.volume = None
        self.label = None
        self._slices.clear()
        self._readouts.clear()
        self._windows.clear()
        self.results.clear()
        self.history.clear()
        self.objects3d.clear()
        self.robustness = None
        self.predictor.set_volume(None)

    def close(self) -> None:
        """Frees the session's files and arrays (called when Gradio drops an expired session)."""
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        self.release()
        self.released = False
        memory.POOL.forget(self)


def new_session(predictor: Predictor) -> Session:
    """A session with its own predictor that shares ``predictor``'s models."""
    return Session(predictor=predictor.session())


def close_session(session: Session | None) -> None:
    """``gr.State`` delete callback."""
    if isinstance(session, Session):
        log.info("closing an expired session")
        session.close()
        memory.trim()


def _require(session: Session | None) -> Session:
    if session is not None and session.released:
        raise InputError(memory.RELEASED)
    if session is None or session.volume is None:
        raise InputError("no image loaded: upload one or pick an example first")
    memory.POOL.touch(session)  # used now; past the budget, the least recently used sessions let go
    return session


# ----------------------------------------------------------------------------- view


def _is_ct(volume: Volume) -> bool:
    return volume.modality == "CT" or float(volume.array.min()) <= -500.0


def wl_ranges(volume: Volume) -> dict[str, dict[str, float]]:
    """Slider ranges for window width and level in the image's units."""
    if _is_ct(volume):
        return {
            "width": {"minimum": 1, "maximum": 4000, "step": 1},
            "level": {"minimum": -1500, "maximum": 3000, "step": 1},
        }
    lo, hi = float(volume.array.min()), float(volume.array.max())
    span = max(hi - lo, 1e-6)
    step = 10 ** math.floor(math.log10(span / 1000)) if span > 0 else 1
    return {
        "width": {"minimum": step, "maximum": _nice(2 * span, step), "step": step},
        "level": {"minimum": _nice(lo - span / 2, step), "maximum": _nice(hi + span / 2, step), "step": step},
    }


def _nice(v: float, step: float) -> float:
    return float(round(v / step) * step)


def _best_slice(volume: Volume, label: np.ndarray | None) -> int:
    if label is not None and label.any():
        return int(np.argmax(label.reshape(label.shape[0], -1).sum(axis=1)))
    return volume.shape[0] // 2


def _metrics_table(session: Session, z: int) -> str:
    res = session.results.get(z) or {}
    device = session.predictor.device
    dev = f"device: **{device}**"
    if not res:
        lines = [f"_Click on the object in the slice to segment it._  {dev}"]
        if session.label is not None:
            area = int(session.label[z].sum())
            lines.append(f"Ground truth on slice {z}: {area} px.")
        return "\n\n".join(lines)
    ref = session.label[z] if session.label is not None else None
    # short headers: the table sits in a third of a laptop screen; units are in the line below it
    rows = ["| method | Dice | HD95 | CD x | CD y | area | time |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m in METHODS:
        if m in res:
            v = _metric_values(session, res[m], ref)
            cells = (v["Dice"], v["HD95"], v["CD x"], v["CD y"], v["area"], v["latency"])
            rows.append(f"| {render.NAMES[m]} | " + " | ".join(cells) + " |")
    note = "" if ref is not None else "\n\n_Load a label to see Dice, CD and HD95._"
    return (
        "\n".join(rows)
        + "\n\nHD95 and CD (centroid distance per axis) in mm, area in mm², time in ms. "
        + f"Slice {z}, threshold {session.threshold:.2f}, {dev}."
        + note
    )


def metric_cells(pred: np.ndarray, ref: np.ndarray | None, spacing: tuple[float, ...]) -> dict[str, str]:
    """Dice, CD per axis and HD95 of ``pred`` against ``ref`` (2D (y, x) or 3D (z, y, x) masks, spacing
    in the same order), formatted for a table: "–" without a reference, and "n/a (reason)" where a
    number would be invented (distances to an empty mask; Dice of two empty masks)."""
    axes = ("CD z", "CD y", "CD x")[-len(spacing) :]
    keys = ("Dice", *axes, "HD95")
    if ref is None:
        return dict.fromkeys(keys, "–")
    p_any, r_any = bool(np.any(pred)), bool(np.any(ref))
    if not p_any and not r_any:
        return dict.fromkeys(keys, "n/a (both empty)")
    e = evaluate_masks(pred, ref, spacing)
    out = {"Dice": f"{e['dice']:.3f}"}
    if not (p_any and r_any):
        why = "n/a (empty mask)" if not p_any else "n/a (no label here)"
        return {**out, **dict.fromkeys((*axes, "HD95"), why)}
    for a in axes:
        out[a] = f"{e['cd_' + a[-1]]:.2f}"
    out["HD95"] = f"{e['hd95']:.2f}"
    return out


def _metric_values(session: Session, r: Result, ref: np.ndarray | None) -> dict[str, str]:
    """One result's numbers, formatted: Dice, CD x, CD y, HD95 (– without a label), area and latency."""
    sy, sx = session.volume.spacing[1:]
    area = float(r.mask.sum()) * sy * sx
    lat = r.timings.get("total_ms", float("nan"))
    cells = metric_cells(r.mask, ref, (sy, sx))
    out = {k: cells[k] for k in ("Dice", "CD x", "CD y", "HD95")}
    out["area"] = f"{area:.1f}"
    out["latency"] = f"{lat:.0f}"
    return out


def running_note(session: Session) -> str:
    """What the page says while SeqPatch runs, with this session's last SeqPatch time as the estimate."""
    t = session.seqpatch_seconds
    if t is None:
        eta = "a few seconds"
    elif t < 1.5:
        eta = "about a second"
    else:
        eta = f"about {t:.0f} s"
    return f"**SeqPatch running…** ({eta} on this machine; the U-net's result is shown meanwhile)"


def _partial_metrics(session: Session, z: int, res: dict[str, Result]) -> str:
    """The numbers of the methods done so far, one line each (the full table follows with SeqPatch)."""
    ref = session.label[z] if session.label is not None else None
    lines = []
    for m in METHODS:
        if m in res:
            v = _metric_values(session, res[m], ref)
            lines.append(
                f"**{render.NAMES[m]}**: Dice {v['Dice']} · CD x {v['CD x']} mm · CD y {v['CD y']} mm · "
                f"HD95 {v['HD95']} mm · area {v['area']} mm² · {v['latency']} ms"
            )
    lines.append("_SeqPatch: running; the table of both follows._")
    lines.append(f"Slice {z}, threshold {session.threshold:.2f}, device: **{session.predictor.device}**.")
    return "\n\n".join(lines)


def _status(session: Session, z: int) -> str:
    res = session.results.get(z) or {}
    parts = []
    if res:
        r = next(iter(res.values()))
        pz, py, px = r.point_zyx
        phys = session.volume.index_to_physical((pz, py, px))
        parts.append(
            f"Point (z, y, x) = ({pz:.0f}, {py:.1f}, {px:.1f}) voxels = "
            f"({phys[0]:.1f}, {phys[1]:.1f}, {phys[2]:.1f}) mm (x, y, z); window {r.window}; "
            f"ray preset {r.preset}; working grid "
            + ", ".join(
                f"{render.NAMES[m]} {res[m].working_spacing:g} mm"
                + (" (large object: segmented again on this coarser grid)" if res[m].coarsened else "")
                for m in METHODS
                if m in res
            )
            + "."
        )
    n = len(session.results)
    parts.append(
        f"Window {session.window_text()}: one window for every click on this volume. "
        f"{n} segmented slice{'s' if n != 1 else ''}"
        + (f" ({', '.join(str(k) for k in sorted(session.results))})" if n else "")
        + "."
        + "".join(
            f" 3D object ({render.NAMES[m]}, dotted): slices {o.prop.z_range[0]}–{o.prop.z_range[1]}, "
            f"{o.prop.volume_ml:.2f} mL, from the click at ({o.seed_zyx[0]}, {o.seed_zyx[1]:.1f}, "
            f"{o.seed_zyx[2]:.1f})" + ("; on this slice." if o.prop.mask3d[z].any() else "; not on this slice.")
            for m, o in session.objects3d.items()
        )
    )
    parts.extend(f"⚠ {note}" for note in session.notes)
    return " ".join(parts[:2]) + ("\n\n" + "\n\n".join(parts[2:]) if len(parts) > 2 else "")


def plane_point(session: Session) -> tuple[int, int]:
    """(y, x) of the coronal and sagittal planes: the current slice's click, else the last click
    still shown, else the middle row and column."""
    s = session
    res = s.results.get(s.z)
    if not res:
        for c in reversed(s.clicks):
            if s.results.get(c.z):
                res = s.results[c.z]
                break
    _, ny, nx = s.shape
    if res:
        _, y, x = next(iter(res.values())).point_zyx
        return int(np.clip(round(y), 0, ny - 1)), int(np.clip(round(x), 0, nx - 1))
    return ny // 2, nx // 2


def render_planes(session: Session) -> dict[str, np.ndarray]:
    """The coronal (array[:, y, :]) and sagittal (array[:, :, x]) planes through the click, in the
    current slice's window and their physical aspect, with every segmented slice's masks and a line
    at the current axial slice. A numpy slice and a resize each: no network runs."""
    s = _require(session)
    y, x = plane_point(s)
    w = s.display_window(s.z)
    sz, sy, sx = s.volume.spacing
    arr = s.volume.array
    out = {}
    # (name, plane of a (z, y, x) array, line of a (y, x) slice mask, (row, column) spacing, caption)
    for name, pick, line, spacing, caption in (
        ("coronal", lambda a: a[:, y, :], lambda m: m[y, :], (sz, sx), f"coronal, y = {y}"),
        ("sagittal", lambda a: a[:, :, x], lambda m: m[:, x], (sz, sy), f"sagittal, x = {x}"),
    ):
        masks = {m: np.zeros(pick(arr).shape, dtype=bool) for m in METHODS}
        for z, res in s.results.items():
            for m, r in res.items():
                if m in masks:
                    masks[m][z] = line(r.mask)
        contours = [render.Contour(m, masks[m]) for m in METHODS if masks[m].any()]
        contours += [
            render.Contour(m, pick(o.prop.mask3d), fill=False, dotted=True, label=f"{render.NAMES[m]} 3D")
            for m, o in s.objects3d.items()
        ]
        if s.label is not None:
            contours.append(render.Contour("truth", pick(s.label).astype(bool), dashed=True, fill=False))
        out[name] = render.render_plane(
            apply_window(pick(arr), w),
            spacing,
            contours,
            opacity=s.opacity,
            current_row=s.z,
            caption=caption,
        )
    return out


#: Widths (px) the per-ray pictures are drawn at: about the width they are shown at on a laptop.
RAY_GRID_PX = 640
RAY_DETAIL_PX = 720


def ray_detail(session: Session, sp: Result, inside: np.ndarray) -> np.ndarray:
    """The chosen ray of a SeqPatch result, large: input patches, fused likelihood and the readouts
    of the forward-only and backward-only memories (same network), inside → outside."""
    n = sp.patches.shape[0]
    i = int(np.clip(session.ray, 0, n - 1))
    try:
        r = session.readouts(sp, i)
    except Exception:  # noqa: BLE001 - a teaching extra must never cost the user the main answer
        log.exception("direction readouts failed")
        r = {}
    return render.render_ray_detail(
        sp.patches[i],
        sp.ray_likelihoods[i],
        ray=i,
        n_rays=n,
        inside=inside[i],
        forward=r.get("forward"),
        backward=r.get("backward"),
        width=RAY_DETAIL_PX,
    )


def render_view(session: Session) -> dict[str, Any]:
    """Every picture and text of the current slice."""
    s = _require(session)
    z = s.z
    f = s.factor
    win = s.windowed(z)
    res = s.results.get(z) or {}
    contours = [render.Contour(m, res[m].mask) for m in METHODS if m in res]
    contours += [  # the whole objects followed in 3D, on every slice they reach
        render.Contour(m, o.prop.mask3d[z], fill=False, dotted=True, label=f"{render.NAMES[m]} 3D")
        for m, o in s.objects3d.items()
        if o.prop.mask3d[z].any()
    ]
    if s.label is not None:
        contours.append(render.Contour("truth", s.label[z].astype(bool), dashed=True, fill=not res))
    point = centres = fov = None
    if res:
        point = next(iter(res.values())).point_zyx[1:]
    if s.show_rays and "seqpatch" in res:
        centres = res["seqpatch"].centres
    if s.show_rays and "unet" in res:
        fov = res["unet"].centres
    caption = f"slice {z}/{s.shape[0] - 1}  {s.display_window(z)}"
    overlay = render.render_overlay(
        render.grey_rgb(win, f),
        f,
        contours,
        opacity=s.opacity,
        point_yx=point,
        ray_centres=centres,
        fov_corners=fov,
        caption=caption,
    )
    out: dict[str, Any] = {"overlay": overlay}
    for m in METHODS:
        r = res.get(m)
        if r is None:
            why = "weights not loaded" if m not in s.predictor.models else "click on the slice"
            out[f"lik_{m}"] = render.placeholder(f"{render.NAMES[m]} likelihood\n({why})")
        else:
            out[f"lik_{m}"] = render.render_likelihood(
                win,
                r.likelihood,
                r.coverage,
                f,
                key=m,
                mask=r.mask,
                point_yx=r.point_zyx[1:],
                title=f"{render.NAMES[m]} likelihood",
            )
    sp = res.get("seqpatch")
    if sp is not None and sp.patches.ndim == 4:
        cy = np.clip(np.round(sp.centres[..., 0]).astype(int), 0, s.shape[1] - 1)
        cx = np.clip(np.round(sp.centres[..., 1]).astype(int), 0, s.shape[2] - 1)
        inside = sp.mask[cy, cx]
        out["rays"] = render.render_ray_grid(sp.patches, sp.ray_likelihoods, inside=inside, width=RAY_GRID_PX)
        out["ray_detail"] = ray_detail(s, sp, inside)
    else:
        out["rays"] = render.placeholder("Per-ray view: click on the slice\n(SeqPatch: 16 rays × K patches)")
        out["ray_detail"] = render.placeholder("One ray, large: click on the slice")
    out["metrics"] = _metrics_table(s, z)
    out["status"] = _status(s, z)
    w = s.display_window(z)
    out["width"] = round(w.width, 6)
    out["level"] = round(w.level, 6)
    out.update(render_planes(s))
    return out


# ----------------------------------------------------------------------------- handlers


def _empty_view(session: Session | None, message: str = "Load an image") -> dict[str, Any]:
    return {
        "state": session,
        "summary": "_No image loaded._",
        "overlay": render.placeholder(message, (360, 480)),
        "lik_seqpatch": render.placeholder("SeqPatch likelihood"),
        "lik_unet": render.placeholder("U-net likelihood"),
        "rays": render.placeholder("Per-ray view"),
        "ray_detail": render.placeholder("One ray, large"),
        "coronal": render.placeholder("Coronal plane", (120, 420)),
        "sagittal": render.placeholder("Sagittal plane", (120, 420)),
        "metrics": "",
        "status": "",
        "files": None,
    }


def _summary(session: Session) -> str:
    v = session.volume
    lines = [f"**{v.source}**: {v.summary()}"]
    if session.label is not None:
        n = int(session.label.sum())
        k = int(np.count_nonzero(session.label.reshape(session.label.shape[0], -1).any(axis=1)))
        lines.append(f"Label: {n} voxels on {k} slice{'s' if k != 1 else ''}.")
    elif session.label_note:
        lines.append(session.label_note)
    lines.extend(f"⚠ {w}" for w in v.warnings)
    return "\n\n".join(lines)


@user_errors
def load(
    predictor: Predictor,
    old: Session | None,
    image_path: str | None,
    label_path: str | None = None,
    window_name: str = "auto",
    threshold: float = 0.5,
    opacity: float = 0.3,
    show_rays: bool = False,
    second_pass: bool = True,
) -> dict[str, Any]:
    """Read an image (and optional label), start a fresh session on it and show its best slice.

    threshold, opacity, show_rays, second_pass: the controls' current values, kept by the new session.
    """
    if not image_path and old is not None and old.upload_cleared:
        old.upload_cleared = False  # the box emptied after a refused file: keep the loaded image
        return {}
    session = new_session(predictor)
    session.second_pass = second_pass is not False
    session.threshold = float(threshold) if threshold and 0 < float(threshold) < 1 else 0.5
    session.opacity = float(np.clip(opacity if opacity is not None else 0.3, 0.0, 1.0))
    session.show_rays = bool(show_rays)
    if not image_path:
        if old is not None:
            old.close()
        return _empty_view(session)
    try:
        volume = memory.shared_volume(image_path)  # one read-only copy per file, shared by sessions
    except SeqPatchError as exc:  # a refused file leaves the current session as it was
        out: dict[str, Any] = {"image_file": None}  # not left in its box looking loaded
        if old is not None and old.volume is not None:
            old.upload_cleared = True
            out["state"] = old
        raise UserNotice(_one_line(exc), out) from None
    session.volume = volume
    session.image_path = str(image_path)
    session.window_name = window_name if window_name in WINDOWS and window_name != "custom" else "auto"
    out = {}
    if label_path:
        try:
            _set_label(session, label_path)
        except SeqPatchError as exc:  # the image is fine: use it, and say why the label is not
            session.label_note = f"⚠ {_one_line(exc)}"
            gr.Warning(_one_line(exc))
            out["label_file"] = None
    if old is not None:
        old.close()
    session.predictor.set_volume(volume)
    session.z = _best_slice(volume, session.label)
    session.auto = auto_window(volume, z=session.z)
    missing = [m for m in METHODS if m not in predictor.models]
    if missing:
        session.notes.append(weights_message(missing))
    ranges = wl_ranges(volume)
    out.update(render_view(session))
    out.update(
        {
            "state": session,
            "summary": _summary(session),
            "slice": gr.update(
                minimum=0,
                maximum=max(volume.shape[0] - 1, 1),  # a Gradio slider needs min < max
                value=session.z,
                step=1,
                interactive=volume.shape[0] > 1,
                visible=volume.shape[0] > 1,  # a single slice has nothing to scroll
            ),
            "window": session.window_name,
            "width": gr.update(value=out["width"], **ranges["width"]),
            "level": gr.update(value=out["level"], **ranges["level"]),
            "files": None,
        }
    )
    return out


def _set_label(session: Session, label_path: str) -> None:
    try:
        session.label = read_label(label_path, session.volume)
    except SeqPatchError as exc:
        raise InputError(f"label not used: {_one_line(exc)}") from None
    session.label_path = str(label_path)


@user_errors
def load_label(session: Session | None, image_path: str | None, label_path: str | None) -> dict[str, Any]:
    """A label chosen after the image: checked against the image's geometry.

    Does nothing while the image itself is (re)loading (the image handler reads the label too).
    """
    if session is None or session.volume is None or str(image_path or "") != (session.image_path or ""):
        return {}
    if (label_path or None) == session.label_path:
        return {}
    if not label_path:
        session.label = None
        session.label_path = None
    else:
        try:
            _set_label(session, label_path)
        except SeqPatchError as exc:  # said in one line; the box is emptied, the image stays as it was
            raise UserNotice(_one_line(exc), {"label_file": None}) from None
        if not session.results:
            session.z = _best_slice(session.volume, session.label)
    out = render_view(session)
    out.update({"state": session, "summary": _summary(session), "slice": session.z})
    return out


@user_errors
def change_slice(session: Session | None, z: float) -> dict[str, Any]:
    s = _require(session)
    s.z = int(np.clip(round(float(z)), 0, s.shape[0] - 1))
    out = render_view(s)
    out["state"] = s
    return out


@user_errors
def change_window(
    session: Session | None, name: str, width: float | None = None, level: float | None = None
) -> dict[str, Any]:
    """A window preset from the dropdown ("custom" takes the W/L sliders)."""
    s = _require(session)
    if name not in WINDOWS:
        raise InputError(f"unknown window {name!r}; choose one of {', '.join(WINDOWS)}")
    if name == "custom":
        if width is None or level is None:
            w = s.display_window()
            width, level = w.width, w.level
        return change_wl(s, width, level)
    s.window_name = name
    if name == "auto":
        s.auto = auto_window(s.volume, z=s.z)  # chosen again, on the slice shown now
    out = render_view(s)
    out["state"] = s
    return out


@user_errors
def change_wl(session: Session | None, width: float, level: float) -> dict[str, Any]:
    """The W/L sliders: a custom window (used for display and by the networks from the next click)."""
    s = _require(session)
    if width is None or level is None or not float(width) > 0:
        raise InputError("the window width must be a positive number")
    s.window_name = "custom"
    s.custom = Window.from_width_level(float(width), float(level), "custom")
    out = render_view(s)
    out.update({"state": s, "window": "custom"})
    return out


@user_errors
def change_ray(session: Session | None, ray: float) -> dict[str, Any]:
    """Show another ray large in the per-ray view (one small network run for its readouts)."""
    s = _require(session)
    s.ray = int(np.clip(round(float(ray or 0)), 0, 63))
    res = (s.results.get(s.z) or {}).get("seqpatch")
    if res is None or res.patches.ndim != 4:
        return {"state": s}
    cy = np.clip(np.round(res.centres[..., 0]).astype(int), 0, s.shape[1] - 1)
    cx = np.clip(np.round(res.centres[..., 1]).astype(int), 0, s.shape[2] - 1)
    return {"state": s, "ray_detail": ray_detail(s, res, res.mask[cy, cx])}


@user_errors
def change_display(session: Session | None, opacity: float, show_rays: bool) -> dict[str, Any]:
    s = _require(session)
    s.opacity = float(np.clip(opacity, 0.0, 1.0))
    s.show_rays = bool(show_rays)
    out = render_view(s)
    out["state"] = s
    return out


#: Methods slow enough on a CPU to show the others' results first (SeqPatch: 240 patches per click).
SLOW = ("seqpatch",)


@user_errors
def segment_steps(session: Session | None, z: float, y: float, x: float) -> Iterator[dict[str, Any]]:
    """Run every loaded method at the point (z, y, x) (voxels) and keep the result for slice z.

    Yields the view twice when SeqPatch and a faster method are loaded: first as soon as the fast ones
    (the U-net) are done, with a "SeqPatch running…" note and their numbers on one line each, then
    with every result and the full table. Yields once otherwise. The click is in the session (and in
    the undo history) from the first yield. A new click on a slice replaces that slice's result (undo
    brings the old one back).
    """
    s = _require(session)
    zi, yf, xf = s.predictor.check_point((z, y, x))
    methods = [m for m in METHODS if m in s.predictor.models]
    if not methods:
        raise InputError("no model is loaded: " + WEIGHTS_HELP.format(m="seqpatch") + " (and the same for unet)")
    fast = [m for m in methods if m not in SLOW]
    slow = [m for m in methods if m in SLOW]
    new: dict[str, Result] = {}
    opts = {"threshold": s.threshold, "window": s.display_window(), "coarsen": s.second_pass}
    for m in fast:
        new[m] = s.predictor.predict((zi, yf, xf), method=m, **opts)
    partial = None
    if fast and slow:  # show the fast results now, SeqPatch's when it is done
        partial = dict(new)
        s.history.append(Click(zi, yf, xf, methods, s.results.get(zi)))
        s.results[zi] = partial
        s.z = zi
        out = render_view(s)
        out.update({"state": s, "slice": zi, "files": None, "metrics": _partial_metrics(s, zi, new)})
        out["status"] = running_note(s) + "\n\n" + out["status"]
        for m in slow:
            out[f"lik_{m}"] = render.placeholder(f"{render.NAMES[m]} likelihood\n(running…)")
        out["rays"] = render.placeholder("Per-ray view\n(SeqPatch running…)")
        out["ray_detail"] = render.placeholder("One ray, large\n(SeqPatch running…)")
        yield out
    for m in slow:
        t0 = time.perf_counter()
        new[m] = s.predictor.predict((zi, yf, xf), method=m, **opts)
        s.seqpatch_seconds = time.perf_counter() - t0
    out = {"state": s, "files": None}
    if partial is None:
        s.history.append(Click(zi, yf, xf, methods, s.results.get(zi)))
        s.z = zi
    elif s.results.get(zi) is not partial:  # undone, reset or replaced while SeqPatch ran: drop it
        out.update(render_view(s))
        yield out
        return
    for r in new.values():  # the threshold may have moved while SeqPatch ran
        _rethreshold(r, s.threshold)
    s.results[zi] = {m: new[m] for m in METHODS if m in new}
    out.update(render_view(s))
    if s.z == zi:  # (the user may have moved to another slice meanwhile: stay there)
        out["slice"] = zi
    yield out


def segment(session: Session | None, z: float, y: float, x: float) -> dict[str, Any]:
    """:func:`segment_steps` run to the end: the final view (for tests and the HTTP API)."""
    out: dict[str, Any] = {}
    for out in segment_steps(session, z, y, x):  # noqa: B007 - the last one is the answer
        pass
    return out


@user_errors
def set_threshold(session: Session | None, threshold: float) -> dict[str, Any]:
    """Re-threshold every kept result from its cached likelihoods (no network runs)."""
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise InputError(f"the threshold must be between 0 and 1, got {t:g}")
    if session is None or session.volume is None:
        return {}
    s = session
    s.threshold = t
    for res in s.results.values():
        for r in res.values():
            _rethreshold(r, t)
    out = render_view(s)
    out["state"] = s
    return out


@user_errors
def set_second_pass(session: Session | None, on: bool) -> dict[str, Any]:
    """Turn this session's second pass for large objects (each network's calibrated rule) on or off.

    It applies to the next clicks; the results shown stay as they were computed (the status line says
    which grid each used), so a click before and after the change compares the two.
    """
    if session is None:
        return {}
    session.second_pass = bool(on)
    if session.volume is None:
        return {"state": session}
    out = render_view(session)
    out["state"] = session
    return out


def _rethreshold(r: Result, t: float) -> None:
    if r.threshold != t:
        r.mask = r.rethreshold(t)
        r.threshold = t


@user_errors
def undo(session: Session | None) -> dict[str, Any]:
    """Take back the last click: its slice gets back what it had before."""
    s = _require(session)
    if not s.history:
        raise InputError("nothing to undo")
    click = s.history.pop()
    if isinstance(click, ObjectStep):  # a whole object in 3D: its method gets back what it had
        if click.replaced is not None:
            s.objects3d[click.method] = click.replaced
        else:
            s.objects3d.pop(click.method, None)
        out = render_view(s)
        out.update({"state": s, "files": None})
        return out
    if click.replaced:
        for r in click.replaced.values():
            _rethreshold(r, s.threshold)
        s.results[click.z] = click.replaced
    else:
        s.results.pop(click.z, None)
    s.z = click.z
    out = render_view(s)
    out.update({"state": s, "slice": click.z, "files": None})
    return out


@user_errors
def reset(session: Session | None) -> dict[str, Any]:
    """Forget every click and result, 3D objects included (the image and label stay)."""
    s = _require(session)
    s.results.clear()
    s.history.clear()
    s.objects3d.clear()
    s.robustness = None
    out = render_view(s)
    out.update({"state": s, "files": None})
    return out


def mask_volume(session: Session, method: str) -> np.ndarray:
    """The (z, y, x) uint8 mask of ``method`` over every segmented slice."""
    s = _require(session)
    out = np.zeros(s.shape, dtype=np.uint8)
    for z, res in s.results.items():
        if method in res:
            out[z] = res[method].mask
    return out


def clicks_record(session: Session) -> dict[str, Any]:
    """The clicks as JSON-ready data: voxel (z, y, x) and physical (x, y, z) mm coordinates."""
    s = _require(session)
    v = s.volume
    weights = {}
    for m, model in s.predictor.models.items():
        rec = getattr(model, "record", {}) or {}
        weights[m] = {"name": rec.get("name", m), "sha256": rec.get("sha256")}
    clicks = []
    history = s.clicks
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
                    "coarsened": r.coarsened,
                    "weights_sha256": weights.get(m, {}).get("sha256"),
                }
                for m, r in res.items()
            }
        clicks.append(entry)
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


def _stem(session: Session) -> str:
    name = Path(session.image_path or "image").name
    for ext in (
        ".nii.gz",
        ".nii",
        ".mha",
        ".mhd",
        ".nrrd",
        ".nhdr",
        ".zip",
        ".dcm",
        ".png",
        ".jpg",
        ".jpeg",
        ".tif",
        ".tiff",
        ".bmp",
    ):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "image"


@user_errors
def export(session: Session | None) -> dict[str, Any]:
    """Write the masks (.nii.gz, the input's exact geometry), the overlay (.png) and the clicks (.json).

    ``<stem>_<method>_mask.nii.gz`` holds every clicked slice; ``<stem>_<method>_3d_mask.nii.gz`` the
    whole object followed in 3D (when segmented); ``<stem>_robustness.json`` the last robustness grid.
    """
    from PIL import Image

    s = _require(session)
    if not s.results and not s.objects3d:
        raise InputError("nothing to export yet: click on the object first")
    d = s.workdir()
    stem = _stem(s)
    files = []
    for m in METHODS:
        if any(m in res for res in s.results.values()):
            p = d / f"{stem}_{m}_mask.nii.gz"
            write_mask(mask_volume(s, m), s.volume, p)
            files.append(str(p))
    for m, obj in s.objects3d.items():
        p = d / f"{stem}_{m}_3d_mask.nii.gz"
        write_mask(obj.prop.mask3d.astype(np.uint8), s.volume, p)
        files.append(str(p))
    if s.robustness is not None:
        p = d / f"{stem}_robustness.json"
        p.write_text(json.dumps(s.robustness, indent=1))
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
    return {"state": s, "files": files}
