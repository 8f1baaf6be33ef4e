"""``python -m trainer evaluate``: accuracy of the serving path, beside baselines, on real or generated data.

    python -m trainer evaluate --data DIR --format s3rec|s3rec-time|diginetica|taobao|generated \\
        --protocol loo|replay|time-split [--split valid|test] [--seeds N] [--json OUT.json] \\
        [--bundle BUNDLE_DIR [--two-tower-weights W,W,...]] [--strict]

prints one markdown row per model or pipeline configuration and writes the same as JSON::

    {"dataset": str, "protocol": str, "split": str,
     "results": [{"model": str, "HR@10": float, "NDCG@10": float, "HR@20": float, "NDCG@20": float,
                  "MRR": float, "coverage@10": float, "seconds": float}]}

The row ``aisle`` is the serving pipeline exactly as the server builds it by default
(``trainer.evaluation.serving``); ``aisle:…`` rows are other configurations of it. Protocols are described in
``trainer.evaluation.protocols``, metrics in ``trainer.evaluation.metrics``.

``--bundle DIR`` (a model bundle directory, ``server.retrieval.bundles``) serves that bundle in every ``aisle`` row,
as a server serving it would (the learned source joins the blend), and adds the row ``two_tower``: the bundle's
learned retrieval alone (``trainer.evaluation.two_tower``). ``--two-tower-weights`` adds a row
``aisle:two_tower=W`` per weight, to choose ``BlendWeights.two_tower`` on ``--split valid``. With a bundle
the JSON gains ``"bundle": {"path", "version", "data", "warnings"}``; a warning says when the bundle was trained on
another data set (by name).

With a bundle that has a learned ranker, the ``aisle`` row ranks with it (as the server does); ``aisle:blend``
ranks the same candidates with the blend, for comparison.

``--strict`` (``loo`` only) evaluates under the published papers' exact conditions: every count, statistic and
model learns from the training part only, and each user's validation interaction enters only that user's own
history at test time (``trainer.evaluation.protocols.strict_leave_one_out``); pair it with a bundle trained by
``trainer train --strict``. The JSON then has ``"strict": true``.
Rows ``transitions`` and ``transitions:train-only`` are the item-transition source alone, fitted by the row
(``trainer.evaluation.transitions``): on every event learned, or on the training part only.

``--seeds N`` repeats the randomised part of a run with seeds 0..N-1 and reports the mean (the markdown adds
the standard deviation). The only randomness is the draw of users that ``--users`` asks for; everything else
(the protocols, every model, every tie-break) is deterministic, so without ``--users`` one run is made
whatever N is.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from server.recommender import BlendWeights
from server.retrieval.bundles import BundleError
from server.retrieval.two_tower import TwoTowerRetriever
from trainer.data.dataset import Dataset
from trainer.data.errors import DataFormatError
from trainer.data.formats import FORMATS, load
from trainer.data.s3rec import DEFAULT_SPACING_MS
from trainer.evaluation.base import EvalModel
from trainer.evaluation.baselines import BASELINES
from trainer.evaluation.harness import ModelResult, run_replay, run_static
from trainer.evaluation.metrics import METRICS
from trainer.evaluation.paired import paired_markdown, paired_rows
from trainer.evaluation.protocols import PROTOCOLS, SPLITS, cutoffs, replay, sample_cases, static_split
from trainer.evaluation.serving import ServingPipeline
from trainer.evaluation.transitions import TRANSITIONS, TRANSITIONS_TRAIN_ONLY, TransitionsEval
from trainer.evaluation.two_tower import TwoTowerModel, load_bundle, provenance_warnings

#: Configurations of the serving pipeline that can be asked for by name; ``aisle`` is the server's default.
PIPELINES: dict[str, BlendWeights] = {
    "aisle": BlendWeights(),
    "aisle:no-brand": BlendWeights(brand=0.0),
    "aisle:covisitation-only": BlendWeights(
        covisitation=1.0, brand=0.0, content=0.0, trending=0.0, popular=0.0, two_tower=0.0
    ),
    "aisle:no-two-tower": BlendWeights(two_tower=0.0),
    # The served bundle's candidates ranked by the blend instead of its learned ranker.
    "aisle:blend": BlendWeights(),
    # The server's pipeline without the diversity cap (`max_per_category` -1).
    "aisle:no-diversity": BlendWeights(),
}
#: Pipeline rows that rank with the blend even when the bundle has a learned ranker.
BLEND_ONLY = frozenset({"aisle:blend", "aisle:covisitation-only", "aisle:no-two-tower"})
#: The bundle's learned retrieval alone (needs ``--bundle``).
TWO_TOWER = "two_tower"
DEFAULT_MODELS = ("aisle", "popularity", "covisitation", "itemknn")
#: The item-transition source alone (``trainer.evaluation.transitions``), fitted by the row itself.
TRANSITION_ROWS = (TRANSITIONS, TRANSITIONS_TRAIN_ONLY)
MODELS = (*PIPELINES, TWO_TOWER, *TRANSITION_ROWS, *BASELINES)
#: Rows ``aisle:two_tower=W``: the server's default blend with the learned source weighted W.
_WEIGHT_ROW = "aisle:two_tower="


def pipeline_weights(name: str) -> BlendWeights | None:
    """The blend of pipeline row ``name`` (named, or ``aisle:two_tower=W``); None if it is no pipeline."""
    if name in PIPELINES:
        return PIPELINES[name]
    if name.startswith(_WEIGHT_ROW):
        try:
            weight = float(name[len(_WEIGHT_ROW) :])
        except ValueError:
            return None
        return BlendWeights(two_tower=weight) if weight >= 0 else None
    return None


def model_factories(
    names: Sequence[str],
    dataset: Dataset,
    learned: TwoTowerRetriever | None = None,
    protocol: str = "loo",
) -> list[Callable[[], EvalModel]]:
    """A fresh-model factory per name (pipelines and baselines), in the order given.

    ``learned`` (a loaded bundle) is served by every pipeline row and is what the ``two_tower`` row evaluates.
    ``protocol`` says what ``transitions:train-only`` fits on (its training part).
    """
    items = list(dataset.items.values())
    item_ids = list(dataset.items)
    out: list[Callable[[], EvalModel]] = []
    for name in names:
        weights = pipeline_weights(name)
        if weights is not None:
            use_ranker = name not in BLEND_ONLY and not name.startswith(_WEIGHT_ROW)
            cap = -1 if name == "aisle:no-diversity" else 0
            out.append(
                partial(
                    ServingPipeline,
                    items,
                    name=name,
                    weights=weights,
                    learned=learned,
                    use_ranker=use_ranker,
                    max_per_category=cap,
                )
            )
        elif name == TWO_TOWER:
            if learned is None:
                raise ValueError(f"the {TWO_TOWER} row needs a model bundle (--bundle)")
            out.append(partial(TwoTowerModel, items, learned))
        elif name == TRANSITIONS:
            out.append(partial(TransitionsEval, items, name))
        elif name == TRANSITIONS_TRAIN_ONLY:
            from trainer.preparation import training_split  # no torch at module level

            train = training_split(dataset, protocol if protocol != "replay" else "time-split").train
            out.append(partial(TransitionsEval, items, name, train))
        elif name in BASELINES:
            out.append(partial(BASELINES[name], item_ids))
        else:
            raise ValueError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
    return out


def evaluate(
    dataset: Dataset,
    protocol: str,
    split: str = "test",
    models: Sequence[str] = DEFAULT_MODELS,
    seeds: int = 1,
    users: int | None = None,
    progress: bool = True,
    learned: TwoTowerRetriever | None = None,
    strict: bool = False,
) -> list[tuple[str, list[ModelResult]]]:
    """Run ``models`` through ``protocol``: (model, one result per seed), in the order of ``models``.

    ``learned``: a loaded model bundle, served by the pipeline rows and evaluated alone by ``two_tower``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    factories = model_factories(models, dataset, learned, protocol)
    runs = seeds if users is not None else 1
    per_seed: list[list[ModelResult]] = []
    if strict and protocol != "loo":
        raise ValueError(f"--strict applies to the loo protocol only, not {protocol!r}")
    static = static_split(dataset, protocol, split, strict) if protocol != "replay" else None
    for seed in range(runs):
        if static is not None:
            cases = sample_cases(static.cases, users, seed)
            split_seed = type(static)(static.train, cases, static.private)
            per_seed.append(run_static(split_seed, factories, len(dataset.items), progress))
        else:
            per_seed.append(
                run_replay(replay(dataset, split, users, seed), factories, len(dataset.items), progress)
            )
    return [(name, [results[m] for results in per_seed]) for m, name in enumerate(models)]


def mean_row(name: str, results: Sequence[ModelResult]) -> dict[str, float | str]:
    """The JSON row of one model: every metric and the seconds, averaged over seeds."""
    row: dict[str, float | str] = {"model": name}
    for metric in METRICS:
        row[metric] = statistics.fmean(r.metrics[metric] for r in results)
    row["seconds"] = statistics.fmean(r.seconds for r in results)
    return row


def markdown(rows: Sequence[tuple[str, Sequence[ModelResult]]]) -> str:
    """The table the command prints: one line per model, mean (± std over seeds when there are several)."""
    head = ["model", *METRICS, "cases", "seconds", "ms/case"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, results in rows:
        cells = [name]
        for metric in METRICS:
            values = [r.metrics[metric] for r in results]
            cell = f"{statistics.fmean(values):.4f}"
            if len(values) > 1:
                cell += f" ± {statistics.stdev(values):.4f}"
            cells.append(cell)
        cells.append(f"{statistics.fmean(r.cases for r in results):,.0f}")
        cells.append(f"{statistics.fmean(r.seconds for r in results):.1f}")
        cells.append(f"{statistics.fmean(r.ms_per_case for r in results):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _models(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS and pipeline_weights(n) is None]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(MODELS)}"
        )
    return names


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``python -m trainer evaluate``."""
    parser.add_argument("--data", type=Path, required=True, help="directory of the data set")
    parser.add_argument("--format", choices=FORMATS, required=True, help="format of the data set")
    parser.add_argument("--protocol", choices=PROTOCOLS, required=True, help="evaluation protocol")
    parser.add_argument("--split", choices=SPLITS, default="test", help="targets to score (default test)")
    parser.add_argument(
        "--seeds",
        type=_positive_int,
        default=1,
        help="runs with seeds 0..N-1, reported as their mean; only --users draws at random (default 1)",
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON to this file")
    parser.add_argument(
        "--models",
        type=_models,
        default=list(DEFAULT_MODELS),
        help=f"comma-separated rows to run (default {','.join(DEFAULT_MODELS)}; all: {','.join(MODELS)})",
    )
    parser.add_argument(
        "--users", type=_positive_int, help="score only this many users, drawn with each seed"
    )
    parser.add_argument(
        "--spacing-s",
        type=float,
        default=DEFAULT_SPACING_MS / 1000,
        help=f"s3rec: seconds between a user's interactions (default {DEFAULT_SPACING_MS / 1000:g})",
    )
    parser.add_argument(
        "--attributes", type=Path, help="s3rec-time: the S3-Rec *_item2attributes.json to use"
    )
    parser.add_argument(
        "--bundle",
        type=Path,
        help=f"a model bundle directory: served by the aisle rows, and evaluated alone as row {TWO_TOWER}",
    )
    parser.add_argument(
        "--two-tower-weights",
        type=_weights,
        default=[],
        help="with --bundle: also rows aisle:two_tower=W for these comma-separated weights (tune on valid)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="loo under the papers' conditions: learn only from the training part; each user's validation "
        "interaction enters only their own history (evaluate a bundle trained with `train --strict`)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _weights(text: str) -> list[float]:
    try:
        weights = [float(w) for w in text.split(",") if w.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    if not weights or any(w < 0 for w in weights):
        raise argparse.ArgumentTypeError(f"expected comma-separated weights >= 0, got {text!r}")
    return weights


def run(args: argparse.Namespace) -> int:
    """Load, evaluate, print the table, write the JSON; exit status 2 on malformed data."""
    started = time.perf_counter()
    try:
        dataset = load(
            args.format, args.data, spacing_ms=round(args.spacing_s * 1000), attributes=args.attributes
        )
    except (DataFormatError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{dataset.summary()} (loaded in {time.perf_counter() - started:.1f} s)")
    for note in dataset.notes:
        print(f"  note: {note}")
    if args.strict and args.protocol != "loo":
        print("error: --strict applies to the loo protocol only", file=sys.stderr)
        return 2
    if args.protocol != "loo" and dataset.events:
        valid, test = cutoffs(dataset)
        print(f"  cut-offs: validation {_utc(valid)}, test {_utc(test)}")
    models = list(args.models)
    learned: TwoTowerRetriever | None = None
    bundle_info: dict[str, object] | None = None
    if args.bundle is not None:
        try:
            learned = load_bundle(args.bundle)
        except BundleError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        warnings = provenance_warnings(learned.meta, dataset.name)
        data = learned.meta.get("data")
        trained_on = data.get("dataset", data.get("name", "?")) if isinstance(data, dict) else "?"
        print(
            f"  bundle {learned.version}: {len(learned.item_ids):,} items, dim {learned.dim}, "
            f"sequence {learned.max_len}, trained on {trained_on}"
        )
        strict_bundle = isinstance(data, dict) and bool(data.get("strict"))
        if args.strict and not strict_bundle:
            warnings.append(
                "--strict, but the bundle was not trained with `train --strict`: it learned from "
                "validation interactions, which the papers' conditions forbid"
            )
        for warning in warnings:
            print(f"  warning: {warning}")
        bundle_info = {
            "path": str(args.bundle),
            "version": learned.version,
            "data": learned.meta.get("data"),
            "warnings": warnings,
        }
        if TWO_TOWER not in models:
            models.insert(models.index("aisle") + 1 if "aisle" in models else 0, TWO_TOWER)
        models += [
            f"{_WEIGHT_ROW}{w:g}" for w in args.two_tower_weights if f"{_WEIGHT_ROW}{w:g}" not in models
        ]
    elif TWO_TOWER in models or args.two_tower_weights:
        print(f"error: the {TWO_TOWER} rows need a model bundle (--bundle DIR)", file=sys.stderr)
        return 2
    rows = evaluate(
        dataset,
        args.protocol,
        args.split,
        models,
        args.seeds,
        args.users,
        progress=not args.no_progress,
        learned=learned,
        strict=args.strict,
    )
    runs = len(rows[0][1]) if rows else 0
    print(
        f"\nprotocol {args.protocol}{' (strict)' if args.strict else ''}, split {args.split}, {runs} run(s)"
        + (
            ""
            if args.users or args.seeds == 1
            else " (deterministic: no seed changes anything without --users)"
        )
    )
    print(markdown(rows))
    paired = paired_rows(rows)
    if paired:
        print("\n" + paired_markdown(paired))
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    if args.json is not None:
        document = {
            "dataset": dataset.name,
            "protocol": args.protocol,
            "split": args.split,
            "results": [mean_row(name, results) for name, results in rows],
        }
        if paired:
            document["paired"] = paired
        if args.strict:
            document["strict"] = True
        if bundle_info is not None:
            document["bundle"] = bundle_info
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


def _utc(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
