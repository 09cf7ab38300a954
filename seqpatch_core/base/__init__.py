"""The bottom layer: what every other layer may use, and which imports nothing of SeqPatch.

``errors`` (the user-facing error types and an error's first line), ``metrics`` (Dice, centroid
distances, HD95, ABD, aRVD on (z, y, x) masks in mm), ``progress`` (the progress-callback type of long
runs), ``tables`` (markdown tables), ``lru`` (the one least-recently-used cache) and ``paths`` (the
project's folders). numpy and scipy only: no torch, no SimpleITK.
"""
