"""Running `python -m server` to a start-up refusal: no AISLE_* setting but the test's, an empty env file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from loadtest.harness.children import ROOT


def start_refused(
    tmp_path: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m server --port 0 --data-dir <tmp_path>/data <args>`` until it exits; the caller checks the
    exit code and the reason (and that ``<tmp_path>/data`` was never made)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AISLE_")}
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    command = [sys.executable, "-m", "server", "--port", "0", "--data-dir", str(tmp_path / "data")]
    return subprocess.run(
        [*command, "--env-file", str(env_file), *args],
        check=False,
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
