"""Installing a Debian package the test services need (redis-server, nginx) when its binary is missing.

CI machines are fresh Debian: the services' own files install what they need. Installing needs root and
apt-get; elsewhere this raises with what to install. A file lock keeps two test sessions from running apt-get at
once. On a machine without an init system a package does not start a daemon of its own (invoke-rc.d blocks it).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

from loadtest.harness.services.process import STATE_ROOT, ServiceStartError


def ensure_package(package: str, find: Callable[[], str | None], hint: str = "") -> str:
    """The path ``find()`` returns, installing Debian's ``package`` first if it returns None.

    ``hint`` is added to the error when installing is impossible here (what else the user may do).
    """
    found = find()
    if found is not None:
        return found
    apt_get = shutil.which("apt-get")
    if apt_get is None or os.geteuid() != 0:
        raise ServiceStartError(
            f"{package} is not installed and cannot be installed here (needs root and apt-get): "
            f"install Debian's {package} package{hint}"
        )
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(STATE_ROOT / "apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find()  # another session may have installed it while we waited
        if found is not None:
            return found
        print(f"{package} is missing: installing Debian's {package} package ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            [apt_get, "update", "-q"],
            [
                apt_get,
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "-o",
                "DPkg::Lock::Timeout=120",  # wait for an apt-get that someone else runs, rather than fail
                package,
            ],
        ):
            result = subprocess.run(
                command, check=False, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
            )
            if result.returncode != 0:
                output = (result.stdout + result.stderr)[-4000:]
                raise ServiceStartError(f"`{' '.join(command)}` failed (exit {result.returncode}):\n{output}")
        print(f"Installed {package} in {time.monotonic() - started:.1f}s.", file=sys.stderr, flush=True)
    found = find()
    if found is None:
        raise ServiceStartError(f"apt-get installed {package}, but no binary was found")
    return found
