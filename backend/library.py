"""`shapebridge library index DIR --out LIB`: a folder of the user's meshes as a retrieval library."""

from backend.dispatch import add_table, run  # noqa: F401 (run is this command's entry point)

LIBRARY_COMMANDS = {"index": "backend.methods.retrieval_deformation.library_cli"}


def add_arguments(parser):
    add_table(parser, LIBRARY_COMMANDS, "ACTION")
