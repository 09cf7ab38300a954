"""One visitor's state (:class:`Session`, kept in ``gr.State``): the image, the label, the results per
slice, the undo history and the display choices. Arrays are (z, y, x); points (z, y, x) voxels or (y, x)
slice pixels."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app import memory, render, zerogpu
from app.drawing import NAMES
from app.evidence import no_object_reason
from seqpatch_core.base.errors import InputError, WeightsError, first_line
from seqpatch_core.base.lru import LRU
from seqpatch_core.evaluation.robustness import RobustnessMap
from seqpatch_core.images.intensity import Window, apply_window, auto_window, resolve_window
from seqpatch_core.images.volume import Volume
from seqpatch_core.inference.boxes import BoxPredictor, BoxResult
from seqpatch_core.inference.predictor import Predictor, Result
from seqpatch_core.inference.propagate import Propagation
from seqpatch_core.method.models.litemedsam import LITEMEDSAM_WEIGHTS, LiteMedSAM, load_litemedsam

log = logging.getLogger(__name__)

SESSION_TTL_S = 2 * 3600

WEIGHTS_HELP = (
    "train them with `python -m seqpatch_core train --model {m} --out weights/{m}.safetensors` or see weights/README.md"
)


def weights_message(missing: list[str]) -> str:
    names = " and ".join(NAMES.get(m, m) for m in missing)
    return f"{names} weights are not loaded: " + WEIGHTS_HELP.format(m=missing[0])


#: Said once on the page when LiteMedSAM's weights are missing: the page runs without it.
BOX_WEIGHTS_MISSING = (
    f"LiteMedSAM is not loaded (no {LITEMEDSAM_WEIGHTS.name}): the page runs with SeqPatch and the "
    "U-net only; see weights/README.md"
)


def load_box_model(path: str | Path | None = None) -> LiteMedSAM | None:
    """LiteMedSAM from ``path`` (default: the shipped weights), once per process and shared by every
    session; None (logged) when the file is missing or refused: the page then runs without it."""
    try:
        return load_litemedsam(path)
    except WeightsError as exc:
        log.warning("LiteMedSAM not loaded: %s", first_line(exc))
        return None


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
    #: False while the click's methods still run (their answers so far may be shown): its LiteMedSAM
    #: follow-up waits for the last answer.
    done: bool = True


@dataclass
class BoxAnswer:
    """LiteMedSAM's answer on one slice, from the box of a click's result.

    result: the box (voxel indices, corners inclusive), the (H, W) bool mask (LiteMedSAM's own 0.5 on
    its sigmoid: the threshold slider does not apply) and the (H, W) float32 probability, in the file's
    voxel order; source: where the box came from, "seqpatch" or "unet" (that method's mask plus
    :data:`~seqpatch_core.evaluation.boxes.SEQPATCH_MARGIN_PX`), "label" (the label's tight box on
    the slice: an oracle prompt), "user" (two corners the user clicked on the slice in box mode) or
    "given" (a box given as numbers); follows: the slice's results it
    was prompted from, by identity: the answer is shown only while they are the slice's (a newer
    click, an undo or a reset hides it; an undo back to them shows it again).
    """

    result: BoxResult
    source: str
    follows: dict[str, Result] | None

    @property
    def oracle(self) -> bool:
        return self.source == "label"

    @property
    def total_ms(self) -> float:
        return self.result.encoder_ms + self.result.decoder_ms


@dataclass
class Object3D:
    """A clicked object followed through the volume (:func:`seqpatch_core.inference.propagate.propagate`)."""

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
class BoxStep:
    """A box given to LiteMedSAM (drawn on the slice, or as numbers) in the undo history: undo drops its
    answer. A click's own box follows its click and is not a step of its own."""

    answer: BoxAnswer
    time: float = field(default_factory=time.time)


@dataclass
class Session:
    """Everything one browser session holds (kept in ``gr.State``, never module-level)."""

    predictor: Predictor
    #: LiteMedSAM for this session (its per-slice encoder cache is this session's), or None without weights.
    boxes: BoxPredictor | None = None
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
    #: Undo history: clicks, boxes given to LiteMedSAM and 3D objects, oldest first.
    history: list[Click | BoxStep | ObjectStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    objects3d: dict[str, Object3D] = field(default_factory=dict)
    robustness: RobustnessMap | None = None
    #: LiteMedSAM's answers, oldest first (:meth:`box_answer` picks the one shown on a slice).
    box_answers: list[BoxAnswer] = field(default_factory=list)
    #: The first corner of a box being drawn in box mode, (z, y, x) voxel indices in the file's order,
    #: until the second corner; a slice change, a mode change, a click, undo or reset cancels it.
    box_corner: tuple[int, int, int] | None = None
    #: Wall time (s) of this session's last SeqPatch click: the estimate shown while the next one runs.
    seqpatch_seconds: float | None = None
    #: Wall time (s) of SeqPatch's first grid at this session's last click: whether the next click shows
    #: the U-net's answer before SeqPatch's (:data:`app.handlers.UNET_FIRST_S`).
    seqpatch_first_seconds: float | None = None
    tmpdir: str | None = None
    #: The server released this session's arrays while it was idle (:class:`app.memory.SessionPool`).
    released: bool = False
    #: Runs in progress (a click, a grid, a 3D object): the memory pool leaves a busy session alone.
    busy: int = 0
    #: The teaching tabs show a result of this session: the next click empties them (only then, so a
    #: click sends no blank pictures to tabs that are blank already).
    teaching_shown: bool = False
    _windows: dict[str, Window] = field(default_factory=dict)
    _slices: LRU = field(default_factory=lambda: LRU(32))
    #: (id of a SeqPatch result, ray) -> (that result, its direction readouts): a few network runs kept.
    _readouts: LRU = field(default_factory=lambda: LRU(8))

    #: id(result) -> (weak reference to it, the threshold it was judged at, why it found no object or
    #: None): see :meth:`settle`.
    _verdicts: dict = field(default_factory=dict)

    def settle(self, result: Result, threshold: float) -> None:
        """Thresholds ``result`` at ``threshold`` (from its cached likelihood) and judges it: when it
        found no object at its click (:func:`app.evidence.no_object_reason`) its mask is emptied, so
        no contour, number or export shows an object nobody clicked, and :meth:`no_object` says why."""
        key = id(result)
        known = self._verdicts.get(key)
        if known is not None and known[0]() is result and known[1] == threshold:
            return
        fresh = known is None and result.threshold == threshold  # the mask as the predictor made it
        raw = result.mask if fresh else result.rethreshold(threshold)
        result.threshold = threshold
        z = result.slice_index
        why = no_object_reason(
            apply_window(self.volume.array[z], result.window),  # the window the network read
            result.likelihood,
            result.coverage,
            raw,
            result.point_zyx[1:],
            threshold,
            self.volume.spacing[1:],
        )
        result.mask = np.zeros_like(raw) if why else raw
        self._verdicts[key] = (weakref.ref(result, lambda _, k=key: self._verdicts.pop(k, None)), threshold, why)

    def no_object(self, result: Result) -> str | None:
        """Why ``result`` found no object at its click (its mask is empty), or None."""
        known = self._verdicts.get(id(result))
        return known[2] if known is not None and known[0]() is result else None

    def box_answer(self, z: int) -> BoxAnswer | None:
        """LiteMedSAM's answer shown on slice ``z``: the latest that follows the slice's results as they
        are now (so undo brings an older click's answer back with its results), or None."""
        now = self.results.get(z)
        for a in reversed(self.box_answers):
            if a.result.box.z == z and a.follows is now:
                return a
        return None

    def readouts(self, result: Result, ray: int) -> dict[str, np.ndarray]:
        """The fused, forward-only and backward-only likelihoods of one ray of ``result`` (each
        (K, P, P) float32; :func:`app.readouts.direction_readouts`), cached for the last few rays."""
        key = (id(result), ray)
        hit = self._readouts.get(key)
        if hit is not None and hit[0] is result:  # the id of a freed result may be reused
            return hit[1]
        got = zerogpu.readouts("seqpatch", self.predictor.models["seqpatch"], result.patches[ray])
        self._readouts.put(key, (result, got))
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
        out = self._slices.get(key)
        if out is None:
            out = apply_window(self.volume.array[z], w)
            self._slices.put(key, out)
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
        own = [self.label, self.results, self.history, self.objects3d, self.box_answers]
        own += [self._slices.values(), self._readouts.values(), self.predictor.slice_cache.values()]
        vol = 0
        if self.volume is not None and not memory.is_shared(self.volume.array):
            vol = int(self.volume.array.nbytes)
        return vol + memory.nbytes(own)

    @contextmanager
    def using(self) -> Iterator[None]:
        """Marks a run in progress: the memory pool does not release this session meanwhile."""
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1

    def release(self) -> None:
        """Drops every array (image, label, results, caches): the server needs the memory. The next
        action says so in one line (:data:`app.memory.RELEASED`)."""
        self.released = self.volume is not None
        self.volume = None
        self.label = None
        self._slices.clear()
        self._readouts.clear()
        self._verdicts.clear()
        self._windows.clear()
        self.results.clear()
        self.history.clear()
        self.objects3d.clear()
        self.robustness = None
        self.box_answers.clear()
        self.box_corner = None
        self.predictor.set_volume(None)
        if self.boxes is not None:  # a fresh one holds no windowed volume and no slice embeddings
            self.boxes = BoxPredictor(self.boxes.model, self.boxes.device)

    def close(self) -> None:
        """Frees the session's files and arrays (called when Gradio drops an expired session)."""
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        self.release()
        self.released = False
        memory.POOL.forget(self)


def new_session(predictor: Predictor, box_model: LiteMedSAM | None = None) -> Session:
    """A session with its own predictor that shares ``predictor``'s models, and its own LiteMedSAM
    predictor (its own slice embeddings) around the shared ``box_model`` when there is one."""
    boxes = BoxPredictor(box_model, predictor.device) if box_model is not None else None
    return Session(predictor=predictor.session(), boxes=boxes)


def close_session(session: Session | None) -> None:
    """``gr.State`` delete callback."""
    if isinstance(session, Session):
        log.info("closing an expired session")
        session.close()
        memory.trim()


def require(session: Session | None) -> Session:
    """The session with its image, or a one-line InputError (no image yet, or released while idle);
    marks it used now for the memory pool."""
    if session is not None and session.released:
        raise InputError(memory.RELEASED)
    if session is None or session.volume is None:
        raise InputError("no image loaded: upload one or pick an example first")
    memory.POOL.touch(session)  # used now; past the budget, the least recently used sessions let go
    return session
