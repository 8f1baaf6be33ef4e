"""`python -m feature_worker.privacy.master_key FILE`: write a new random master key (mode 600) unless FILE exists.

For development (`make master-key` writes `.keys/master.key`). In production keep the key in a secret store
(Vault, KMS-decrypted at boot, a Kubernetes secret mounted read-only) and point `AISLE_MASTER_KEY_FILE` at it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from feature_worker.privacy.sealing import write_master_key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m feature_worker.privacy.master_key", description=__doc__)
    parser.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if write_master_key(args.file):
        print(f"wrote a new master key to {args.file}")
    else:
        print(f"{args.file} exists; left as it is")


if __name__ == "__main__":
    main()
