"""SeqPatch core: one-click sequential patch-based segmentation of CT and MR slices.

No UI imports here. Arrays are (z, y, x) everywhere; see :mod:`seqpatch_core.volume`.

Layout:

* images: ``volume`` (the Volume type, axis order, validation), ``io`` (reading files, writing masks),
  ``intensity`` (display windows);
* the method: ``rays`` (rays, patches, fusion), ``models`` (networks, checkpoints), ``network_run``
  (device, precision, one batched network pass), ``predictor`` (the app's click pipeline),
  ``propagate`` (3D), ``engines`` (OpenVINO / ONNX Runtime);
* data: ``synth`` (synthetic slices) with ``shapes``, ``phantoms`` and ``backgrounds`` (real anatomy),
  ``datasets`` (labelled pairs), ``atlases`` (atlas structures), ``examples``;
* training: ``train_config`` (the options and their defaults), ``training`` (the loop),
  ``training_data`` (batches, validation slices);
* measuring: ``metrics``, ``evaluation``, ``calibration`` (the second-pass rule), ``robustness``,
  ``bench`` and ``bench_paths`` (speed), ``tables`` (markdown tables);
* command line: ``__main__`` (parser, ``main``) and ``commands`` (one function per command).
"""

from seqpatch_core.errors import InputError, SeqPatchError, WeightsError

__all__ = ["InputError", "SeqPatchError", "WeightsError"]
__version__ = "0.1.0"
