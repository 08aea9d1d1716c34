"""Build the gdb command line eclair starts by default.

Upstream eclair runs gdb with the prompt "(eclair) " and pagination off on
the kernel image; we do the same, adding -nx so a user's ~/.gdbinit cannot
change what the session looks like.  The target is either a loopback port
the stub listens on, or a pipe command gdb runs itself (`target remote |`).
"""

from __future__ import annotations

import shlex
from typing import List, Optional, Sequence

PROMPT = "(eclair) "


def gdb_command(
    image: str,
    *,
    gdb: str = "gdb",
    port: Optional[int] = None,
    host: str = "127.0.0.1",
    pipe_command: Optional[Sequence[str]] = None,
    batch: bool = False,
    extra_commands: Sequence[str] = (),
) -> List[str]:
    """argv for gdb connected to the stub, either on host:port or through
    `pipe_command` (exactly one of the two)."""
    if (port is None) == (pipe_command is None):
        raise ValueError("give exactly one of port and pipe_command")
    if port is not None:
        target = f"target remote {host}:{port}"
    else:
        target = "target remote | " + " ".join(shlex.quote(a) for a in pipe_command)
    argv = [gdb, "-q", "-nx"]
    if batch:
        argv.append("-batch")
    argv += [image, "-ex", f"set prompt {PROMPT}", "-ex", "set pagination off", "-ex", target]
    for cmd in extra_commands:
        argv += ["-ex", cmd]
    return argv
