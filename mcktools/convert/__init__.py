"""Dump conversion and checking behind the `mcdump` frontend, one module per job:

- `detect`: what kind of dump a file is;  `info`: what it holds;
- `bitmap` and `locate`: IHK's dump page set and finding McKernel in a vmcore;
- `vmcore`: vmcore → mcdump;  `filter`: level 0 → level 24;
- `toelf`: mcdump → ELF core for gdb/drgn;  `verify`: image and dump belong together;
- `output`: the safe-output discipline (temp file + rename, --force, progress).
"""
