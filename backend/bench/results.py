"""The one writer of results files (SPEC section 9): a printed table, JSON and markdown.

A row is a dict with the keys ``variant, category, condition, metric, value, ci_low,
ci_high, n``; all but ``metric`` and ``value`` may be absent or None.
"""

from __future__ import annotations

import datetime
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Literal

COMMAND_SEPARATOR = " ;; "
"""Joins the commands of several runs that wrote one results file (``--append``)."""

COLUMNS: tuple[str, ...] = (
    "variant", "category", "condition", "metric", "value", "ci_low", "ci_high", "n"
)


def git_commit() -> str:
    """``git rev-parse HEAD`` of the working directory, or "unknown" outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def device_name() -> str:
    """"cpu", or the CUDA device name when torch sees a GPU."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    """Rows as a markdown table; columns that are empty in every row are left out."""
    cols = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def previous_results(path: str | Path | None) -> tuple[list[dict], list[str]]:
    """Rows and commands of an existing results file, for runs that append to it.

    Returns ([], []) when ``path`` is None or no file is there. The commands are those the
    file records, split at `COMMAND_SEPARATOR`.
    Raises ValueError naming the file when it is not a results file (JSON with "rows").
    """
    if path is None or not Path(path).is_file():
        return [], []
    try:
        doc = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a results file: {err}") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise ValueError(f"{path} is not a results file: it has no 'rows' list")
    return list(doc["rows"]), [c for c in str(doc.get("command", "")).split(COMMAND_SEPARATOR) if c]


def write_results(
    name: str,
    kind: Literal["eval", "bench"],
    rows: list[dict],
    json_path: str | None,
    title: str,
    command: str | None = None,
) -> str:
    """Print ``rows`` as a markdown table and, with ``json_path``, write the results files.

    Writes ``json_path`` (name, kind, commit, device, created, command, rows) and the same
    path with a ``.md`` suffix (title, the command, the table); ``command`` defaults to
    this process's command line. Returns the table text.
    Raises ValueError on an unknown kind, a row without metric/value, or unknown keys.
    """
    if kind not in ("eval", "bench"):
        raise ValueError(f"kind must be 'eval' or 'bench'; got {kind!r}")
    for i, row in enumerate(rows):
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"row {i} has unknown keys {sorted(unknown)}; use {COLUMNS}")
        if row.get("metric") is None or row.get("value") is None:
            raise ValueError(f"row {i} needs a 'metric' and a 'value': {row}")
    table = markdown_table(rows)
    print(f"{title}\n\n{table}")
    if json_path is not None:
        command = command or " ".join(sys.argv)
        doc = {
            "name": name,
            "kind": kind,
            "commit": git_commit(),
            "device": device_name(),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": command,
            "rows": [{c: row.get(c) for c in COLUMNS if c in row} for row in rows],
        }
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        md = (
            f"# {title}\n\n`{command}`\n\ncommit `{doc['commit']}`, device {doc['device']}, "
            f"{doc['created']}\n\n{table}"
        )
        path.with_suffix(".md").write_text(md)
    return table
