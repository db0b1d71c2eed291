"""`shapebridge train METHOD`: train a method's model with its paper's configuration."""

from backend.dispatch import add_table

TRAINERS = {
    "retrieval_deformation": "backend.methods.retrieval_deformation.train",
    "feature_matching": "backend.methods.feature_matching.train",
}


def add_arguments(parser):
    add_table(parser, TRAINERS, "METHOD")


def run(args):
    return args._run(args)
