"""Data for training, validation and the demo: synthetic slices, real backgrounds, atlases, examples.

``synth`` (labelled synthetic slices, numpy) and ``synth_torch`` (the same recipe batched on a device),
with ``shapes`` and ``phantoms``; ``backgrounds`` (a bank of real unlabelled anatomy), ``atlases``
(brain-atlas structures as labelled objects, with the evaluation-only sources refused),
``datasets`` (labelled image pairs) and ``examples`` (the bundled example volumes). Imports
:mod:`~seqpatch_core.base`, :mod:`~seqpatch_core.images` and :mod:`~seqpatch_core.method`.
"""
