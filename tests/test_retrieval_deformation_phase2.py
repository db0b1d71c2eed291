"""retrieval_deformation, phase 2: new sources join a trained model by auto-decoding their
codes (networks frozen); the user-library path through the Method API."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.methods.base import JobContext
from backend.methods.retrieval_deformation import library_cli
from backend.methods.retrieval_deformation import train as train_cli
from backend.methods.retrieval_deformation.autodecode import (
    FitConfig,
    code_losses,
    fit_source_codes,
    fitted_checkpoint_dir,
    model_for_library,
)
from backend.methods.retrieval_deformation.checkpoint import load_checkpoint
from backend.methods.retrieval_deformation.data import builtin_targets
from backend.methods.retrieval_deformation.library import builtin_library
from backend.methods.retrieval_deformation.method import RetrievalDeformation
from tests.conftest import assert_close


def _run(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "chair_points"
    assert _run(train_cli, ["--tiny", "--target", "points", "--out", str(out),
                            "--max-steps", "2"]) == 0
    return out


def _network_state(model) -> dict[str, torch.Tensor]:
    d, r = model.deformation, model.retrieval
    return {**{f"d.encoder.{k}": v for k, v in d.encoder.state_dict().items()},
            **{f"d.mlp.{k}": v for k, v in d.mlp.state_dict().items()},
            **{f"r.encoder.{k}": v for k, v in r.encoder.state_dict().items()}}


def test_fit_source_codes_moves_only_the_new_rows_and_lowers_both_losses(tiny_checkpoint):
    model, _ = load_checkpoint(tiny_checkpoint)
    before = {k: v.clone() for k, v in _network_state(model).items()}
    old_codes = model.deformation.global_codes.detach().clone()
    new_lib = builtin_library("chair", 3, seed=7, n_points=256)  # sources it never saw
    targets = builtin_targets("chair", "train", 4, seed=0, skip=6, n_points=256)
    config = FitConfig(steps=25, batch_size=4, k=3, lr=2e-2)
    fitted, summary = fit_source_codes(model, new_lib, targets, config)

    assert len(fitted.library) == 3 and fitted.deformation.global_codes.shape[0] == 3
    assert fitted.deformation.part_codes.shape[0] == sum(new_lib.num_parts(s) for s in range(3))
    # networks: copies of the trained ones, untouched; the trained model is unchanged
    for key, value in _network_state(fitted).items():
        assert torch.equal(value, before[key]), key
    for key, value in _network_state(model).items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(model.deformation.global_codes, old_codes)

    # both objectives fall on the fitted targets (same candidates before and after)
    start = model_for_library(model, new_lib, config.seed).eval()
    pts = torch.from_numpy(targets.points)
    cand = torch.tensor([[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1]])
    with torch.no_grad():
        d0, e0 = code_losses(start, pts, pts, cand, config)
        d1, e1 = code_losses(fitted, pts, pts, cand, config)
    print(f"L_def {d0:.6g} -> {d1:.6g}, L_emb {e0:.6g} -> {e1:.6g}")
    assert d1 < d0 and e1 < e0
    assert summary["steps"] == 25


def test_library_index_with_checkpoint_then_infer_uses_fitted_codes(tiny_checkpoint, tmp_path):
    folder = tmp_path / "meshes"
    folder.mkdir()
    lib = builtin_library("chair", 2, seed=3, n_points=256)
    for s in range(2):  # two grouped OBJ files, one group per part
        v, f, fp = lib.mesh(s)
        lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
        for p in range(int(fp.max()) + 1):
            lines.append(f"g part{p}")
            lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f[fp == p]]
        (folder / f"chair_{s}.obj").write_text("\n".join(lines) + "\n")
    out = tmp_path / "library"
    method = RetrievalDeformation("cpu")
    points = lib.points[0][:200].astype(np.float32)
    inputs = {"points.points": points[:, [0, 2, 1]] * np.float32([1, -1, 1])}

    # indexed without a fit: an explicit checkpoint is refused with the command to run
    assert _run(library_cli, [str(folder), "--out", str(out), "--n-points", "256"]) == 0
    config = method.validate(inputs, {"library": str(out), "checkpoint": str(tiny_checkpoint),
                                      "ido": False, "n_points": 128, "top_k": 2})
    with pytest.raises(ValueError, match="library index"):
        method.infer(inputs, config, JobContext("t", lambda *a: None))

    assert _run(library_cli, [str(folder), "--out", str(out), "--n-points", "256",
                              "--checkpoint", str(tiny_checkpoint), "--fit-steps", "3",
                              "--fit-targets", "4", "--device", "cpu"]) == 0
    fitted = fitted_checkpoint_dir(out, "points")
    assert (fitted / "config.json").is_file()
    config = method.validate(inputs, {"library": str(out), "ido": False, "n_points": 128,
                                      "top_k": 2})
    result = method.infer(inputs, config, JobContext("t", lambda *a: None))
    assert result.info["checkpoint"] == str(fitted) and "warning" not in result.info
    assert {o.meta["source_name"] for o in result.outputs} == {"chair_0", "chair_1"}


# ------------------------------------------------------------------ baselines R and DAR
def test_chamfer_matrix_matches_pairwise_loop():
    from backend.core.metrics import chamfer_distance
    from backend.methods.retrieval_deformation.baselines import chamfer_matrix

    pts = torch.rand(5, 40, 3, generator=torch.Generator().manual_seed(0))
    got = chamfer_matrix(pts, chunk=2)
    for i in range(5):
        for j in range(5):
            a = chamfer_distance(pts[i:i + 1], pts[j:j + 1]).chamfer[0]
            b = chamfer_distance(pts[j:j + 1], pts[i:i + 1]).chamfer[0]
            assert abs(float(got[i, j]) - 0.5 * float(a + b)) < 1e-6
    assert torch.all(got.diagonal() == 0)


def test_classical_mds_recovers_euclidean_configurations():
    from backend.methods.retrieval_deformation.baselines import classical_mds

    x = torch.randn(12, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sq = torch.cdist(x, x).square()
    y = classical_mds(sq, 256)
    assert y.shape == (12, 256) and torch.all(y[:, 4:].abs() < 1e-3)
    assert torch.allclose(torch.cdist(y.double(), y.double()).square(), sq, atol=1e-4)
    # fewer dimensions: the best rank-2 fit keeps the largest-variance directions
    y2 = classical_mds(sq, 2)
    assert y2.shape == (12, 2) and float(y2.var(0).sum()) <= float(x.var(0).sum()) + 1e-4


def test_baselines_train_and_evaluate_tiny(tmp_path):
    import json

    from backend.core.metrics import chamfer_distance
    from backend.methods.retrieval_deformation import evaluate
    from backend.methods.retrieval_deformation.baselines import chamfer_matrix, classical_mds
    from backend.methods.retrieval_deformation.inference import retrieve_and_deform

    df, ours = tmp_path / "df", tmp_path / "ours"
    assert _run(train_cli, ["--tiny", "--out", str(df), "--max-steps", "2",
                            "--sampling", "random_pairs"]) == 0
    assert _run(train_cli, ["--tiny", "--out", str(ours), "--max-steps", "2"]) == 0
    r, dar = tmp_path / "r", tmp_path / "dar"
    assert _run(train_cli, ["--baseline", "r", "--deformation", str(df), "--out", str(r),
                            "--device", "cpu"]) == 0
    assert _run(train_cli, ["--baseline", "dar", "--deformation", str(df), "--out", str(dar),
                            "--device", "cpu"]) == 0
    m_df, _ = load_checkpoint(df)
    m_r, doc_r = load_checkpoint(r)
    assert doc_r["baseline"]["steps"] == 2  # DF's budget
    # R: MDS embeddings of the library's chamfer matrix, plain Euclidean retrieval distance
    coords = classical_mds(chamfer_matrix(torch.from_numpy(m_r.library.points)), 256)
    coords = coords * (16.0 / coords.norm(dim=1).mean())  # unit RMS per dimension
    assert torch.allclose(m_r.retrieval.source_embeddings, coords, atol=1e-4)
    assert np.isfinite(doc_r["baseline"]["last"]["loss_l2"])
    e = torch.randn(1, 256)
    assert torch.allclose(m_r.retrieval.distances(e), (e - coords).square().sum(-1), rtol=1e-4)
    # R and DAR carry DF's deformation module unchanged
    for m in (m_r, load_checkpoint(dar)[0]):
        for (k, a), b in zip(m.deformation.state_dict().items(),
                             m_df.deformation.state_dict().values()):
            assert torch.equal(a, b), k
    # retrieval only: the fit is the chamfer of the undeformed source
    pts = torch.from_numpy(builtin_targets("chair", "test", 1, n_points=256).points)
    res = retrieve_and_deform(m_r, pts, pts, 2, deform=False)
    src = torch.from_numpy(m_r.library.points[res.sources[0].numpy()])
    assert torch.allclose(res.fit[0], chamfer_distance(src, pts.expand(2, -1, -1)).chamfer)
    assert torch.all(res.params == 0)

    out = tmp_path / "table1.json"
    assert _run(evaluate, ["--targets", "3", "--device", "cpu", "--ido-max-iters", "3",
                           "--json", str(out), "--variant", f"R={r}:nodeform",
                           "--variant", f"R+DF={r}", "--variant", f"DAR={dar}:nodeform",
                           "--variant", f"DAR+DF={dar}", "--variant", f"Ours={ours}",
                           "--variant", f"Ours + test-time IDO={ours}:ido",
                           "--oracle-variant", f"DF={df}", "--oracle-variant", f"Ours={ours}",
                           "--oracle-variant", f"Ours + test-time IDO={ours}:ido"]) == 0
    all_rows = json.loads(out.read_text())["rows"]
    rows = [row for row in all_rows if row["metric"] != "holds"]
    assert [row["variant"] for row in rows] == ["R", "R+DF", "DAR", "DAR+DF", "Ours",
                                                "Ours + test-time IDO", "DF", "Ours",
                                                "Ours + test-time IDO"]
    for row in rows:
        assert row["category"] == "chair" and row["n"] == 3
        assert row["condition"] == ("points" if len(rows) - rows.index(row) > 3 else "points oracle")
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
    assert rows[5]["value"] <= rows[4]["value"] + 1e-6  # IDO never worsens the top fit
    # the oracle keeps the best of all sources: never worse than the top-1 retrieved one
    assert rows[7]["value"] <= rows[4]["value"] + 1e-6 and rows[8]["value"] <= rows[7]["value"] + 1e-6
    checks = {(r["variant"], r["condition"]) for r in all_rows if r["metric"] == "holds"}
    assert checks == {("Ours <= 0.9 x best baseline", "points"),
                      ("Ours + test-time IDO < Ours", "points"),
                      ("Ours < DF, Uniform", "points oracle"),
                      ("Ours + test-time IDO < Ours", "points oracle")}
    # --append: a new row joins, a re-evaluated row replaces its old one, both commands kept
    assert _run(evaluate, ["--targets", "3", "--device", "cpu", "--json", str(out), "--append",
                           "--variant", f"Ours={ours}", "--variant", f"Uniform={ours}"]) == 0
    doc = json.loads(out.read_text())
    again = [row for row in doc["rows"] if row["metric"] != "holds"]
    assert [r["variant"] for r in again] == [r["variant"] for r in rows if r["variant"] != "Ours"
                                             or r["condition"] != "points"] + ["Ours", "Uniform"]
    assert doc["command"].count(" ;; ") == 1
    with pytest.raises(ValueError, match="nodeform"):
        evaluate.parse_variant(f"X={ours}:nodeform:ido")


def test_rd_cell_script_runs_two_cells_at_once_into_one_results_file(tmp_path):
    """``benchmarks/rd_cell.sh`` (the GPU session runs several cells side by side): every
    training of a cell at once (JOBS), "Ours w/ IDO" trained with IDO (IDO_TRAINING), the
    joint trainings started from the cell's DF (INIT_FROM_DF, the default), the sources
    embedded by the retrieval encoder (SOURCE_EMBEDDING), and the two cells' evaluations
    appending in turn to one results file."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    shapebridge = Path(sys.executable).with_name("shapebridge")
    results = tmp_path / "results.json"
    env = {**os.environ, "SHAPEBRIDGE": str(shapebridge), "CONFIG": "--tiny --max-steps 1",
           "RESULTS": str(results), "TARGETS": "3", "JOBS": "4", "IDO_TRAINING": "1",
           "SOURCE_EMBEDDING": "encoder"}
    procs = [subprocess.Popen(["bash", str(root / "benchmarks" / "rd_cell.sh"), cat, "points",
                               str(tmp_path / "runs")], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cat in ("chair", "table")]
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out[-3000:]
    doc = json.loads(results.read_text())
    assert doc["command"].count(" ;; ") == 1  # both evaluations, neither overwritten
    for cat in ("chair", "table"):
        assert (tmp_path / "runs" / f"{cat}_points_ours_ido" / "model.pt").is_file()
        df = str(tmp_path / "runs" / f"{cat}_points_df")
        for name, init in (("ours", df), ("uniform", df), ("ours_ido", df), ("dar", None)):
            doc_run = json.loads((tmp_path / "runs" / f"{cat}_points_{name}" / "config.json")
                                 .read_text())
            assert doc_run["train"].get("init_deformation") == init, (cat, name)
            assert doc_run["model"]["source_embedding"] == "encoder", (cat, name)
        rows = {(r["variant"], r["condition"]) for r in doc["rows"] if r["category"] == cat}
        for variant in ("R", "R+DF", "DAR", "DAR+DF", "Uniform", "Ours", "Ours w/ IDO"):
            assert (variant, "points") in rows, (cat, variant)
        for variant in ("DF", "Uniform", "Ours", "Ours w/ IDO", "Best source, undeformed",
                        "Sampling floor"):
            assert (variant, "points oracle") in rows, (cat, variant)
        assert ("Sampling floor", "points") in rows
        assert ("Ours w/ IDO < Ours", "points") in rows


def test_bench_runs_against_the_zoo_checkpoint_and_writes_its_table(tmp_path):
    """``shapebridge bench retrieval_deformation`` on the shipped checkpoint: both sizes,
    with and without IDO, timings and fits recorded (IDO never worsens the best fit)."""
    import json

    from backend.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "retrieval_deformation", "--sizes", "300", "20000", "--repeats", "1",
                 "--ido-max-iters", "20", "--device", "cpu", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 8
    threads = torch.get_num_threads()
    assert all(r["condition"].endswith(f"cpu, {threads} thread{'s' * (threads != 1)}")
               for r in rows)  # CPU timings name their thread count
    seconds = [r["value"] for r in rows if r["metric"] == "seconds"]
    assert len(seconds) == 4 and all(s > 0 for s in seconds)
    fits = {(r["variant"], r["condition"]): r["value"] for r in rows if r["metric"] != "seconds"}
    for cond in {c for _, c in fits}:
        assert fits[("w/ IDO", cond)] <= fits[("network only", cond)] + 1e-9


def test_ordering_checks_hand_computed():
    from backend.methods.retrieval_deformation.evaluate import ordering_checks

    def rows(condition, **values):
        return [{"variant": k.replace("_", " ").replace("plus", "+").replace("wIDO", "w/ IDO")
                 .replace("testIDO", "+ test-time IDO"),
                 "category": "chair", "condition": condition, "value": v}
                for k, v in values.items()]
    t1 = rows("points", R=2.0, RplusDF=2.1, DAR=1.5, DARplusDF=1.2, Uniform=1.1, Ours=1.09,
              Ours_wIDO=1.2, Ours_testIDO=0.9)
    t2 = rows("points oracle", DF=0.75, Uniform=0.76, Ours=0.76)
    # rows of another metric (a paired difference) do not enter the checks
    other = [{"variant": "Ours", "category": "chair", "condition": "points oracle",
              "metric": "paired_difference_x1e2", "value": -1.0}]
    got = {(r["variant"], r["condition"]): r["value"] for r in ordering_checks(t1 + t2 + other)}
    assert got == {("Ours < Uniform < DAR+DF < R", "points"): 1.0,
                   ("Ours <= 0.9 x best baseline", "points"): 0.0,  # 1.09 > 0.9 x 1.2 (DAR+DF)
                   ("Ours w/ IDO < Ours", "points"): 0.0,  # trained with IDO, can be worse
                   ("Ours + test-time IDO < Ours", "points"): 1.0,
                   ("Ours < DF, Uniform", "points oracle"): 0.0}


def test_sampling_floor_rows_measure_resampling_noise(tiny_checkpoint, tmp_path):
    import json

    from backend.core.metrics import chamfer_distance
    from backend.data.samples import sample_surface
    from backend.data.shapes import generate_shape
    from backend.methods.retrieval_deformation import evaluate

    # the first sampling is the evaluation's own; the second an independent one of the shape
    floor = evaluate.sampling_floor("chair", 2, 128)
    t = builtin_targets("chair", "test", 2, n_points=128)
    again, _, _ = sample_surface(generate_shape("chair", int(t.seeds[1])).mesh(), 128,
                                 np.random.default_rng([0, int(t.seeds[1]), 1, 1]))
    want = chamfer_distance(torch.from_numpy(t.points[1:]),
                            torch.from_numpy(again[None].astype(np.float32))).chamfer
    assert floor[1] == pytest.approx(float(want) * 1e2, rel=1e-5)
    assert np.all(floor > 0)
    # denser samples, lower floor (about 1 / points: the mean squared spacing)
    assert evaluate.sampling_floor("chair", 2, 1024).mean() < floor.mean() / 4

    out = tmp_path / "floor.json"
    assert _run(evaluate, ["--targets", "2", "--device", "cpu", "--json", str(out), "--oracle",
                           "--variant", f"Ours={tiny_checkpoint}", "--sampling-floor"]) == 0
    rows = json.loads(out.read_text())["rows"]
    n_points = json.loads((tiny_checkpoint / "config.json").read_text())["train"]["n_points"]
    floors = {r["condition"]: r["value"] for r in rows if r["variant"] == "Sampling floor"}
    assert set(floors) == {"points", "points oracle"}
    assert floors["points"] == pytest.approx(evaluate.sampling_floor("chair", 2, n_points).mean())
    assert not any("floor" in r["variant"].lower() for r in rows if r["metric"] == "holds")
    # a named cell, without any checkpoint; a malformed cell is refused by name
    assert _run(evaluate, ["--targets", "2", "--json", str(out), "--append",
                           "--sampling-floor", "table:image:64"]) == 0
    rows = json.loads(out.read_text())["rows"]
    table = [r for r in rows if r["category"] == "table"]
    assert {r["condition"] for r in table} == {"image", "image oracle"}
    assert table[0]["value"] == pytest.approx(evaluate.sampling_floor("table", 2, 64).mean())
    assert len(rows) == 5  # the chair rows kept
    for bad in ("table:mesh:64", "table:image", "table:image:0"):
        with pytest.raises(ValueError, match="CATEGORY:TARGET:POINTS"):
            evaluate.parse_floor(bad)


def test_eval_on_the_val_split_labels_its_rows_and_uses_val_targets(tiny_checkpoint, tmp_path):
    """--split val evaluates validation targets (disjoint from the test ones) and says so
    in the condition, so a val row never stands in for a test row of the tables."""
    import json

    from backend.methods.retrieval_deformation import evaluate
    from backend.methods.retrieval_deformation.data import split_seeds

    assert not set(split_seeds("chair", "val", 4)) & set(split_seeds("chair", "test", 4))
    test, _ = evaluate.evaluate_checkpoint(str(tiny_checkpoint), 3, False, False)
    val, _ = evaluate.evaluate_checkpoint(str(tiny_checkpoint), 3, False, False, split="val")
    assert not np.allclose(test, val)
    out = tmp_path / "val.json"
    assert _run(evaluate, ["--targets", "3", "--device", "cpu", "--json", str(out), "--split",
                           "val", "--variant", f"Ours={tiny_checkpoint}",
                           "--variant", f"Undeformed={tiny_checkpoint}:nodeform",
                           "--oracle-variant", f"Ours={tiny_checkpoint}", "--sampling-floor",
                           "--paired-with", "Ours"]) == 0
    rows = {(r["variant"], r["condition"]): r for r in json.loads(out.read_text())["rows"]
            if r["metric"] != "holds"}
    assert set(rows) == {("Ours", "points val"), ("Ours", "points val oracle"),
                         ("Undeformed", "points val"), ("Undeformed - Ours", "points val"),
                         ("Sampling floor", "points val"), ("Sampling floor", "points val oracle")}
    assert rows[("Ours", "points val")]["value"] == pytest.approx(val.mean())
    # the paired row: per-target differences on the same targets, with their own CI
    undeformed, _ = evaluate.evaluate_checkpoint(str(tiny_checkpoint), 3, False, False,
                                                 deform=False, split="val")
    paired = rows[("Undeformed - Ours", "points val")]
    assert paired["metric"] == evaluate.PAIRED
    assert paired["value"] == pytest.approx((undeformed - val).mean())
    assert paired["ci_low"] <= paired["value"] <= paired["ci_high"]
    with pytest.raises(ValueError, match="--paired-with 'Nope'"):
        _run(evaluate, ["--targets", "2", "--variant", f"Ours={tiny_checkpoint}",
                        "--paired-with", "Nope"])
    n_points = json.loads((tiny_checkpoint / "config.json").read_text())["train"]["n_points"]
    assert rows[("Sampling floor", "points val")]["value"] == pytest.approx(
        evaluate.sampling_floor("chair", 3, n_points, split="val").mean())


def test_sigma_k_start_equal_and_are_trained(tiny_checkpoint):
    """Every source starts with the same sigma_k (a random start is a random per-source
    temperature in Eq. 2); L_emb then moves them (the tiny run's 2 steps at least)."""
    from backend.methods.retrieval_deformation.checkpoint import build_model

    model, doc = load_checkpoint(tiny_checkpoint)
    fresh = build_model(model.config, model.library, doc["train"]["seed"])
    start = fresh.retrieval.sigma(torch.arange(len(model.library))).detach()
    assert torch.all(start == start[0]) and float(start[0]) == pytest.approx(0.5, abs=1e-5)
    trained = model.retrieval.sigma(torch.arange(len(model.library)))
    assert not torch.equal(trained.float(), start.float())
    # --sigma-start: a logit, or 'random' (N(0, 1) per source, the start before session 14)
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    for flag, want in (("-2", -2.0), ("random", None)):
        config, _ = train_cli.configs_from_args(parser.parse_args(
            ["--tiny", "--out", "x", "--sigma-start", flag]))
        assert config.sigma_start == want
    drawn = build_model(dataclasses.replace(model.config, sigma_start=None), model.library, 0)
    sigma = drawn.retrieval.sigma(torch.arange(len(model.library))).detach()
    assert len(set(sigma.tolist())) == len(sigma) and sigma.std() > 0.05
    # the option changes the sigmas only: every other parameter starts the same
    same = build_model(model.config, model.library, 0)
    for (name, a), b in zip(drawn.retrieval.state_dict().items(),
                            same.retrieval.state_dict().values()):
        assert torch.equal(a, b) == (name != "source_sigmas"), name
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--sigma-start", "small"])


def test_fit_normalization_flags_reach_training(tmp_path):
    """--fit-normalization / --sigma-power reach TrainConfig and the trained checkpoint,
    and change the run (sigma_k move differently from the default form's)."""
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    runs = {}
    for name, flags in (("default", []),
                        ("before", ["--fit-normalization", "candidates", "--sigma-power", "1"])):
        args = parser.parse_args(["--tiny", "--out", str(tmp_path / name), "--max-steps", "2",
                                  "--device", "cpu", *flags])
        assert train_cli.run(args) == 0
        runs[name], doc = load_checkpoint(tmp_path / name)
        want = ("candidates", 1) if flags else ("per_source", 2)  # the default: as printed
        assert (doc["train"]["fit_normalization"], doc["train"]["sigma_power"]) == want
    idx = torch.arange(len(runs["default"].library))
    assert not torch.equal(runs["default"].retrieval.sigma(idx), runs["before"].retrieval.sigma(idx))
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--fit-normalization", "shared"])
    # new sources are auto-decoded with the checkpoint's own form of Eq. 2
    from backend.methods.retrieval_deformation.autodecode import fit_library_checkpoint
    builtin_library("chair", 2, seed=3, n_points=256).save(tmp_path / "lib")
    for name, want in (("default", ("per_source", 2)), ("before", ("candidates", 1))):
        fitted = fit_library_checkpoint(tmp_path / name, tmp_path / "lib", FitConfig(steps=1),
                                        targets=2, progress=False)
        fit = load_checkpoint(fitted)[1]["fit"]["config"]
        assert (fit["fit_normalization"], fit["sigma_power"]) == want


def test_retrieval_gap_script_agrees_with_the_evaluation(tiny_checkpoint, tmp_path):
    """benchmarks/rd_retrieval_gap.py: on the evaluation's samples its top-1 and oracle rows
    are `evaluate_checkpoint`'s Table 1 / Table 2 / undeformed-oracle values per target;
    the rows are ordered (oracle <= best of the top 10 <= top 1); the dense measure runs."""
    import importlib.util

    from backend.methods.retrieval_deformation import evaluate

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "rd_retrieval_gap.py"
    spec = importlib.util.spec_from_file_location("rd_retrieval_gap", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    result = script.measure(str(tiny_checkpoint), "test", 3, 256)
    sparse, dense = result["table"].values()
    expect = {
        script.ROWS[0]: evaluate.evaluate_checkpoint(str(tiny_checkpoint), 3, False, False)[0],
        script.ROWS[2]: evaluate.evaluate_checkpoint(str(tiny_checkpoint), 3, False, True)[0],
        script.ROWS[3]: evaluate.evaluate_checkpoint(str(tiny_checkpoint), 3, False, True,
                                                     deform=False)[0],
    }
    for row, values in expect.items():
        assert_close(sparse[row].numpy(), values, rtol=1e-5, atol=1e-7)
    for table in sparse, dense:
        assert torch.all(table[script.ROWS[2]] <= table[script.ROWS[1]] + 1e-9)
        assert torch.all(table[script.ROWS[1]] <= table[script.ROWS[0]] + 1e-9)
        assert torch.all(table["rank"] >= 0) and torch.isfinite(table[script.ROWS[3]]).all()
    assert not torch.allclose(dense[script.ROWS[0]], sparse[script.ROWS[0]])
    # the training targets come after the library's sources in the train split
    from backend.methods.retrieval_deformation.data import split_seeds
    sources = len(load_checkpoint(tiny_checkpoint)[0].library)
    assert script.measure(str(tiny_checkpoint), "train", 2, 0)["seeds"] == split_seeds(
        "chair", "train", 2, skip=sources)
    assert sum(result["sigma_quartile_shares"]) == pytest.approx(1.0)
    # slots counted by the quartile of their source's sigma: 4 sources, one per quartile
    d2 = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 3.0, 1.0, 2.0]])
    shares = script.sigma_quartile_shares(d2, torch.tensor([0.9, 0.1, 0.5, 0.3]), top=2)
    # top-2 slots: sources 0, 1 and 0, 2; by sigma, 1 is the lowest quartile, 2 the third, 0 the top
    assert shares == [0.25, 0.0, 0.25, 0.5]
    assert script.sigma_quartile_shares(d2, torch.ones(4), top=1) == [1.0, 0.0, 0.0, 0.0]
    out = tmp_path / "gap.md"
    assert script.main([str(tiny_checkpoint), "--targets", "2", "--dense-points", "0",
                        "--md", str(out)]) == 0
    assert "| oracle, undeformed |" in out.read_text()


def test_export_fp16_halves_the_weights_and_keeps_the_predictions(tiny_checkpoint, tmp_path):
    from backend.methods.retrieval_deformation.checkpoint import export_fp16
    from backend.methods.retrieval_deformation.inference import retrieve_and_deform

    out = export_fp16(tiny_checkpoint, tmp_path / "fp16")
    state = torch.load(out / "model.pt", weights_only=True)
    assert {v.dtype for part in state.values() for v in part.values() if v.is_floating_point()} \
        == {torch.float16}
    assert (out / "model.pt").stat().st_size < 0.6 * (Path(tiny_checkpoint) / "model.pt").stat().st_size
    (m32, _), (m16, doc) = load_checkpoint(tiny_checkpoint), load_checkpoint(out)
    assert doc["storage"] == "fp16"
    pts = torch.from_numpy(builtin_targets("chair", "test", 2, n_points=256).points)
    r32, r16 = retrieve_and_deform(m32, pts, pts, 2), retrieve_and_deform(m16, pts, pts, 2)
    assert torch.equal(r32.sources, r16.sources)
    assert_close(r16.fit, r32.fit, rtol=2e-2, atol=1e-4)
    with pytest.raises(ValueError, match="exists"):
        export_fp16(tiny_checkpoint, out)


def _encoded(model, points: np.ndarray) -> torch.Tensor:
    """E_R of ``points`` (S, N, 3) in eval mode, one source at a time (naive)."""
    model.retrieval.encoder.eval()
    with torch.no_grad():
        return torch.cat([model.retrieval.encoder(torch.from_numpy(p[None])) for p in points])


def test_encoder_source_embedding_trains_and_retrieves_a_source_by_its_own_samples(tmp_path):
    """--source-embedding encoder (the authors' --use_src_encoder_retrieval): Ours and DAR
    store E_R(samples) of every source, the training step's candidate distances reach E_R
    through the sources too, a target that is a source's own samples retrieves it first at
    distance 0, new sources get E_R(samples) without fitting, and image targets are refused."""
    from backend.methods.retrieval_deformation.inference import retrieve_and_deform
    from backend.methods.retrieval_deformation.model import ModelConfig

    df, ours, dar = tmp_path / "df", tmp_path / "ours", tmp_path / "dar"
    assert _run(train_cli, ["--tiny", "--out", str(df), "--max-steps", "2",
                            "--sampling", "random_pairs"]) == 0
    assert _run(train_cli, ["--tiny", "--out", str(ours), "--max-steps", "2",
                            "--source-embedding", "encoder", "--init-deformation", str(df)]) == 0
    assert _run(train_cli, ["--baseline", "dar", "--deformation", str(df), "--out", str(dar),
                            "--source-embedding", "encoder", "--device", "cpu"]) == 0
    for path in (ours, dar):
        model, doc = load_checkpoint(path)
        assert doc["model"]["source_embedding"] == "encoder"
        stored = model.retrieval.source_embeddings.detach()
        assert_close(stored, _encoded(model, model.library.points), atol=1e-5)
        s = 2
        pts = torch.from_numpy(model.library.points[s:s + 1])
        out = retrieve_and_deform(model, pts.expand(2, -1, -1).contiguous(), None, 3,
                                  deform=False)
        assert out.sources[0, 0] == s and float(out.distance[0, 0]) < 1e-8

    # the training step's distances are differentiable in E_R through the candidates
    model, _ = load_checkpoint(ours)
    model.retrieval.train()
    cand = torch.tensor([[0, 1, 2], [3, 4, 5]])
    src = model.library.batch(cand.reshape(-1), "cpu").points
    e_t = model.retrieval.encoder(torch.from_numpy(model.library.points[[1, 4]]))
    d2 = model.retrieval.candidate_distances(e_t.detach(), cand, src)
    (grad,) = torch.autograd.grad(d2.sum(), model.retrieval.encoder.head.weight)
    assert grad.abs().max() > 0

    # new sources: E_R of their samples, not fitted
    new_lib = builtin_library("chair", 3, seed=7, n_points=256)
    targets = builtin_targets("chair", "train", 4, seed=0, skip=6, n_points=256)
    fitted, _ = fit_source_codes(model, new_lib, targets, FitConfig(steps=3, batch_size=2, k=2))
    assert_close(fitted.retrieval.source_embeddings.detach(), _encoded(fitted, new_lib.points),
                 atol=1e-5)
    assert not fitted.retrieval.source_embeddings.requires_grad

    with pytest.raises(ValueError, match="point targets"):
        ModelConfig(target="image", source_embedding="encoder")


@pytest.mark.parametrize("embedding", ["autodecode", "encoder"])
def test_resumed_dar_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, embedding,
                                                                    monkeypatch):
    """DAR with resume: stopped after step 1, resumed and stopped after step 3, then resumed
    to the end, it writes bit-identical retrieval weights to a run straight through
    (weights, optimiser moments and random streams restored); the state file is gone once
    it finishes, and a state from another DAR training is refused, naming what differs."""
    from backend.methods.retrieval_deformation import baselines
    from backend.methods.retrieval_deformation.baselines import train_dar

    df = tmp_path / "df"
    assert _run(train_cli, ["--tiny", "--out", str(df), "--max-steps", "2",
                            "--sampling", "random_pairs"]) == 0

    def dar(out, **kw):
        return train_dar(str(df), str(out), 5, device="cpu", progress=False,
                         source_embedding=embedding, **kw)

    dar(tmp_path / "straight")
    out = tmp_path / "resumed"
    assert dar(out, resume=True, stop_at=1) is None
    assert (out / train_cli.STATE_FILE).is_file() and not (out / "model.pt").exists()
    assert dar(out, resume=True, stop_at=3) is None
    summary = dar(out, resume=True)
    assert summary["resumed_at_step"] == 3 and summary["steps"] == 5
    assert not (out / train_cli.STATE_FILE).exists()
    straight = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["retrieval"]
    resumed = torch.load(out / "model.pt", weights_only=True)["retrieval"]
    assert straight.keys() == resumed.keys()
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key
    # a resume that restores the weights but not the random streams ends elsewhere
    restore = baselines._load_dar_state

    def forgetful(path, retrieval, opt, rng, gen, key):
        position = restore(path, retrieval, opt, rng, gen, key)
        rng.bit_generator.state = np.random.default_rng(0).bit_generator.state
        gen.manual_seed(0)
        return position

    monkeypatch.setattr(baselines, "_load_dar_state", forgetful)
    mutant = tmp_path / "mutant"
    dar(mutant, resume=True, stop_at=3)
    dar(mutant, resume=True)
    other = torch.load(mutant / "model.pt", weights_only=True)["retrieval"]
    assert not all(torch.equal(v, other[k]) for k, v in straight.items())
    monkeypatch.undo()
    # another seed's state is refused
    dar(tmp_path / "seeded", resume=True, stop_at=1)
    with pytest.raises(ValueError, match="differs in seed"):
        train_dar(str(df), str(tmp_path / "seeded"), 5, device="cpu", seed=1, progress=False,
                  source_embedding=embedding, resume=True)
