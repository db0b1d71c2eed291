"""Joint shape retrieval and part-aware deformation (paper 000, Uy et al. CVPR 2021).

Modules: `deformation` (per-part translation + scale, joints, null-space projection,
symmetry), `library` (part-segmented source libraries, stored), `model` (encoders,
auto-decoded deformation module, retrieval embedding), `joint` (soft retrieval, Eq. 2 and
4 losses, IDO), `data` (built-in targets), `checkpoint`, `train` / `evaluate` / `bench` /
`library_cli` (CLI sub-commands), `inference` and `method` (the registered Method).
See README.md.
"""
