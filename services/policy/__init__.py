"""The policy server: engines (vllm, hf) behind one interface, wrapped by the PolicyServer Ray actor.

The actor is imported on first use: importing an engine (`services.policy.hf_engine`) must not need Ray, so the
hf engine runs where Ray is not installed (bench/gpu_check.py on a lent GPU machine).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.policy.server import PolicyServer, start_policy_server

__all__ = ["PolicyServer", "start_policy_server"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from services.policy import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
