"""`shapebridge eval METHOD`: reproduce a method's paper tables on the built-in benchmark."""

from backend.dispatch import add_table, run  # noqa: F401 (run is this command's entry point)

EVALUATIONS = {
    "retrieval_deformation": "backend.methods.retrieval_deformation.evaluate",
    "feature_matching": "backend.methods.feature_matching.evaluate",
}


def add_arguments(parser):
    add_table(parser, EVALUATIONS, "METHOD")
