"""Procedural shape families: one generator per category, ``FAMILIES[category](rng, seed)``.

Each generator draws its topology (e.g. four legs / swivel base / sled) and proportions
from ``rng`` (a ``numpy.random.Generator``), builds parts in metres with a
:class:`~backend.data.shapes.ShapeBuilder` and returns the normalised
:class:`~backend.data.shapes.Shape`. Use :func:`backend.data.shapes.generate_shape`.
"""

from collections.abc import Callable

import numpy as np

from backend.data.families.airplane import build_airplane
from backend.data.families.cabinet import build_cabinet
from backend.data.families.chair import build_chair
from backend.data.families.table import build_table
from backend.data.shapes import Shape

FAMILIES: dict[str, Callable[[np.random.Generator, int], Shape]] = {
    "chair": build_chair,
    "table": build_table,
    "cabinet": build_cabinet,
    "airplane": build_airplane,
}

__all__ = ["FAMILIES"]
