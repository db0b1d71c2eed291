"""Structure rules read from the code (nothing executed): who may import what."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a file imports, at any depth (also inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module", "__import__"
        ) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names.add(node.args[0].value.split(".")[0])
    return names


def files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", files("backend"), ids=lambda p: str(p.relative_to(ROOT)))
def test_backend_never_imports_bpy(path):
    bad = imported_modules(path) & {"bpy", "bpy_extras", "bmesh", "mathutils"}
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: the backend must never import Blender modules"


@pytest.mark.parametrize("path", files("blender_addon"), ids=lambda p: str(p.relative_to(ROOT)))
def test_addon_never_imports_torch_or_backend(path):
    bad = imported_modules(path) & {"torch", "pytorch3d", "backend", "torchvision"}
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: Blender must never import torch or the backend"


@pytest.mark.parametrize("module", ["protocol.py", "client/client.py", "conventions.py"])
def test_shared_modules_need_only_numpy_msgpack_zmq(module):
    allowed = {"numpy", "msgpack", "zmq", "__future__"}
    stdlib = set(__import__("sys").stdlib_module_names)
    extra = imported_modules(ROOT / "blender_addon" / module) - allowed - stdlib
    assert not extra, f"blender_addon/{module} imports {extra}; it must run with numpy + msgpack (+ pyzmq)"


def test_addon_package_imports_no_bpy_at_top_level():
    """The backend imports blender_addon.protocol, which runs blender_addon/__init__.py."""
    tree = ast.parse((ROOT / "blender_addon" / "__init__.py").read_text())
    top = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(m and m.split(".")[0] == "bpy" for m in top)


def test_the_rule_checker_catches_violations(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("def f():\n    import bpy.types\n    from torch import nn\n    importlib.import_module('bmesh')\n")
    assert {"bpy", "torch", "bmesh"} <= imported_modules(f)


def test_readme_opens_with_the_two_commands_and_carries_the_tested_example():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split()[:2] for line in first_block] == [["make", "demo"], ["make", "test"]]
    # the scripting example is the one tests/test_addon_bpy.py runs from docs/addon.md
    doc = (ROOT / "docs" / "addon.md").read_text()
    example = doc.split("```python\n# shapebridge_batch.py", 1)[1].split("```", 1)[0]
    assert "# shapebridge_batch.py" + example in readme
