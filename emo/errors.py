"""One exception type for every problem a user can fix, and the wrapper that prints it.

Anything raised as :class:`EmoError` is a user-facing problem (missing data, a malformed row, an
unknown config name, an unreadable checkpoint). Entry points print it as one line on stderr and
exit with status 1; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("emo")


class EmoError(Exception):
    """A problem in the user's input or setup, with a message that names the fix."""


def exit_on_emo_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn an :class:`EmoError` escaping ``fn`` into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EmoError as err:
            log.debug("EmoError", exc_info=True)
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(1)

    return wrapper


def prog(default: str) -> str:
    """The program name for a door's ``--help``: ``emo SUBCOMMAND`` when ``emo`` ran it (it sets
    ``sys.argv[0]``), else ``default`` (its console script or ``python -m`` module)."""
    return sys.argv[0] if sys.argv and sys.argv[0].startswith("emo ") else default
