"""The SeqPatch web demo (Gradio): ``build_demo(predictor)`` gives the page; see ``app.py`` to run it."""

from app.layout import LAUNCH_KWARGS, build_demo, find_examples

__all__ = ["LAUNCH_KWARGS", "build_demo", "find_examples"]
