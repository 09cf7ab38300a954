"""Measuring answers: Dice and distances per slice, click robustness, the second-pass calibration.

``evaluate`` (a volume with its label, synthetic validation slices or atlas objects; summaries by size
and paired comparisons), ``robustness`` (Dice over a grid of moved clicks) and ``calibration`` (the
radius of the second pass, chosen on validation slices). Imports the layers below it.
"""
