"""Benchmarks behind `shapebridge bench <name>`: scripts that print tables, not tests."""
