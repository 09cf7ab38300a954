"""Event adapters between the handlers (which answer ``{output name: value}``) and Gradio (which wants
a tuple of outputs), and the way a user's mistake reaches the page or an API client."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gradio as gr

from app import handlers, teaching
from app.handlers import OUTPUTS

__all__ = ["bind", "bind_steps", "clearing"]


def _from_api(request: gr.Request | None) -> bool:
    """Whether the event comes from an API client (gradio_client says so in a header), not the page."""
    headers = getattr(request, "headers", None) or {}
    return str(headers.get("x-gradio-user", "")).lower() == "api"


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


def _notice(exc: handlers.UserNotice, request: gr.Request | None) -> None:
    """A user's mistake: a notification on the page (the outputs stay as they were); an error for an
    API client, which has no page to show a notification on and must learn that nothing was done."""
    if _from_api(request):
        raise gr.Error(exc.message, print_exception=False) from None
    gr.Warning(exc.message)


def bind(fn: Callable[..., dict[str, Any]], names: Sequence[str] = OUTPUTS) -> Callable[..., tuple]:
    """Adapts a handler returning ``{output name: value}`` to Gradio's tuple of ``names``.

    A :class:`~app.handlers.UserNotice` becomes a notification (``gr.Warning``) and leaves every output
    as it was: a user's mistake never blanks the page or leaves it unclickable.
    """

    @functools.wraps(fn)  # Gradio injects gr.SelectData / gr.Progress by the signature
    def run(*args):
        *args, request = args
        try:
            out = fn(*args)
        except handlers.UserNotice as exc:
            _notice(exc, request)
            out = exc.outputs
        return tuple(out[name] if name in out else gr.skip() for name in names)

    return _with_request(run, fn)


def bind_steps(fn: Callable[..., Iterator[dict[str, Any]]], names: Sequence[str] = OUTPUTS) -> Callable:
    """:func:`bind` for a handler that yields several views (Gradio streams each one to the page)."""

    @functools.wraps(fn)
    def run(*args):
        *args, request = args
        try:
            for out in fn(*args):
                yield tuple(out[name] if name in out else gr.skip() for name in names)
        except handlers.UserNotice as exc:
            _notice(exc, request)
            yield tuple(exc.outputs[name] if name in exc.outputs else gr.skip() for name in names)

    return _with_request(run, fn)


def clearing(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """``fn`` whose successful answer also empties the teaching panels (they showed an older click)."""

    @functools.wraps(fn)
    def run(*args):
        out = fn(*args)
        return {**teaching.cleared(), **out} if "overlay" in out else out

    return run
