"""ShapeBridge compute backend: server, methods, data, metrics. Never imports bpy."""

__version__ = "0.1.0"
