"""One-click segmentation of a volume's slice, by the sequential patch network or the U-net.

``Predictor`` holds one volume for one user session (segment-anything's ``SamPredictor`` style):
``set_volume`` does the per-volume work once, then ``predict(point_zyx)`` answers cheaply. Numpy at the
boundary, tensors inside, everything under ``torch.inference_mode``. Both methods share one pre- and
post-processing path (window, resample to the working grid, fuse, threshold, component, holes);
only the network differs.

The network pass itself (:func:`~seqpatch_core.method.run.run_network`: patches or field of view of
N clicks in one batch, fused on the working grid) lives in :mod:`seqpatch_core.method.run` with the
device and precision choice and the :class:`Coarsen` rule (which grid of the pyramid answers a click),
which :meth:`Predictor.predict_many` applies.
:func:`segment_slice` and its wrappers run the app's pipeline on one windowed slice and are shared with
training's validation, the evaluation command and the calibration.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from seqpatch_core.base.errors import InputError, WeightsError
from seqpatch_core.base.lru import LRU
from seqpatch_core.images.intensity import Window, apply_window, resolve_window
from seqpatch_core.method import rays

# the network pass lives in network_run (WorkingResult and equivalent_radius_px named here too for
# their callers)
from seqpatch_core.method.run import (
    PYRAMID_MM,
    Coarsen,
    Runner,
    model_arch,
    pick_device,
    resolve_dtype,
    run_network,
)

if TYPE_CHECKING:  # annotations only: inference needs no image reader (nor SimpleITK)
    from seqpatch_core.images.volume import Volume
    from seqpatch_core.inference.engines import Choice

log = logging.getLogger(__name__)

METHODS = ("seqpatch", "unet")


# ----------------------------------------------------------------------------- one windowed slice


def segment_slice(
    net: nn.Module,
    image: np.ndarray,
    clicks_yx: np.ndarray,
    cfg: rays.RayConfig | str,
    spacing_mm: float,
    device: torch.device,
    threshold: float = 0.5,
    dtype: torch.dtype | None = None,
    working_spacing: float | None = None,
    coarsen: bool | Coarsen = True,
) -> list[Result]:
    """The app's pipeline (:meth:`Predictor.predict_many`) on one windowed slice, for N clicks.

    image: (H, W) float in [0, 1] with square pixels of ``spacing_mm``; clicks_yx: (N, 2) (y, x) in
    its pixels. ``working_spacing``: the first grid of the pyramid (None: the slice's own grid).
    ``coarsen``: True (the model's :class:`Coarsen` rule: large objects climb the pyramid), False
    (the first grid only) or a rule. Returns N :class:`Result` on the slice grid. Training's
    validation, the evaluation command and the calibration use this, so they measure what a click
    in the app gives.
    """
    pred = Predictor({"net": net}, device, dtype, cache_slices=len(PYRAMID_MM) + 1)
    pred.set_slice(image, spacing_mm, working_spacing)
    return pred.predict_many(0, np.asarray(clicks_yx, dtype=np.float64).reshape(-1, 2), "net", cfg, threshold, coarsen)


def segment_working(
    model: nn.Module,
    image_w: np.ndarray,
    clicks_w: np.ndarray,
    cfg: rays.RayConfig | str,
    device: torch.device,
    threshold: float = 0.5,
    dtype: torch.dtype | None = None,
    spacing_mm: float = 1.0,
) -> list[np.ndarray]:
    """Masks for N clicks on one windowed slice whose own grid (square pixels of ``spacing_mm``)
    starts the pyramid, with the model's :class:`Coarsen` rule, as a click in the app (training's
    validation). image_w: (Hw, Ww) float in [0, 1]; clicks_w: (N, 2) (y, x) px. Returns N (Hw, Ww)
    bool masks (:func:`segment_slice`)."""
    return [r.mask for r in segment_slice(model, image_w, clicks_w, cfg, spacing_mm, device, threshold, dtype)]


# ----------------------------------------------------------------------------- per-session predictor

#: The window of a slice that is already windowed to [0, 1] (:meth:`Predictor.set_slice`).
WINDOWED = Window(0.0, 1.0, "windowed")


@dataclass
class _SliceVolume:
    """What :meth:`Predictor.set_slice` holds: the fields of a Volume that inference reads.

    array: (1, H, W) float32 in [0, 1]; spacing: (z, y, x) mm.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    modality: str = "unknown"

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape


@dataclass
class Result:
    """One click's answer, on the slice grid of the volume.

    mask: (H, W) bool; likelihood, coverage: (H, W) float32 (fused, mapped back from the working grid);
    patches, ray_likelihoods: (n_rays, K, P, P) float32 inputs and outputs per ray (seqpatch), or
    (S, S) field of view (unet); centres: (n_rays, K, 2) patch centres (y, x) in slice px (seqpatch),
    or the field of view's four corners (4, 2) (unet); timings: ms per stage and "total_ms" (every
    grid's passes; "coarser_ms": the passes after the first grid's). ``working_spacing`` is the grid
    (mm) of this answer, and its arrays are that grid's pass; ``grids_mm`` is every grid the click was
    segmented on, finest first (:class:`Coarsen`): the answer's grid is the last one, or the one
    before it when the last showed the object no wider.
    """

    method: str
    slice_index: int
    point_zyx: tuple[float, float, float]
    mask: np.ndarray
    likelihood: np.ndarray
    coverage: np.ndarray
    patches: np.ndarray
    ray_likelihoods: np.ndarray
    centres: np.ndarray
    window: Window
    preset: str | rays.RayConfig
    working_spacing: float
    threshold: float
    timings: dict[str, float]
    grids_mm: tuple[float, ...] = ()

    @property
    def coarsened(self) -> bool:
        """Whether the click climbed the pyramid: its answer is from a coarser grid than its first."""
        return bool(self.grids_mm) and self.working_spacing != self.grids_mm[0]

    def rethreshold(self, threshold: float) -> np.ndarray:
        """The mask at another threshold from the cached likelihoods (no network run)."""
        return rays.postprocess(self.likelihood, self.coverage, self.point_zyx[1:], threshold)


class Predictor:
    """Holds shared models and one volume; answers clicks.

    models: name -> network (built once per process, shared by sessions: inference only).
    """

    def __init__(
        self,
        models: dict[str, nn.Module],
        device: str | torch.device = "auto",
        dtype: str | torch.dtype | None = None,
        cache_slices: int = 8,
        coarsen: bool = True,
        runner: Runner | None = None,
        engine: str = "torch",
        engine_for: Iterable[str] | None = None,
    ):
        """``coarsen``: apply each model's :class:`Coarsen` rule, the pyramid of grids (False: the
        first grid only, as ``--no-coarsen`` asks). ``runner``: what runs a network on a
        batch of clicks (default :func:`run_network`); a host that must run networks elsewhere (a
        Hugging Face ZeroGPU Space: :mod:`app.zerogpu`) passes its own, called with the model's name.
        ``engine``: "torch" (the reference), "auto" (the fastest path on this CPU whose masks agree
        with float32 PyTorch: :func:`seqpatch_core.inference.engines.choose`), "openvino" or "onnxruntime".
        Compiled engines apply on the CPU only, to the networks named in ``engine_for`` (None: all;
        the others run in PyTorch); the choice is in :attr:`engines`."""
        self.coarsen = coarsen
        self.runner = runner
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        # a network is a module, or anything called like one that carries its ``record`` (a compiled
        # copy, :mod:`seqpatch_core.inference.engines`), which stays as it is
        self.models = {name: m.to(self.device) if isinstance(m, nn.Module) else m for name, m in models.items()}
        if self.device.type == "cpu" and self.dtype == torch.bfloat16:
            # measured (bench --variants): oneDNN's bfloat16 convolutions run fastest on NHWC tensors
            for m in self.models.values():
                if isinstance(m, nn.Module):
                    m.to(memory_format=torch.channels_last)
        #: name -> what runs that network's clicks (the model, or a compiled copy of it)
        self.nets: dict[str, object] = dict(self.models)
        #: name -> the path it runs on (``.label``: "torch-float32", "openvino-bfloat16", ...) and what was tried
        self.engines: dict[str, Choice] = {}
        #: name -> the autocast dtype of its PyTorch pass (a network whose bfloat16 masks disagree with
        #: float32 runs in float32 under ``engine="auto"``)
        self.net_dtypes: dict[str, torch.dtype | None] = {name: self.dtype for name in self.models}
        if engine != "torch" and self.device.type == "cpu" and runner is None:
            from seqpatch_core.inference import engines

            for name, m in self.models.items():
                if engine_for is not None and name not in engine_for:
                    continue
                choice = engines.choose(m, engine, self.dtype)
                self.nets[name] = choice.net
                self.net_dtypes[name] = choice.dtype
                self.engines[name] = choice
        self.volume: Volume | _SliceVolume | None = None
        self.window_spec: str | Window = "auto"
        #: the working grid's spacing when :meth:`set_slice` fixed it (None: the modality's)
        self.working_spacing: float | None = None
        #: (z, window lo, hi, working spacing) -> (windowed working slice, its grid)
        self.slice_cache = LRU(cache_slices)
        # one session's clicks may run at once (a second click while the first one runs)
        self._lock = threading.Lock()

    def session(self) -> Predictor:
        """A new predictor for another session that shares this one's models."""
        other = Predictor(self.models, self.device, self.dtype, self.slice_cache.maxsize, self.coarsen, self.runner)
        other.nets, other.engines, other.net_dtypes = self.nets, self.engines, self.net_dtypes  # once per process
        return other

    def set_volume(self, volume: Volume | None, window: str | Window = "auto") -> None:
        """Hold ``volume`` for the coming clicks (None: let go of it and of the cached slices);
        ``window`` is a Window or a spec for ``resolve_window``."""
        self.volume = volume
        self.window_spec = window
        self.working_spacing = None
        self.slice_cache.clear()

    def set_slice(self, image: np.ndarray, spacing_mm: float, working_spacing: float | None = None) -> None:
        """Hold one windowed slice instead of a volume (a generated or validation slice).

        image: (H, W) float in [0, 1] (already windowed: the window is the identity), square pixels of
        ``spacing_mm``; clicks are then ``predict_many(0, ...)``. It is segmented on a working grid of
        ``working_spacing`` mm (None: its own grid, no resampling).
        """
        arr = np.asarray(image, dtype=np.float32)[None]
        self.volume = _SliceVolume(arr, (1.0, float(spacing_mm), float(spacing_mm)))
        self.window_spec = WINDOWED
        self.working_spacing = float(working_spacing or spacing_mm)
        self.slice_cache.clear()

    def resolve_window(self, point_zyx, window: str | Window | None = None) -> Window:
        """The window for a click at ``point_zyx``: ``window`` (a Window, or a spec for
        ``resolve_window``; None: the predictor's ``window_spec``)."""
        spec = self.window_spec if window is None else window
        if isinstance(spec, Window):
            return spec
        return resolve_window(spec, self.volume, point_zyx)

    def working_slice(self, z: int, window: Window, spacing_mm: float) -> tuple[np.ndarray, rays.SliceGrid]:
        """The windowed slice z on its working grid (cached per slice, window and spacing)."""
        key = (z, window.lo, window.hi, spacing_mm)
        hit = self.slice_cache.get(key)
        if hit is not None:
            return hit
        vol = self.volume
        grid = rays.SliceGrid(vol.array.shape[1:], (vol.spacing[1], vol.spacing[2]), spacing_mm)
        img = rays.resample_to_working(apply_window(vol.array[z], window), grid)
        self.slice_cache.put(key, (img, grid))
        return img, grid

    def check_point(self, point_zyx) -> tuple[int, float, float]:
        """Validate a (z, y, x) voxel point; returns (z as int, y, x)."""
        if self.volume is None:
            raise InputError("no volume loaded: load an image first")
        try:
            z, y, x = (float(v) for v in point_zyx)
        except (TypeError, ValueError):
            raise InputError(f"a point needs three numbers (z, y, x), got {point_zyx!r}") from None
        shape = self.volume.array.shape
        if not all(np.isfinite([z, y, x])) or not (
            0 <= round(z) < shape[0] and 0 <= y <= shape[1] - 1 and 0 <= x <= shape[2] - 1
        ):
            raise InputError(
                f"point (z={z:g}, y={y:g}, x={x:g}) is outside the volume of size "
                f"z={shape[0]}, y={shape[1]}, x={shape[2]}"
            )
        return int(round(z)), y, x

    def model(self, method: str) -> nn.Module:
        if method not in self.models:
            raise WeightsError(f"no {method!r} model is loaded; available: {', '.join(self.models) or 'none'}")
        return self.models[method]

    def default_preset(self) -> str:
        """``ct`` for CT, ``promise12`` otherwise: the preset of the benchmark's MR-like half."""
        return "ct" if self.volume is not None and self.volume.modality == "CT" else "promise12"

    def predict(
        self,
        point_zyx,
        method: str = "seqpatch",
        preset: str | None = None,
        threshold: float = 0.5,
        coarsen: bool | None = None,
        window: str | Window | None = None,
    ) -> Result:
        """Segment the object clicked at ``point_zyx`` (voxel indices, array order) on its slice.

        Every option is per call (see :meth:`predict_many`); None takes the predictor's default.
        """
        return self.predict_many(point_zyx[0], [point_zyx[1:]], method, preset, threshold, coarsen, window)[0]

    def predict_many(
        self,
        z: int,
        points_yx,
        method: str = "seqpatch",
        preset: str | rays.RayConfig | None = None,
        threshold: float = 0.5,
        coarsen: bool | Coarsen | None = None,
        window: str | Window | None = None,
    ) -> list[Result]:
        """Segment slice ``z`` at several clicks (y, x) in one batch (the robustness grid).

        ``window``: a :class:`Window` or a spec ("auto", "lung", "W,L", ...); None: ``window_spec``.
        "auto" is resolved once, at the first click, for the whole batch. ``preset``: a name or a
        :class:`~seqpatch_core.method.rays.RayConfig`.

        The scale rule, the one place it is applied: every click starts on the first grid (the
        modality's, or :meth:`set_slice`'s); with ``coarsen`` (None: the predictor's setting; a
        :class:`Coarsen`: that rule instead of the model's) and a rule in the model's record, the
        clicks whose mask is too large for their grid are segmented again, in one batch per grid,
        on the next grid of the pyramid (:data:`~seqpatch_core.method.run.PYRAMID_MM`), until it
        fits, the coarser grid finds the object no wider (the finer answer stands: the rule's
        ``growth``) or the pyramid ends. Each answer is mapped back onto the slice grid from its
        own grid by resampling the likelihood and thresholding there (no blocky masks from coarse
        grids).
        """
        *_, (results, _) = self._climb(z, points_yx, method, preset, threshold, coarsen, window)
        return results

    def predict_steps(
        self,
        point_zyx,
        method: str = "seqpatch",
        preset: str | None = None,
        threshold: float = 0.5,
        coarsen: bool | None = None,
        window: str | Window | None = None,
    ) -> Iterator[tuple[Result, bool]]:
        """:meth:`predict`, one answer per grid as the scale rule climbs the pyramid: ``(the answer so
        far, final)``. A page shows the first grid's answer while the next grid is checked; the last
        step's answer (``final`` True) is :meth:`predict`'s. The answer is complete at every step (mask,
        likelihood, ``grids_mm`` tried so far); options as in :meth:`predict`."""
        for results, todo in self._climb(point_zyx[0], [point_zyx[1:]], method, preset, threshold, coarsen, window):
            yield results[0], not todo

    def _climb(self, z, points_yx, method, preset, threshold, coarsen, window):
        """The scale rule of :meth:`predict_many`, one grid at a time: after each grid's pass, yields
        ``(results, todo)``, the answers so far (one per click) and the clicks still climbing."""
        t0 = time.perf_counter()
        pts = [self.check_point((z, *p)) for p in points_yx]
        z = pts[0][0]
        model = self.model(method)
        preset = preset or self.default_preset()
        window = self.resolve_window(pts[0], window)
        first = self.working_spacing or rays.WORKING_SPACING_MM.get(self.volume.modality, 1.0)
        coarsen = self.coarsen if coarsen is None else coarsen
        rule = coarsen if isinstance(coarsen, Coarsen) else (Coarsen.of(model) if coarsen else None)
        grids = Coarsen.grids(first) if rule is not None else (first,)
        pixel_mm = tuple(self.volume.spacing[1:])
        results: list[Result | None] = [None] * len(pts)
        todo = list(range(len(pts)))
        for level, spacing_mm in enumerate(grids):
            t1 = t0 if level == 0 else time.perf_counter()  # the first pass's preparation: checks, window
            answers = self._pass(z, [pts[i] for i in todo], method, preset, window, spacing_mm, threshold, t1)
            climbing = []
            for i, r in zip(todo, answers, strict=True):
                before = results[i]
                tried = (*(before.grids_mm if before else ()), spacing_mm)
                if before is None:
                    r.grids_mm = tried
                    results[i] = r
                else:
                    # this grid's pass counts in the click's time, whichever grid answers
                    coarser_ms = before.timings.get("coarser_ms", 0.0) + r.timings["total_ms"]
                    total_ms = before.timings["total_ms"] + r.timings["total_ms"]
                    if rule.keeps_finer(before.mask, r.mask, pixel_mm):
                        r = before  # the finer grid had seen the whole object: its answer stands
                    else:
                        results[i] = r
                    r.timings["coarser_ms"], r.timings["total_ms"] = coarser_ms, total_ms
                    r.grids_mm = tried
                if (
                    r.working_spacing == spacing_mm
                    and level + 1 < len(grids)
                    and rule.wants(r.mask, pixel_mm, spacing_mm)
                ):
                    climbing.append(i)
            todo = climbing
            yield results, todo
            if not todo:
                break

    def _pass(self, z, pts, method, preset, window, spacing_mm, threshold, t0) -> list[Result]:
        """One batch of clicks ``pts`` ((z, y, x) checked) on the ``spacing_mm`` working grid."""
        model = self.model(method)
        cfg = preset if isinstance(preset, rays.RayConfig) else rays.get_preset(preset)
        img_w, grid = self.working_slice(z, window, spacing_mm)
        clicks_w = grid.to_working(np.array([p[1:] for p in pts]))
        t1 = time.perf_counter()
        if self.runner is not None:
            outs = self.runner(method, img_w, clicks_w, cfg, self.device, self.dtype)
        else:
            net = self.nets.get(method, model)
            # a compiled net has its own precision; the model runs at its chosen autocast dtype
            dtype = self.net_dtypes.get(method, self.dtype) if net is model else None
            outs = run_network(net, img_w, clicks_w, cfg, self.device, dtype)
        results = []
        for (_, y, x), wr in zip(pts, outs, strict=True):
            t2 = time.perf_counter()
            lik = rays.resample_to_slice(wr.fused, grid)
            cov = rays.resample_to_slice(wr.coverage, grid)
            mask = rays.postprocess(lik, cov, (y, x), threshold)
            arch = model_arch(model)
            if arch == "seqpatch":
                centres = grid.to_slice(rays.patch_centres(grid.to_working([y, x]), cfg))
            else:
                corner = rays.fov_box(grid.to_working([y, x]), cfg)
                s = cfg.fov - 1
                box = corner + np.array([[0, 0], [0, s], [s, s], [s, 0]], dtype=np.float64)
                centres = grid.to_slice(box)
            timings = dict(wr.timings)
            timings["prepare_ms"] = (t1 - t0) * 1e3 / len(pts)
            timings["postprocess_ms"] = (time.perf_counter() - t2) * 1e3
            timings["total_ms"] = sum(timings.values())
            results.append(
                Result(
                    method=method,
                    slice_index=z,
                    point_zyx=(float(z), y, x),
                    mask=mask,
                    likelihood=lik,
                    coverage=cov,
                    patches=wr.patches,
                    ray_likelihoods=wr.likelihoods,
                    centres=centres.astype(np.float32),
                    window=window,
                    preset=preset,
                    working_spacing=spacing_mm,
                    threshold=threshold,
                    timings=timings,
                )
            )
        return results
