"""Live targets: freezing a running McKernel (through /dev/mcosN or the QEMU
stand-in) safely, so that a crash or kill of the tool never leaves the node
frozen.  See freeze.frozen(), release.py (how each kind of target is resumed)
and watchdog.py (the process that resumes it if the tool dies)."""
