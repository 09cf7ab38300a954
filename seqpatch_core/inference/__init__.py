"""Answering clicks: the per-session :class:`~seqpatch_core.inference.predictor.Predictor`, 3D, engines.

``predictor`` (set a volume once, then segment clicks cheaply; both methods share one pipeline),
``propagate`` (the clicked object followed through neighbouring slices) and ``engines`` (OpenVINO and
ONNX Runtime copies of a network, chosen when their masks agree with float32 PyTorch). Imports the
layers below it (base, images, method, data).
"""
