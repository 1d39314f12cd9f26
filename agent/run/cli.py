"""What every script's entry point shares: an error the user can fix (a bad config, option,
argument or checkpoint, a simulator that is not running) is one line on stderr and exit status
2, never a traceback; Ctrl-C is one line and exit status 130."""

from __future__ import annotations

import sys
from collections.abc import Callable

from drive_attention.agent.run.checkpoint import CheckpointError
from drive_attention.agent.run.files import IncompleteWriteError, UnsafePathError
from drive_attention.envs.configuration import ConfigError
from drive_attention.envs.contract import SimulatorUnavailable

USAGE_ERROR = 2  # exit status of a command the user must correct
INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT), as shells report it


def fail(message: object) -> int:
    """Print ``error: message`` to stderr; the exit status for the caller to return."""
    print(f"error: {message}", file=sys.stderr)
    return USAGE_ERROR


def guarded(body: Callable[[], int]) -> int:
    """Run a script's ``body``; a ConfigError, CheckpointError, SimulatorUnavailable,
    UnsafePathError or IncompleteWriteError becomes :func:`fail`, and Ctrl-C
    (KeyboardInterrupt) one line and :data:`INTERRUPTED` (training saves a checkpoint first: it
    handles the signal itself)."""
    try:
        return body()
    except (
        ConfigError, CheckpointError, SimulatorUnavailable, UnsafePathError, IncompleteWriteError
    ) as err:  # fmt: skip
        return fail(err)
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED
