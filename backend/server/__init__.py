"""The backend server: ZeroMQ ROUTER, job scheduling, limits and CURVE authentication."""

from backend.server.server import Scheduler, Server, ServerConfig, is_loopback

__all__ = ["Scheduler", "Server", "ServerConfig", "is_loopback"]
