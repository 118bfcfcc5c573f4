"""The one error a user's input gets: :class:`UsageError`.

A flag or argument that cannot be honoured (a missing chapter, an unwritable ``--out``, a σ out of
range) raises it with a message that names the flag and what was expected; the command line
(:mod:`lemmse_lite.cli`) prints it on one line and exits 2. Every other exception is the package's
own bug and keeps its traceback, so an internal ``ValueError`` never passes for a bad flag.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """A flag or argument that cannot be honoured; the message names it (``--out ...: ...``).
    A ``ValueError``, so library callers that catch bad values catch it too."""
