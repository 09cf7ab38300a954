"""Run the SeqPatch demo: ``python app.py [--device auto|cpu|cuda|mps] [--port 7860]``.

Works as a Hugging Face Space (``app_file: app.py``): the server name and port come from
``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` when set. The app starts even without trained weights
and then says how to get them.
"""

from __future__ import annotations

import argparse
import logging
import os

if os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true"):  # the rule of spaces.config
    try:
        import spaces  # noqa: F401 - on a ZeroGPU Space, before torch: it prepares torch for spaces.GPU
    except ImportError:  # app.zerogpu then logs it and runs the networks without it
        pass


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="SeqPatch one-click segmentation demo")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, then cpu), cpu, cuda or mps")
    p.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        help="port (default: $GRADIO_SERVER_PORT or 7860)",
    )
    p.add_argument("--seqpatch-weights", default=None, help="checkpoint (default: weights/seqpatch.safetensors)")
    p.add_argument("--unet-weights", default=None, help="checkpoint (default: weights/unet.safetensors)")
    p.add_argument(
        "--no-ablations",
        action="store_true",
        help="do not load the ablation networks of weights/ablations (the 'Ablations side by side' tab)",
    )
    p.add_argument(
        "--dtype", default="auto", help="auto (bfloat16 on CPUs that have it: about half the time), float32, bfloat16"
    )
    p.add_argument(
        "--engine",
        default=os.environ.get("SEQPATCH_ENGINE", "auto"),
        choices=["auto", "torch", "openvino", "onnxruntime"],
        help="what runs the networks and LiteMedSAM's image encoder on a CPU: auto (the fastest path here whose "
        "masks agree with float32 PyTorch, checked at start), torch (force PyTorch), openvino or onnxruntime "
        "(env SEQPATCH_ENGINE)",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: the cores this process may use)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # highdicom tells at INFO every module it copies into a DICOM SEG export
        logging.getLogger("highdicom").setLevel(logging.WARNING)
    log = logging.getLogger("seqpatch.app")

    import torch

    from app import LAUNCH_KWARGS, build_demo
    from seqpatch_core.base.errors import SeqPatchError
    from seqpatch_core.inference.engines import usable_threads
    from seqpatch_core.inference.predictor import Predictor
    from seqpatch_core.method.models import load_models
    from seqpatch_core.method.run import pick_device

    # the cores this process may use (a container's share), not the host's count
    torch.set_num_threads(args.threads if args.threads > 0 else usable_threads())
    try:
        device = pick_device(args.device)
    except SeqPatchError as exc:
        raise SystemExit(f"error: {exc}") from None
    models = load_models(
        ["seqpatch", "unet"], {"seqpatch": args.seqpatch_weights, "unet": args.unet_weights}, strict=False
    )
    main_loaded = bool(models)
    if not args.no_ablations:
        from app.ablations import load_ablations

        # Keys "ablation:<variant>": shared by every session, never run by a plain click.
        models.update(load_ablations())
    for name, model in models.items():
        model.to(device)
        log.info("loaded %s (sha256 %s)", name, str(model.record.get("sha256", "?"))[:12])
    if not main_loaded:
        log.warning("no weights loaded: the app starts, but segmentation needs weights (see weights/README.md)")
    from app import zerogpu

    # On a ZeroGPU Space the networks run inside spaces.GPU functions, by name; elsewhere None.
    runner = zerogpu.setup(models)
    # the compared pair only: the ablation networks run rarely, in PyTorch
    predictor = Predictor(
        models, device=device, dtype=args.dtype, runner=runner, engine=args.engine, engine_for=("seqpatch", "unet")
    )
    for name, e in predictor.engines.items():
        log.info("%s runs on %s (tried: %s)", name, e.label, e.tried)
    log.info("device: %s", predictor.device)
    from app.session import load_box_model

    # LiteMedSAM: once per process, shared by the sessions (each keeps its own slice embeddings)
    box_model = load_box_model()
    if box_model is not None:
        from seqpatch_core.inference.boxes import choose_encoder

        box_model.to(device)
        log.info("loaded litemedsam (sha256 %s)", str(box_model.record.get("sha256", "?"))[:12])
        # its image encoder by the networks' rule and --engine: on a CPU, the fastest path whose box
        # answers agree with float32 PyTorch (the sessions share the compiled graph)
        choice = choose_encoder(box_model, args.engine)
        box_model = choice.net
        log.info("litemedsam's encoder runs on %s (tried: %s)", choice.label, choice.tried)
    demo = build_demo(predictor, box_model=box_model)
    demo.launch(server_name=args.host, server_port=args.port, **LAUNCH_KWARGS)


if __name__ == "__main__":
    main()
