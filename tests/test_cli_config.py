"""``train``'s options and TrainConfig: one option per field, the dataclass's defaults, no drift."""

import argparse
from dataclasses import fields, replace

import pytest
import torch

from seqpatch_core.cli.commands import train_config
from seqpatch_core.cli.main import TRAIN_FIELDS_NOT_OPTIONS, build_parser
from seqpatch_core.training.config import TrainConfig
from seqpatch_core.training.config import TrainConfig as TrainingTrainConfig
from seqpatch_core.training.loop import make_optimizer


def _train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def _options() -> dict[str, argparse.Action]:
    return {a.dest: a for a in _train_parser()._actions if a.dest != "help"}


def test_every_option_is_a_field_and_every_field_an_option():
    names = {f.name for f in fields(TrainConfig)}
    options = set(_options())
    assert options <= names, f"options without a TrainConfig field: {options - names}"
    assert names - options == set(TRAIN_FIELDS_NOT_OPTIONS)


def test_defaults_come_from_the_dataclass():
    backgrounds = _options()["backgrounds"].default  # the one default of the command line's own
    for dest, action in _options().items():
        if dest not in ("out", "backgrounds"):
            assert action.default == getattr(TrainConfig, dest), dest
    args = build_parser().parse_args(["train", "--model", "seqpatch", "--out", "x"])
    assert train_config(args) == TrainConfig(model="seqpatch", out="x", backgrounds=backgrounds)
    assert TrainingTrainConfig is TrainConfig


@pytest.mark.parametrize(
    ("argv", "changes"),
    [
        (["--batch", "32"], {"slices_per_batch": 32}),
        (["--eval-every", "5"], {"eval_every_s": 5.0}),
        (["--no-amp"], {"amp": False}),
        (["--resume", "--lr", "0.01", "--loss", "bce+dice"], {"resume": True, "lr": 0.01, "loss": "bce+dice"}),
        (["--model-config", '{"widths": [8]}', "--atlas-ratio", "0.25"], {"model_config": {"widths": [8]},
                                                                            "atlas_ratio": 0.25}),
        (["--backgrounds", "none", "--max-steps", "3", "--val-seed", "7"], {"backgrounds": "none", "max_steps": 3,
                                                                             "val_seed": 7}),
    ],
    ids=["batch", "eval-every", "no-amp", "resume-lr-loss", "model-config-atlas", "backgrounds-steps-seed"],
)  # fmt: skip
def test_options_reach_their_field(argv, changes):
    base = train_config(build_parser().parse_args(["train", "--out", "x"]))
    assert train_config(build_parser().parse_args(["train", "--out", "x", *argv])) == replace(base, **changes)


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # whatever the terminal width
    for action in _options().values():
        assert all(s in text for s in action.option_strings)
    assert "--batch BATCH" in text and "--eval-every EVAL_EVERY" in text and "default 1000;" in text


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (lambda ps: make_optimizer(ps, 1e-3, 1e-5), "Adam(beta1=0.95, beta2=0.99)"),
        (lambda ps: torch.optim.AdamW(ps.parameters(), betas=(0.9, 0.999)), "AdamW(beta1=0.9, beta2=0.999)"),
        (lambda ps: torch.optim.SGD(ps.parameters(), lr=0.1), "SGD()"),
    ],
    ids=["training", "adamw", "no-betas"],
)  # fmt: skip
def test_the_record_names_the_optimiser_it_ran(make, text):
    from seqpatch_core.training.loop import _record, optimizer_text

    opt = make(torch.nn.Linear(2, 1))
    assert optimizer_text(opt) == text
    state = {"step": 1, "samples": 2, "best": 0.5, "history": []}
    assert _record(TrainConfig(), state, 0.0, "unet", opt)["training"]["optimizer"] == text
    # without the object: the optimiser training builds, under the text of the published weights
    assert _record(TrainConfig(), state, 0.0, "unet")["training"]["optimizer"] == "Adam(beta1=0.95, beta2=0.99)"
