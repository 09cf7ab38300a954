"""The app's user-error policy, in one place.

An error a user can cause (:class:`~seqpatch_core.base.errors.SeqPatchError`: a bad file, a point
outside the volume, undo with nothing to undo) reaches the user as one line, never as a stack trace,
and costs nothing already loaded:

* a handler decorated with :func:`user_errors` turns it into a :class:`UserNotice` (its first line);
* the event adapter (:mod:`app.binding`) calls :func:`notify`: a notification on the page
  (``gr.Warning``), or an error for an API client, which has no page and must learn nothing was done;
* every output stays as it was, but for those the notice names (e.g. an upload box to put back).
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any

import gradio as gr

from seqpatch_core.base.errors import SeqPatchError, first_line

log = logging.getLogger(__name__)


class UserNotice(gr.Error):
    """A one-line message for the user (no stack trace). The page shows it as a notification
    (``gr.Warning``) and leaves every output as it was, but for ``outputs`` (``{name: value}``, e.g. an
    upload box to empty): the page keeps its state and stays clickable."""

    def __init__(self, message: str, outputs: dict[str, Any] | None = None, **kwargs):
        kwargs.setdefault("print_exception", False)
        super().__init__(message, **kwargs)
        self.outputs = dict(outputs or {})


def user_errors(fn):
    """Turns a :class:`SeqPatchError` raised by ``fn`` into a one-line :class:`UserNotice`.

    Works on generator functions too (the error is raised while iterating).
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def steps(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except SeqPatchError as exc:
                log.info("%s: %s", fn.__name__, first_line(exc))
                raise UserNotice(first_line(exc)) from None

        return steps

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SeqPatchError as exc:
            log.info("%s: %s", fn.__name__, first_line(exc))
            raise UserNotice(first_line(exc)) from None

    return inner


def from_api(request: gr.Request | None) -> bool:
    """Whether the event comes from an API client (gradio_client says so in a header), not the page."""
    headers = getattr(request, "headers", None) or {}
    return str(headers.get("x-gradio-user", "")).lower() == "api"


def notify(exc: UserNotice, request: gr.Request | None) -> None:
    """A user's mistake: a notification on the page (the outputs stay as they were); an error for an
    API client, which has no page to show a notification on and must learn that nothing was done."""
    if from_api(request):
        raise gr.Error(exc.message, print_exception=False) from None
    gr.Warning(exc.message)


def inform(message: str) -> None:
    """A short note that something worked where the eye may not be (e.g. files listed below the fold)."""
    gr.Info(message)


def warn(message: str) -> None:
    """A notice that does not stop the handler (e.g. a label refused while its image loads)."""
    gr.Warning(message)
