"""Entry point of ``torch-mi``: parse, dispatch, and turn every failure into one line on
stderr with a non-zero exit code: 2 for a usage error (unknown option, a value of the wrong
type), 1 for everything else, expected or not. ``--debug`` adds the traceback."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
import traceback

from ..errors import MIError

COMMANDS = ("lens", "predict", "generate", "attention", "knockout", "steer", "patch", "inspect",
            "download", "memory", "state-knockout", "features", "feature-steer", "graph",
            "harvest", "attribute")
EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class UsageError(Exception):
    """An argparse usage error, raised instead of argparse's print-usage-and-exit."""


# A negative number or a comma list starting with one ("-1", "-0.5", "-1,3", "-1,-2"): an
# option's value, never an option name (argparse's own pattern misses the lists, so
# ``--edge -1,3`` failed with "expected one argument").
NEGATIVE_VALUE = re.compile(r"^-(\d+\.?\d*|\.\d+)(,\s*-?(\d+\.?\d*|\.\d+))*$")


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (with the --help hint), not a usage
    block plus ``SystemExit``, and which reads ``-1,3`` as a value; subcommand parsers
    inherit this class."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_VALUE  # read by argparse's option parsing

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _add_flags(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--verbose", action="store_true", default=default,
                        help="show every line of an error message (one line by default)")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the Python traceback of an error")


def build_parser() -> Parser:
    parser = Parser(prog="torch-mi",
                    description="Mechanistic interpretability for language models (PyTorch).")
    _add_flags(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f".commands.{name.replace('-', '_')}", __package__)
        module.register(sub)
    for subparser in sub.choices.values():  # also after the command: torch-mi lens x --debug
        _add_flags(subparser, argparse.SUPPRESS)
    return parser


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    more = f" (+{len(lines) - 1} more lines; rerun with --verbose)" if len(lines) > 1 else ""
    return lines[0] + more


def _silence_stdout() -> None:
    """After EPIPE (``torch-mi ... | head``), point stdout at /dev/null so the interpreter's
    final flush does not print a second error."""
    with contextlib.suppress(OSError, ValueError):  # no real stdout (in-process capture)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _report(args: argparse.Namespace, exc: BaseException) -> int:
    """Write the failure as one line (after the traceback with --debug); the exit code."""
    if isinstance(exc, BrokenPipeError):
        _silence_stdout()
    if args.debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, KeyboardInterrupt):
        sys.stderr.write("torch-mi: interrupted\n")
        return EXIT_INTERRUPTED
    detail = str(exc).strip() if args.verbose else _one_line(exc)
    if isinstance(exc, (MIError, OSError)):
        sys.stderr.write(f"torch-mi {args.command}: error: {detail}\n")
    else:  # a bug in torch-mi or below it: still one line, and how to see more
        hint = "" if args.debug else "; rerun with --debug for the traceback"
        sys.stderr.write(f"torch-mi {args.command}: internal error "
                         f"({type(exc).__name__}): {detail}{hint}\n")
    return EXIT_FAILURE


def main(argv: list[str] | None = None) -> int:
    """Run one command; the process exit code (0 success, 1 failure, 2 usage, 130 ^C)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help printed its text
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:  # every failure ends as one line
        return _report(args, exc)
    except SystemExit as exc:  # rich exits 1 on a closed stdout, after silencing it
        return exc.code if isinstance(exc.code, int) else EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
