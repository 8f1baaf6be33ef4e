"""`--client-cpus` of the load tools: the load generator on CPUs of its own, the server (`--cpus`) on the others.

On a small machine a load generator and the server it measures otherwise share every core: the scheduler moves
both between them, and what is measured is partly that (BENCHMARKS.md, issue 9, tenth pass).
"""

from __future__ import annotations

import argparse

from server.affinity import check_available, parse_cpu_list, pin_process

HELP = "run this tool (and the ghz it starts) on these CPUs only, a Linux CPU list such as 0 (default: any)"


def client_cpus(text: str | None, parser: argparse.ArgumentParser) -> tuple[int, ...]:
    """The CPUs ``text`` names, checked (a bad list is the parser's error); empty when None."""
    if text is None:
        return ()
    try:
        cpus = parse_cpu_list(text)
        check_available(cpus)
    except ValueError as exc:
        parser.error(f"--client-cpus: {exc}")
    return cpus


def pin_client(text: str | None, parser: argparse.ArgumentParser) -> None:
    """Pin this process and the children it starts from now on to the CPUs ``text`` names; nothing when None.

    A tool that starts the server itself pins after that: the server would inherit the tool's CPUs.
    """
    pin_process(client_cpus(text, parser))
