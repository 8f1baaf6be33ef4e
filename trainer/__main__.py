"""``python -m trainer COMMAND ...``: the trainer's command line.

Each command lives in its own module, which has ``configure(parser)`` to add its arguments and ``run(args)`` to
do the work and return the exit status. Only the module of the command being run is imported, so that a light
command such as ``generate`` works without the heavy dependencies of another (torch for training): to add a
command, write its module and add a line to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("trainer.generate", "write a deterministic generated shop: items, users and events"),
    "evaluate": ("trainer.evaluate", "measure accuracy through the serving path, beside baselines"),
    "train": (
        "trainer.train",
        "train the two-tower model and write a model bundle (needs the [train] extra)",
    ),
    "promote": ("trainer.promote", "serve a bundle: make VERSION the current one"),
    "rollback": ("trainer.promote", "undo the last promotion"),
    "bundles": ("trainer.promote", "list the bundles and which one is served"),
    "experiment-report": (
        "trainer.experiments.report",
        "analyse an experiment from the lake: per-variant metrics with intervals, SRM, CUPED, sequential test",
    ),
    "simulate-experiment": (
        "trainer.experiments.simulate",
        "run simulated customers against a live server with two variants, then report",
    ),
}


class Command(Protocol):
    """What a command module provides."""

    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """The parser for ``argv``, with the arguments of the command that ``argv`` names."""
    parser = argparse.ArgumentParser(prog="python -m trainer", description="Aisle's offline tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        if argv and argv[0] == name:
            command = cast(Command, importlib.import_module(module_name))
            command.configure(subparser)
            subparser.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the process arguments), run the command and return its exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(arguments).parse_args(arguments)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
