"""`shapebridge train METHOD`: train a method's model with its paper's configuration."""

from backend.dispatch import add_table, run  # noqa: F401 (run is this command's entry point)

TRAINERS = {
    "retrieval_deformation": "backend.methods.retrieval_deformation.train",
    "feature_matching": "backend.methods.feature_matching.train",
}


def add_arguments(parser):
    add_table(parser, TRAINERS, "METHOD")
