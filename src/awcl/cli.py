"""The ``awcl`` command. Every sub-command is a thin call into the Python API.

Each step package registers its own sub-commands (``register(subparsers)``), so the command
line follows the data flow: prepare/info -> pretrain -> finetune/embed -> study/demo.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import sys

from awcl import __version__, logs
from awcl.errors import AwclError

# (module, function) pairs, in the order of the flow; each adds its sub-commands.
_REGISTRARS = [
    ("awcl.data.cli", "register"),
    ("awcl.train.cli", "register"),
    ("awcl.train.export", "register"),
    ("awcl.evaluate.cli", "register"),
    ("awcl.study.cli", "register"),
]


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` shows every option's default, unless its help text already names one.

    (argparse's ArgumentDefaultsHelpFormatter would also print ``default: None`` for options
    whose real default is filled in later, and ``default: False`` for plain switches.)
    """

    def _format_action(self, action: argparse.Action) -> str:
        d = _default_text(action)
        if not action.help and d is not None:  # argparse prints no help line for help=None
            action = copy.copy(action)
            action.help = f"(default: {d.replace('%', '%%')})"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        d = _default_text(action)
        if d is None or "default" in (action.help or "").lower():
            return action.help
        return f"{action.help or ''} (default: {d.replace('%', '%%')})".strip()


def _default_text(action: argparse.Action) -> str | None:
    """The default of an option as the user would type it, or None when there is nothing
    worth showing (no default, a switch, a positional, a suppressed option)."""
    d = action.default
    if (
        d is None
        or d is argparse.SUPPRESS
        or isinstance(d, bool)
        or d == []
        or not action.option_strings
        or action.help == argparse.SUPPRESS
    ):
        return None
    if isinstance(d, tuple):
        return "x".join(str(v) for v in d)  # sizes (H, W) are written HxW on the command line
    return str(d)


VERBOSE_HELP = "print every warning and debug messages (default: one summary per kind of warning)"


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in dict.fromkeys(action.choices.values()):  # aliases map to one parser
                out.append(p)
                out.extend(_subparsers(p))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="awcl",
        description="Anatomy-aware contrastive pretraining for ultrasound, baselines and transfer studies.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"awcl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module, func in _REGISTRARS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            continue  # step not installed in this build
        getattr(mod, func)(sub)
    for p in _subparsers(parser):
        p.formatter_class = DefaultsHelpFormatter
        if "--verbose" not in p._option_string_actions:
            # also accepted after the sub-command (``awcl prepare images ... --verbose``);
            # SUPPRESS keeps a ``-v`` given before the sub-command
            p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                           help=VERBOSE_HELP)  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    try:
        with logs.summarized(verbose=verbose):  # its summary is printed before the error line
            rc = args.func(args)
    except AwclError as err:
        print(f"awcl: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only or full output folder: one line naming the path
        where = err.filename or getattr(args, "out", None) or "output"
        print(f"awcl: error: {where}: {err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("awcl: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
