"""The progress callback of long runs (evaluation, calibration, the robustness grid, the 3D object).

A ``Progress`` is called as ``progress(fraction, text)``: ``fraction`` in [0, 1] of the run done, and a
short line saying what runs now. Gradio's ``gr.Progress`` is one; the command line passes a logger.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, str], None]

__all__ = ["Progress"]
