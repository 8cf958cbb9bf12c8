"""Errors a user can fix, and the one wrapper every command-line entry point uses to report them:
one line on stderr and exit status 2, without a traceback."""
from __future__ import annotations

import os
import sys
from typing import Callable


class UserError(Exception):
    """Bad input: the message names the file or option and the problem, on one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def os_error_line(err: OSError) -> str:
    """`PATH: reason` for an operating-system error (read-only folder, disk full, path under a file)."""
    where = err.filename if err.filename is not None else ""
    reason = err.strerror or type(err).__name__
    return " ".join(f"{where}: {reason}".split()) if where else reason


def run_cli(command: Callable[[], int | None]) -> int:
    """Run one command-line command and turn what a user can fix into one line and exit 2.

    OSError counts as the user's: every file a command writes is atomic, so an unwritable, full or
    missing location leaves nothing half-written and the line names the path."""
    try:
        return int(command() or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return 2
