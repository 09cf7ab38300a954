"""The method of the paper: rays and patches, the networks, and one network pass on a slice.

``rays`` (16 rays of K patches ordered inside to outside, the working grid, fusion of the patch
likelihoods, post-processing), ``models`` (the bidirectional gated ConvRNN network, the U-net baseline,
self-describing safetensors checkpoints) and ``run`` (device, precision, one batched pass of N clicks,
the second-pass rule of the weights). Imports :mod:`~seqpatch_core.base` and
:mod:`~seqpatch_core.images` only; it holds no volume and no session.
"""
