"""Where the serving path's compiled numba kernels are cached: a directory named by the sources they come from.

numba's ``cache=True`` finds a kernel's cached machine code by the time stamp and size of the kernel's own file, and
compiles the module globals the kernel reads in as constants. A kernel that reads a constant of another module
(`server.ranking.features` reads the number of candidate sources from `server.retrieval.candidates`, and the item
rows' columns from `server.retrieval.item_rows`) would therefore be loaded stale after only that other module
changed (a ``git pull``), and would silently write its features into the wrong columns. So the cache directory is
named by a digest of every source file of ``server`` and ``feature_worker``: any change compiles every kernel anew
(once; ``make install`` does it), and the directories of older digests are removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from numba.core import config

#: The packages whose modules kernels are compiled from, or read constants of.
_PACKAGES = ("server", "feature_worker")
_ROOT = Path(__file__).resolve().parent.parent


def sources_digest(root: Path = _ROOT) -> str:
    """A digest of the path and contents of every ``.py`` file of `_PACKAGES` under ``root``."""
    digest = hashlib.blake2b(digest_size=8)
    for package in _PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def configure() -> Path:
    """Point numba's cache at ``<base>/<digest>`` (``base``: ``$NUMBA_CACHE_DIR``, else ``server/__pycache__/
    numba``) before any kernel is defined; returns that directory."""
    base = Path(
        os.environ.get("NUMBA_CACHE_DIR") or Path(__file__).resolve().parent / "__pycache__" / "numba"
    )
    current = base / sources_digest()
    if base.is_dir():
        for stale in base.iterdir():
            if stale != current and stale.is_dir() and len(stale.name) == 16:
                shutil.rmtree(stale, ignore_errors=True)  # another process may be removing it too
    # numba's settings are module attributes set at import, which its type information does not declare.
    setattr(config, "CACHE_DIR", str(current))  # noqa: B010
    return current


def cache_dir() -> str:
    """numba's cache directory now ("" when none is set)."""
    return str(getattr(config, "CACHE_DIR", "") or "")
