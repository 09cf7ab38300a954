"""Project exception types.

Every error a user can cause (a bad file, a point outside the volume, weights that do not fit)
is raised as a :class:`SeqPatchError` subclass whose message is one clear line. The CLI turns
them into exit status 2 and the app into a ``gr.Error``; anything else is a bug.
"""

from __future__ import annotations


class SeqPatchError(Exception):
    """Base class: the message is one line, fit to show a user as is."""


class InputError(SeqPatchError):
    """An input file, array, point or option that cannot be used."""


class WeightsError(SeqPatchError):
    """A checkpoint that is missing, corrupt, or does not fit the model."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an error's message, at most ``limit`` characters (its type's name when the
    message is empty): what a user or a report shows of an error raised by a library."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:limit] if limit else line
