"""Sandboxes: one interface, backends docker / bubblewrap / local. Never imports Ray."""
