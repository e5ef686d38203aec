"""Exception types of the public API.

:class:`InputError` marks a problem with what the caller passed (a bad frame, box, query, setting, file or model
name). It subclasses ``ValueError``, so ``except ValueError`` keeps working; the command line prints it as one
line, while any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """The caller's input is invalid; the message names the bad value and how to fix it."""
