"""Shared helpers of the bridge: the error type and feature probes."""

from __future__ import annotations


class BridgeError(ValueError):
    """Blender data that cannot be sent, or a result that cannot be written; the message
    says what is wrong and what to do."""
