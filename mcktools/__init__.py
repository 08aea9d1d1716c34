"""mcktools: debugging and post-mortem toolkit for IHK/McKernel.

Layers (see ARCHITECTURE in the shared docs): formats -> memory.sources ->
memory.translate -> debuginfo -> model -> frontends (mcinspect, eclair, mcdump).
"""

__version__ = "0.1.0"
