"""`ulvm <command>`: the one front door for humans. Argument parsing only.

Each group module registers its sub-commands; every command is a thin call into the package.
User errors (`ulvm.errors.UlvmError`) are printed as one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import UlvmError
from . import book, data, deploy, engine, explain, model, sweep, tryit

GROUPS = (model, data, engine, sweep, deploy, explain, book, tryit)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ulvm", description="UltraLight VM-UNet: model, data, training and the reproduction book.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def working_folder_exists() -> None:
    """Refuse to start in a deleted working folder, with a message that says so.

    A shell (or a worker process) can outlive its folder: removed, or replaced by a fresh copy of the same
    path. Started there, torch's first matrix product aborts the whole process with "Intel oneMKL FATAL
    ERROR: Cannot load libtorch_cpu.so", which names the wrong culprit.
    """
    try:
        os.getcwd()
    except FileNotFoundError:
        raise UlvmError("the current working folder no longer exists (it was deleted or replaced after this "
                        "shell or process entered it); cd into an existing folder and run again") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        working_folder_exists()
        return int(args.func(args) or 0)
    except UlvmError as error:
        print(f"ulvm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ulvm {args.command}: interrupted", file=sys.stderr)
        return 130
