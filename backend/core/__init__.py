"""Core of the backend: geometry, metrics, cameras, conventions and rendering.

Pure array and tensor functions shared by every method, the evaluation tables and
the data pipeline. Importing this package imports nothing heavy; each submodule
(``backend.core.metrics`` and the others) is imported where it is used.
"""
