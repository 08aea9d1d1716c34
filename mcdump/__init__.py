"""The `mcdump` frontend: info, verify, convert, to-elf and filter for McKernel dumps."""
