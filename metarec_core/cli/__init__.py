"""The ``python -m metarec_core`` command line: one sub-command module per concept.

Every module in this package that defines ``register(subparsers)`` adds its
sub-commands; each sub-command sets ``func`` to a callable taking the parsed
arguments and returning an exit code. Errors metarec raises on purpose
(:class:`~metarec_core.errors.MetarecError`) are printed as one line.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from metarec_core.errors import MetarecError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="python -m metarec_core",
        description="Cold-start recommendation with meta-learning and transfer learning.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    from metarec_core.device import keep_freed_memory

    keep_freed_memory()  # a command-line process: trade a little resident memory for far fewer page faults
    try:
        return int(args.func(args) or 0)
    except MetarecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `... | head`): stop quietly, and keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback unless asked
        if args.verbose:
            logging.getLogger("metarec_core").exception("unexpected error")
        print(f"error: metarec failed ({type(exc).__name__}: {exc}); run again with -v for where, and report it with the command", file=sys.stderr)
        return 1
