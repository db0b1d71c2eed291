"""Merge one cell's results file into the main retrieval_deformation table (issue 4).

    python benchmarks/rd_merge.py SOURCE.json [--into benchmarks/results/retrieval_deformation.json]
        [--keep VARIANT ...] [--note TEXT]

Rows of SOURCE replace the rows of the target file with the same (variant, category,
condition), the rule `shapebridge eval retrieval_deformation --append` uses; the "holds" rows
are recomputed over the merged rows (`ordering_checks`). ``--keep VARIANT`` leaves the
target's rows of that variant as they are, for the cells whose shipped checkpoint did not
change (their Ours rows are the shipped one's, not the new run's). SOURCE's command and the
note are appended to the target's command record, so the merged file says where each row
came from.
"""
from __future__ import annotations

import argparse
import sys

from backend.bench.results import COMMAND_SEPARATOR, previous_results, write_results
from backend.methods.retrieval_deformation.evaluate import CONVENTION, ordering_checks


def merge(source: list[dict], target: list[dict], keep: set[str]) -> list[dict]:
    """Target rows with source's rows swapped in by (variant, category, condition), the
    source rows of ``keep`` variants left out and the "holds" rows recomputed."""
    new = [r for r in source if r.get("metric") != "holds" and r["variant"] not in keep]
    key = {(r["variant"], r["category"], r["condition"]) for r in new}
    rows = [r for r in target if r.get("metric") != "holds"
            and (r["variant"], r["category"], r["condition"]) not in key] + new
    return rows + ordering_checks(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source")
    parser.add_argument("--into", default="benchmarks/results/retrieval_deformation.json")
    parser.add_argument("--keep", action="append", default=[],
                        help="variant whose rows in the target stay (repeatable)")
    parser.add_argument("--note", default="", help="appended to the command record")
    args = parser.parse_args(argv)
    source, source_commands = previous_results(args.source)
    target, commands = previous_results(args.into)
    if not source or not target:
        raise SystemExit(f"no rows in {args.source if not source else args.into}")
    rows = merge(source, target, set(args.keep))
    note = (f"# merged from {args.source} by benchmarks/rd_merge.py"
            + (f" (kept this file's rows of {', '.join(args.keep)})" if args.keep else "")
            + (f": {args.note}" if args.note else ""))
    write_results("retrieval_deformation", "eval", rows, args.into,
                  f"Retrieval and deformation, Table 1 and Table 2 (oracle): {CONVENTION}; "
                  f"'holds' rows: the issue's orderings (1 = holds)",
                  COMMAND_SEPARATOR.join(commands + source_commands + [note]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
