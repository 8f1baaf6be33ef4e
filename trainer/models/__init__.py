"""The trainer's models. ``two_tower`` needs torch (the ``[train]`` extra); ``sequences`` needs numpy only.

Nothing here imports torch at import time: call :func:`require_torch` first for a readable error when it is
missing.
"""

from __future__ import annotations

TRAIN_EXTRA_HINT = "install with `pip install -e '.[train]'`"


class MissingTrainDependency(ImportError):
    """torch or onnx is not installed; the message says how to install them."""


def require_torch() -> None:
    """Raise `MissingTrainDependency` unless torch and onnx can be imported."""
    for module in ("torch", "onnx"):
        try:
            __import__(module)
        except ImportError as exc:
            raise MissingTrainDependency(
                f"`python -m trainer train` needs {module}, which is not installed: {TRAIN_EXTRA_HINT}"
            ) from exc
