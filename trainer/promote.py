"""``python -m trainer promote|rollback|bundles``: choose which model bundle is served.

    python -m trainer promote --bundles DIR VERSION   # serve VERSION (must be a complete bundle)
    python -m trainer rollback --bundles DIR          # undo the last promotion
    python -m trainer bundles --bundles DIR           # list the bundles; the served one is marked

The three commands share this module (``trainer.__main__`` maps each name to a module); ``configure`` tells them
apart by the sub-command's name, the last word of ``parser.prog``. The pointer files and their atomic
replacement are ``server.retrieval.bundles``'s; this module never imports torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.retrieval import bundles


def _command(parser: argparse.ArgumentParser) -> str:
    return parser.prog.rsplit(" ", 1)[-1]


def configure(parser: argparse.ArgumentParser) -> None:
    command = _command(parser)
    parser.add_argument("--bundles", type=Path, required=True, help="the bundles directory")
    if command == "promote":
        parser.add_argument("version", help="the bundle version to serve")
    parser.set_defaults(bundle_command=command)


def run(args: argparse.Namespace) -> int:
    root: Path = args.bundles
    try:
        if args.bundle_command == "promote":
            bundles.promote(root, args.version)
            print(f"promoted {args.version}: {root / bundles.CURRENT} now names it")
        elif args.bundle_command == "rollback":
            version = bundles.rollback(root)
            print(f"rolled back: {version} is served again")
        else:
            print(listing(root))
    except bundles.BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def listing(root: Path) -> str:
    """One line per complete bundle: ``*`` marks the served one, with its validation NDCG@10 and index."""
    served = bundles.current(root)
    lines = []
    for version in bundles.versions(root):
        try:
            meta = bundles.bundle(root, version).read_meta()
        except bundles.BundleError as exc:
            lines.append(f"  {version}  ({exc})")
            continue
        metrics = meta.get("metrics", {})
        index = meta.get("index", {})
        ndcg = metrics.get("NDCG@10")
        summary = f"valid NDCG@10 {ndcg:.4f}" if isinstance(ndcg, float) else "no metrics"
        lines.append(
            f"{'*' if version == served else ' '} {version}  {meta.get('items', '?')} items, "
            f"{index.get('kind', '?')}, {summary}, data {meta.get('data', {}).get('dataset', '?')}"
        )
    if not lines:
        return f"no bundles in {root}"
    return "\n".join(lines)
