"""The policy server: engines (vllm, hf) behind one interface, wrapped by the PolicyServer Ray actor."""

from services.policy.server import PolicyServer, start_policy_server

__all__ = ["PolicyServer", "start_policy_server"]
