"""The bottom layer: what every other layer may use, and which imports nothing of SeqPatch.

``errors`` (the user-facing error types), ``metrics`` (Dice, centroid distances, HD95, ABD, aRVD on
(z, y, x) masks in mm), ``progress`` (the progress-callback type of long runs) and ``tables`` (markdown
tables). numpy and scipy only: no torch, no SimpleITK.
"""
