"""Client library shared by the add-on and scripts: no bpy, no torch (numpy, pyzmq, msgpack)."""

from .client import Client, ClientError, JobFuture, Timeouts

__all__ = ["Client", "ClientError", "JobFuture", "Timeouts"]
