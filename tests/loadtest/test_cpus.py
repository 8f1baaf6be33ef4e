"""`--client-cpus` of the load tools: the tool and what it starts pinned, a bad list refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loadtest.harness.children import ROOT
from trainer.generate import generate_shop

PINNED_CHILD = """
import argparse, subprocess, sys
from loadtest.harness.cpus import pin_client
from server.affinity import process_cpus
pin_client(sys.argv[1], argparse.ArgumentParser())
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
try:
    print(sorted(process_cpus(child.pid)), sorted(process_cpus(__import__("os").getpid())))
finally:
    child.kill()
"""


def test_the_tool_and_the_load_generator_it_starts_are_pinned() -> None:
    cpu = max(os.sched_getaffinity(0))
    result = subprocess.run(
        [sys.executable, "-c", PINNED_CHILD, str(cpu)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split("] [") == [f"[{cpu}", f"{cpu}]\n"]


def test_ghz_bench_refuses_a_cpu_it_cannot_use() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.ghz_bench", "--phases", "ratio", "--client-cpus", "4095"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--client-cpus: CPU 4095 is not available to this process" in result.stderr


def test_recommend_latency_pins_the_server_it_starts_and_itself_apart(tmp_path: Path) -> None:
    # The tool starts its server first and pins itself after: a server started by a pinned tool would inherit
    # the tool's CPUs and refuse its own.
    shop = tmp_path / "shop"
    generate_shop(60, 40, 1, shop, progress=False)
    cpus = sorted(os.sched_getaffinity(0))
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.recommend_latency", "--shop", str(shop), "--requests", "20"]
        + ["--server-cpus", str(cpus[-1]), "--client-cpus", str(cpus[0])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "client round trip" in result.stdout and "over 20 calls" in result.stdout
