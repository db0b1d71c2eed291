"""Built-in data: procedural part-based shape families with exact ground truth
(``shapes``, ``families``), per-shape samples (``samples``), dataset store and loaders.

See docs/data.md for categories, part labels, keypoints and sample formats.
"""
