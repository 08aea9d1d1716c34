"""Turn McktoolsError (and interrupts, broken pipes) into one line and an exit code.

Every console script is wrapped in `run_cli` so that bad input never shows a
traceback: the message is printed as "PROG: error: MESSAGE" on stderr.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Callable

from .errors import McktoolsError


def fail(prog: str, message: str, code: int = 1) -> int:
    """Print the one error line and return the exit code to use."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def run_cli(prog: str, main: Callable[[], object]) -> int:
    """Run `main` and map the user-caused failures to one line and an exit code."""
    try:
        result = main()
        return int(result or 0)
    except McktoolsError as exc:
        return fail(prog, str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return fail(prog, "interrupted", 130)
    except BrokenPipeError:
        # Output piped into head(1) or similar: quietly stop writing.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except OSError as exc:
        # File-system errors caused by user input (missing file, permission).
        if exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR,
                         errno.ENOTDIR, errno.ENOSPC, errno.EROFS, errno.EFBIG):
            where = f": {exc.filename}" if exc.filename else ""
            return fail(prog, f"{exc.strerror}{where}")
        raise
