"""The server and the worker never import torch (DESIGN.md): only the trainer's `[train]` extra needs it."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import server.__main__, server.app, server.retrieval.two_tower, server.retrieval.registry
import feature_worker.__main__, feature_worker.lake.sink
import server.retrieval.bundles, trainer.evaluation.two_tower
loaded = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
print(",".join(loaded))
"""


def test_serving_modules_do_not_import_torch() -> None:
    # A fresh interpreter: this test session may have imported torch for the trainer's tests.
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
