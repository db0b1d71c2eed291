"""Encoder codes against auto-decoded codes for feature matching, on validation pairs.

The paper takes the shape codes from the voxel encoder; the add-on can refine them by
auto-decoding (`FeatureMatchingConfig.code_from = "autodecode"`: Adam on the code alone,
decoder frozen, against 32768 occupancy samples of the mesh's voxels). This script says
what the refinement does to the two measures of the issue's claims, on pairs of the
**validation** split (the test split stays for `shapebridge eval feature_matching`):

- the decoder's occupancy MSE on those samples (how well the code fits the shape);
- the keypoint error as a ratio to nearest neighbour, computed as the full evaluation does;
- part CD (x1e-3) of 2048 matched source samples against the target's (as `fm_gate.py`).

Each shape's code is fitted once and reused by every pair it is in; auto-decoding costs
about 50 s per shape and 100 steps on one core of a busy machine (16 shapes at 300
steps: over an hour there with three other jobs running; start it on an idle machine).

    python benchmarks/fm_codes.py backend/zoo/feature_matching/chair.pt --category chair \\
        --shapes 16 --pairs 40 --steps 100
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from fm_gate import pair_measures, prepared  # benchmarks/, the script's own folder
from fm_sweep import add_validation_arguments, validation_draw

from backend.methods.feature_matching import evaluate as ev
from backend.methods.feature_matching.data import cell_centers, sample_cells
from backend.methods.feature_matching.model import auto_decode, load_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_validation_arguments(parser, shapes=16)
    parser.add_argument("--steps", default="100", help="auto-decoding steps, comma-separated")
    parser.add_argument("--samples", type=int, default=32768, help="occupancy samples per shape")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps = [0] + [int(s) for s in args.steps.split(",") if int(s) > 0]
    model = load_checkpoint(args.checkpoint, "cpu")[0]
    config = ev.EvalConfig()
    field_ = ev.decoder_field(model.decoder, config.layers, config.layer_weights)
    shapes, chosen = validation_draw(args.category, args.shapes, args.pairs, config.seed)

    start = time.perf_counter()
    codes: dict[tuple[int, int], torch.Tensor] = {}
    mse = {n: [] for n in steps}
    for i, shape in enumerate(shapes):
        vox = model.shape_voxels(shape).numpy()
        idx = sample_cells(vox, args.samples, np.random.default_rng(i))
        points = cell_centers(idx, 64, model.config.grid_half_extent)
        occupancy = torch.from_numpy(vox.reshape(-1)[idx])
        with torch.no_grad():
            codes[i, 0] = model.encoder(torch.from_numpy(vox)[None])[0]
            mse[0].append(float(((model.decoder(points, codes[i, 0]) - occupancy.float()) ** 2).mean()))
        for n in steps[1:]:
            codes[i, n], loss = auto_decode(model.decoder, points, occupancy, codes[i, 0], n)
            mse[n].append(loss)
    print(f"codes of {len(shapes)} shapes: {time.perf_counter() - start:.0f} s", flush=True)

    keypoint = {n: [] for n in steps}
    part_cd = {n: [] for n in steps}
    nearest: list[float] = []
    for i, j, k in chosen:
        pair, mesh_b, nn_error = prepared(shapes[i], shapes[j], config, config.seed + k)
        if nn_error is not None:
            nearest.append(nn_error)
        for n in steps:
            cd, error = pair_measures(field_, pair, codes[i, n], codes[j, n], config, mesh_b)
            part_cd[n].append(cd)
            if error is not None:
                keypoint[n].append(error)
    print(f"{args.category}, {len(part_cd[0])} validation pairs of {len(shapes)} shapes, "
          f"{time.perf_counter() - start:.0f} s")
    print("| codes | occupancy MSE | keypoint / nearest neighbour | part CD (x1e-3) |")
    print("|---|---|---|---|")
    for n in steps:
        name = "encoder" if n == 0 else f"auto-decoded, {n} steps"
        print(f"| {name} | {np.mean(mse[n]):.4f} | {np.mean(keypoint[n]) / np.mean(nearest):.3f} | "
              f"{1e3 * np.mean(part_cd[n]):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
