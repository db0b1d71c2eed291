"""`shapebridge bench NAME`: benchmarks that print tables (and write results with --json)."""

from backend.dispatch import add_table, run  # noqa: F401 (run is this command's entry point)

BENCHMARKS = {
    "transport": "backend.bench.transport",
    "data": "backend.bench.data",
    "retrieval_deformation": "backend.methods.retrieval_deformation.bench",
    "feature_matching": "backend.methods.feature_matching.bench",
}


def add_arguments(parser):
    add_table(parser, BENCHMARKS, "NAME")
