"""fieldkit: the domain logic of fieldkit-mesh. No Ray, no torch, no vLLM at import time."""

__version__ = "0.1.0"
