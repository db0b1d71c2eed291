"""The shipped checkpoints (backend/zoo) keep the project's rules: each is at most 25 MB with
what it needs to run, has a model card giving its training command, seed, commit and the
eval command of its metrics, and is listed in backend/zoo/README.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT

ZOO = ROOT / "backend" / "zoo"
LIMIT = 25_000_000


def _checkpoints() -> list[tuple[str, Path, Path]]:
    """(name, what ships, its model card) for every checkpoint in the zoo."""
    out = []
    for pt in sorted((ZOO / "feature_matching").glob("*.pt")):
        out.append((f"feature_matching/{pt.name}", pt, pt.with_suffix(".md")))
    for d in sorted(p for p in (ZOO / "retrieval_deformation").iterdir() if p.is_dir()):
        out.append((f"retrieval_deformation/{d.name}", d, d / "MODEL_CARD.md"))
    return out


CHECKPOINTS = _checkpoints()


def test_the_zoo_is_not_empty():
    names = {name for name, _, _ in CHECKPOINTS}
    assert {"feature_matching/chair.pt", "retrieval_deformation/chair_points"} <= names


@pytest.mark.parametrize("name, path, card", CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_checkpoint_size_card_and_listing(name, path, card):
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    assert size <= LIMIT, f"{name}: {size / 1e6:.1f} MB with what it needs, over 25 MB"
    assert card.is_file(), f"{name} has no model card ({card.name})"
    text = card.read_text()
    for needed in ("shapebridge train", "shapebridge eval", "seed", "commit"):
        assert needed in text, f"the card of {name} does not give its {needed!r}"
    assert f"`{name}`" in (ZOO / "README.md").read_text(), (
        f"{name} is not listed in backend/zoo/README.md")
    if path.is_dir():  # retrieval_deformation: its config, library and measured rows
        config = json.loads((path / "config.json").read_text())
        assert config["storage"] == "fp16"
        assert (path / "library" / "manifest.json").is_file()
        rows = json.loads((path / "eval.json").read_text())["rows"]
        assert any(r["variant"] == "Ours" and r["n"] >= 200 for r in rows), (
            f"{name}: eval.json has no Ours row on >= 200 test targets")
