"""Implicit feature matching (paper 001, Chen et al., ICML 2021).

An IM-Net occupancy decoder conditioned on a 256-d shape code (`model`), matching of
implicit features along a latent interpolation with batched, regularised Gauss-Newton
steps (`matching`), training data and mesh voxelisation (`data`), coarse-to-fine
training (`train`), evaluation (`evaluate`), benchmark (`bench`) and the registered
`Method` (`method`). See README.md in this folder.
"""
