"""``python -m kaito_sdk.crd write|check CHARTS_DIR [--docs FILE]``: regenerate or
drift-check the CRDs (and, with ``--docs``, the generated CRD reference page)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kaito_sdk.crd.files import check_files, write_files
from kaito_sdk.crd.reference import render_reference


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (1 when ``check`` finds drift)."""
    parser = argparse.ArgumentParser(
        prog="python -m kaito_sdk.crd",
        description="Generate the KAITO CRD YAML from the kaito_sdk.api models.",
    )
    parser.add_argument("command", choices=("write", "check"), help="write or drift-check")
    parser.add_argument("charts", type=Path, help="the charts/ folder of the repository")
    parser.add_argument("--docs", type=Path, help="also the CRD reference page (Markdown)")
    args = parser.parse_args(argv)
    if args.command == "write":
        for path in write_files(args.charts):
            print(f"wrote {path}")
        if args.docs is not None:
            args.docs.write_text(render_reference(), encoding="utf-8")
            print(f"wrote {args.docs}")
        return 0
    problems = check_files(args.charts)
    if args.docs is not None and (
        not args.docs.exists() or args.docs.read_text(encoding="utf-8") != render_reference()
    ):
        problems.append(f"{args.docs} differs from what the models generate")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(
            "CRD drift: the generated files are out of date with the models; run `nox -s crds` "
            "and commit the result.",
            file=sys.stderr,
        )
        return 1
    print("CRDs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
