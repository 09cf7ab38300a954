"""Event adapters between the handlers (which answer ``{output name: value}``) and Gradio (which wants
a tuple of outputs, one per component of the event, in order).

An answer may leave outputs out (they stay as they were: ``gr.skip()``); a name that is not one of
the event's outputs is a programming error and raises :class:`KeyError` (a typo must not be dropped in
silence). A user's mistake goes through :func:`app.notices.notify`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gradio as gr

from app import outputs
from app.notices import UserNotice, notify

__all__ = ["bind", "bind_steps", "clearing", "to_tuple"]


def _with_request(run: Callable, fn: Callable) -> Callable:
    """Gives ``run`` (which takes ``*args``) the signature of ``fn`` plus a last ``request`` parameter,
    which Gradio fills with the gr.Request: Gradio injects special arguments by signature."""
    sig = inspect.signature(fn)
    req = inspect.Parameter(
        "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request
    )
    run.__signature__ = sig.replace(parameters=[*sig.parameters.values(), req])
    run.__annotations__ = {**getattr(fn, "__annotations__", {}), "request": gr.Request}
    return run


def to_tuple(answer: dict[str, Any], names: Sequence[str], fn_name: str = "handler") -> tuple:
    """``answer`` as Gradio's tuple for the outputs ``names`` (absent ones: ``gr.skip()``).

    Raises KeyError when the answer names an output that is not among ``names``."""
    unknown = [k for k in answer if k not in names]
    if unknown:
        raise KeyError(f"{fn_name} answered {', '.join(map(repr, unknown))}, not outputs of this event")
    return tuple(answer[name] if name in answer else gr.skip() for name in names)


def bind(fn: Callable[..., dict[str, Any]], names: Sequence[str] = outputs.MAIN) -> Callable[..., tuple]:
    """Adapts a handler returning ``{output name: value}`` to Gradio's tuple of ``names``.

    A :class:`~app.notices.UserNotice` becomes a notification and leaves every output as it was but
    those it names: a user's mistake never blanks the page or leaves it unclickable. Raises KeyError
    at once when ``names`` holds an undeclared output (:mod:`app.outputs`), and when called, when the
    handler answers a name outside ``names``.
    """
    names = tuple(names)
    outputs.check_names(names)

    @functools.wraps(fn)  # Gradio injects gr.SelectData / gr.Progress by the signature
    def run(*args):
        *args, request = args
        try:
            out = fn(*args)
        except UserNotice as exc:
            notify(exc, request)
            out = exc.outputs
        return to_tuple(out, names, fn.__name__)

    return _with_request(run, fn)


def bind_steps(fn: Callable[..., Iterator[dict[str, Any]]], names: Sequence[str] = outputs.MAIN) -> Callable:
    """:func:`bind` for a handler that yields several views (Gradio streams each one to the page)."""
    names = tuple(names)
    outputs.check_names(names)

    @functools.wraps(fn)
    def run(*args):
        *args, request = args
        try:
            for out in fn(*args):
                yield to_tuple(out, names, fn.__name__)
        except UserNotice as exc:
            notify(exc, request)
            yield to_tuple(exc.outputs, names, fn.__name__)

    return _with_request(run, fn)


def clearing(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """``fn`` whose successful answer (one that redraws the slice) also empties the teaching panels:
    they showed an older click."""

    @functools.wraps(fn)
    def run(*args):
        out = fn(*args)
        return {**outputs.empty(*outputs.TEACHING), **out} if "overlay" in out else out

    return run
