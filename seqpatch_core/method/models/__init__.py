"""Networks and self-describing checkpoints.

``build_model(name)`` gives a randomly initialised network in eval mode; ``build_model(name,
checkpoint=path)`` rebuilds it from the architecture record stored in the checkpoint. Checkpoints
are safetensors files (tensors only; nothing is unpickled) whose metadata key ``"seqpatch"`` holds a
JSON record: ``{"name", "arch", "config", "ray", "training", "validation", ...}``. A checkpoint whose
record, keys or shapes do not fit the requested model is refused with :class:`WeightsError`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqpatch_core.base.errors import WeightsError, first_line
from seqpatch_core.base.paths import WEIGHTS_DIR
from seqpatch_core.method.models.seqpatch_net import SeqPatchNet
from seqpatch_core.method.models.unet import UNet

log = logging.getLogger(__name__)

#: name -> (architecture, default config). Ablation names follow the paper's Table 2.
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "seqpatch": ("seqpatch", {}),
    "unet": ("unet", {"base": 32, "norm": "group"}),
    # tuning candidates for the baseline and the sequential net (chosen on synthetic validation only)
    "unet_w16": ("unet", {"base": 16, "norm": "group"}),
    "unet_bn": ("unet", {"base": 32, "norm": "batch"}),
    "seqpatch_gn": ("seqpatch", {"norm": "group"}),
    "seqpatch_rgn": ("seqpatch", {"norm": "ray"}),
    "seqfcn": ("seqpatch", {"rnn_levels": "none"}),
    "bottom": ("seqpatch", {"rnn_levels": "bottom"}),
    "bottom_middle": ("seqpatch", {"rnn_levels": "bottom_middle"}),
    "forward": ("seqpatch", {"bidirectional": False}),
    "convlstm": ("seqpatch", {"cell": "lstm"}),
    "convgru": ("seqpatch", {"cell": "gru"}),
}
_ARCHS = {"seqpatch": SeqPatchNet, "unet": UNet}
#: config keys that tell the named variants of one architecture apart
IDENTITY_KEYS = ("rnn_levels", "cell", "bidirectional")
META_KEY = "seqpatch"


def _construct(arch: str, config: dict[str, Any]) -> nn.Module:
    try:
        cfg = dict(config)
        if "widths" in cfg:
            cfg["widths"] = tuple(cfg["widths"])
        return _ARCHS[arch](**cfg)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"cannot build {arch} with config {config}: {exc}") from None


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def build_model(name: str, checkpoint: str | Path | None = None, **config: Any) -> nn.Module:
    """Build network ``name`` (see :data:`MODELS`) in eval mode.

    Without ``checkpoint`` the weights are random (He init) and ``config`` overrides the defaults.
    With it, the architecture comes from the checkpoint's record; ``name`` must be of the same
    architecture and any given ``config`` must agree with the record, else :class:`WeightsError`.
    The returned module carries ``.record`` (the checkpoint record, or a fresh one).
    """
    if name not in MODELS:
        raise WeightsError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    arch, defaults = MODELS[name]
    if checkpoint is None:
        cfg = {**defaults, **config}
        model = _construct(arch, cfg)
        model.record = {"name": name, "arch": arch, "config": cfg}
        return model.eval()
    record, state = load_checkpoint(checkpoint)
    if record.get("arch") != arch:
        raise WeightsError(
            f"{Path(checkpoint).name} holds a {record.get('arch')!r} network, not a {arch!r} one (asked for {name!r})"
        )
    arch_defaults = {
        k: p.default for k, p in inspect.signature(_ARCHS[arch]).parameters.items() if p.default is not p.empty
    }
    # what makes a named variant itself (e.g. "forward" is bidirectional=False), plus explicit config;
    # widths and normalisation may differ between checkpoints of one name
    wanted = {k: defaults.get(k, arch_defaults.get(k)) for k in IDENTITY_KEYS if k in arch_defaults}
    for key, value in {**wanted, **config}.items():
        have = record["config"].get(key, arch_defaults.get(key))
        if _norm(have) != _norm(value):
            raise WeightsError(
                f"{Path(checkpoint).name} was trained with {key}={have!r}, not {value!r} (as {name!r} needs)"
            )
    model = _construct(arch, record["config"])
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        detail = (missing and f"missing {missing[0]}") or (extra and f"unexpected {extra[0]}") or f"shape of {wrong[0]}"
        raise WeightsError(f"{Path(checkpoint).name} does not fit the {name!r} network ({detail})")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model.record = record
    return model.eval()


def save_checkpoint(model: nn.Module, path: str | Path, dtype: torch.dtype = torch.float16, **record: Any) -> None:
    """Write ``model``'s weights and its record (architecture, plus any extra fields) as safetensors.

    Weights are stored as float16 by default (half the download; they are loaded back as float32,
    and the likelihoods move by about 1e-3 at most). Integer buffers keep their dtype.
    """
    from safetensors.torch import save_file

    base = dict(getattr(model, "record", {}))
    base.pop("sha256", None)  # a property of the file read, not of the new one
    base.update(record)
    if "arch" not in base or "config" not in base:
        raise WeightsError("the model has no architecture record; build it with build_model")
    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata={META_KEY: json.dumps(base)})
    tmp.replace(path)  # atomic: a crash mid-write never leaves a half checkpoint behind


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read ``(record, state_dict)`` from a safetensors checkpoint, or raise :class:`WeightsError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path.name}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(
            f"{path.name} is not a readable safetensors checkpoint ({first_line(exc, 80)})"
        ) from None
    try:
        record = json.loads(meta[META_KEY])
        record["config"]  # noqa: B018 - must exist
    except (KeyError, json.JSONDecodeError, TypeError):
        raise WeightsError(f"{path.name} has no SeqPatch record (architecture config) in its metadata") from None
    record["sha256"] = file_sha256(path)
    return record, state


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file: the weights' identity in click logs."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: The shipped checkpoints.
DEFAULT_WEIGHTS: dict[str, Path] = {
    "seqpatch": WEIGHTS_DIR / "seqpatch.safetensors",
    "unet": WEIGHTS_DIR / "unet.safetensors",
    # the ablations of the paper's Table 2 (reduced training budget; see weights/README.md)
    **{
        name: WEIGHTS_DIR / "ablations" / f"{name}.safetensors"
        for name in ("seqfcn", "bottom", "bottom_middle", "forward", "convlstm", "convgru")
    },
}


def load_models(
    names, weights: dict[str, str | Path | None] | None = None, strict: bool = True, device: Any = None
) -> dict[str, nn.Module]:
    """The named networks from their checkpoints: ``weights[name]`` or the shipped file.

    With ``strict`` a missing or unusable checkpoint raises :class:`WeightsError` (naming its path);
    otherwise that network is left out and a warning is logged (the app starts and says what is
    wrong). ``device``: where to put them (the inputs are sent there).
    """
    weights = weights or {}
    models = {}
    for name in names:
        path = weights.get(name) or DEFAULT_WEIGHTS.get(name)
        try:
            if path is None:
                raise WeightsError(f"no default weights for {name!r}: pass --weights")
            if not Path(path).is_file():
                raise WeightsError(f"weights file for {name!r} not found: {path}")
            models[name] = build_model(name, checkpoint=path)
            if device is not None:
                models[name].to(device)
        except WeightsError as exc:
            if strict:
                raise
            log.warning("%s", exc)
    return models


def write_record_fields(model: nn.Module, path: str | Path, **fields: Any) -> None:
    """Rewrite checkpoint ``path`` with ``fields`` added to ``model``'s record, and its readable copy
    (``<stem>.json`` beside it, where one exists) from that same record, so the two never drift."""
    save_checkpoint(model.cpu(), path, **fields)
    readable = Path(path).with_suffix(".json")
    if readable.is_file():
        record = json.loads(readable.read_text())
        record.update(fields)
        readable.write_text(json.dumps(record, indent=1))


def model_size(model: nn.Module) -> dict[str, float]:
    """Parameter count and float32 size in MB."""
    n = sum(p.numel() for p in model.parameters())
    return {"parameters": n, "megabytes": n * 4 / 1e6}


__all__ = [
    "MODELS",
    "DEFAULT_WEIGHTS",
    "build_model",
    "load_models",
    "write_record_fields",
    "save_checkpoint",
    "load_checkpoint",
    "file_sha256",
    "model_size",
]
