"""Training both networks: the options, the batches and the loop.

``config`` (:class:`~seqpatch_core.training.config.TrainConfig` and its defaults), ``batches`` (slices
to rays and targets, on loader workers or on the device; the validation slices) and ``loop`` (BCE and
Adam, validation through the app's own pipeline, checkpoints with their records, ``--resume``).
Imports the layers below it (base to inference).
"""
