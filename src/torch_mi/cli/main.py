"""Entry point of ``torch-mi``: parse, dispatch, and turn every expected failure into one
line on stderr with a non-zero exit code (never a traceback)."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import MIError

COMMANDS = ("lens", "predict", "generate", "attention", "knockout", "steer", "patch", "inspect",
            "download", "memory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torch-mi",
        description="Mechanistic interpretability for language models (PyTorch).")
    parser.add_argument("--verbose", action="store_true", help="show full error details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f".commands.{name}", __package__)
        module.register(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    more = f" (+{len(lines) - 1} more lines; rerun with --verbose)" if len(lines) > 1 else ""
    return lines[0] + more


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (MIError, OSError, ValueError) as exc:
        detail = str(exc) if args.verbose else _one_line(exc)
        sys.stderr.write(f"torch-mi {args.command}: error: {detail}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("torch-mi: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
