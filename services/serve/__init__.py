"""The OpenAI-compatible Ray Serve endpoint over the policy server: base model plus trained adapters."""

from services.serve.launch import AdapterSource, Endpoint, publish_adapter, start_endpoint, stop_endpoint

__all__ = ["AdapterSource", "Endpoint", "publish_adapter", "start_endpoint", "stop_endpoint"]
