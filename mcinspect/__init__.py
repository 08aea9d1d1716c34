"""mcinspect / mcps: inspect a McKernel dump (processes, memory maps, page tables, kmsg)."""
