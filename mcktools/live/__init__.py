"""Live targets: freezing a running McKernel (through /dev/mcosN or the QEMU
stand-in) safely, so that a crash or kill of the tool never leaves the node
frozen.  See freeze.frozen(), release.py (how each kind of target is resumed)
and watchdog.py (the process that resumes it if the tool dies).

Reading without freezing and the tools on top:
  attach.py      open_live(): a model Target over /dev/mcosN or a QEMU guest,
                 the kernel-image search order, freezer(level) for each kind
  ihk.py         IhkFreezer (DUMP_SET_LEVEL + DUMP_NMI / DUMP_NMI_CONT)
  qemu.py        QemuFreezer: the harness's NMI protocol from another process
  consistent.py  retries and "changed" marks for reads of a running kernel
  create.py      `mcdump create` (ihkosctl dump + kmsg section)
  target.py      `mcktools-live`: boot the reference kernel for humans
  fake_ihk.py    the IHK driver emulator for tests and demos
"""
