"""The one error type the applications raise for a user's mistake."""

from __future__ import annotations


class UsageError(ValueError):
    """A mistake in what the user asked for (an image, a model, a layer, a class, a method).

    The message says what was wrong and what to do; the command line prints it
    without a traceback and exits with status 2.
    """


__all__ = ["UsageError"]
