"""``python -m trainer train``: learn the two-tower model on a data set and write it as a model bundle.

    python -m trainer train --data DIR --format FMT [--protocol loo|time-split|none] --out BUNDLES \\
        [--version V] [--promote] [--epochs N] [--dim D] [--max-len L] [--negatives K] [--batch-size B] \\
        [--lr LR] [--dropout P] [--patience N] [--seed S] [--threads T] [--no-ranker] [--ranker-epochs N] \\
        [--no-transitions] [--item-knn] [--no-progress]

Two stages, one bundle: the two-tower model (user tower in ONNX, item index in FAISS), then the item transitions
and the learned re-ranker over the serving path's own candidates for the protocol's validation cases
(``trainer.ranker_stage``; ``--no-ranker`` skips both, ``--no-transitions`` the transitions; ``--item-knn`` adds the
whole-history item neighbours).

What is learned from, and what early stopping watches (``trainer.evaluation.protocols``):

- ``loo``: the events of the *validation* split (every event before each user's validation target); early
  stopping on the validation cases. The bundle can then be evaluated on the test split, whose input sequences
  include the validation item, without leakage (the standard SASRec practice).
- ``time-split``: the same with the validation cut-off.
- ``none``: every event except each user's last new-item interaction (and what follows it), which is held out
  for early stopping; for a model that is going to be served.

Validation ranks every item for each case, the user's history excluded, and reports NDCG@10 and HR@10 as
``trainer.evaluation.metrics`` does. The best epoch's weights are kept. The run is deterministic for a given
``--seed`` and ``--threads``.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.data.errors import DataFormatError
from trainer.data.formats import FORMATS, load
from trainer.evaluation.protocols import (
    training_part,
)
from trainer.models import MissingTrainDependency, require_torch
from trainer.models.ranker import RankerError, RankerParams
from trainer.models.sequences import (
    Windows,
    batches_by_length,
    left_pad,
)
from trainer.preparation import PROTOCOLS, Prepared, peak_rss_bytes, prepare

if TYPE_CHECKING:  # torch is imported at run time only, after `require_torch`
    import torch

    from trainer.models.two_tower import TwoTower

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class TrainParams:
    """Optimisation settings (recorded in the bundle's ``params`` with the model's shape)."""

    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    #: Shared negatives per batch for sampled softmax with logQ correction; 0 (or at least the catalog size) = full
    #: softmax over every item. 1,024 cost about a third of full softmax's time on Beauty (12k items).
    negatives: int = 1024
    patience: int = 8
    seed: int = 0
    threads: int = 2
    #: Validation cases scored per epoch (drawn once with ``seed`` when there are more).
    valid_cases: int = 25_000
    #: Stop training (keeping the best epoch) once this many seconds have passed; 0 = no limit.
    time_limit_s: float = 0.0
    progress: bool = True


@dataclass(slots=True)
class FitResult:
    """What training did: the best epoch and its validation metrics, and every epoch's log."""

    best_epoch: int
    metrics: dict[str, float]
    epochs: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def rank_targets(
    model: TwoTower,
    items: np.ndarray,
    types: np.ndarray,
    targets: np.ndarray,
    history: Sequence[np.ndarray],
    batch: int = 1024,
) -> np.ndarray:
    """1-based full-ranking rank of each target among every item, the case's history excluded (0 = miss).

    Items that score strictly higher than the target come first; ties go to the target (FAISS breaks ties by
    label, so a tie costs at most the tied items' count).
    """
    import torch

    model.eval()
    ranks = np.zeros(len(targets), dtype=np.int64)
    with torch.no_grad():
        table = model.item_vectors()
        table_t = table[1:].T.contiguous()
        # Shortest first, each batch cut to its longest row: the output of a left-padded row does not depend on
        # how much padding it has, and most rows are short.
        lengths = (items > 0).sum(axis=1)
        order = np.argsort(lengths, kind="stable")
        for lo in range(0, len(targets), batch):
            rows_of = order[lo : lo + batch]
            width = max(1, int(lengths[rows_of].max()))
            users = model.user_vectors(
                torch.from_numpy(np.ascontiguousarray(items[rows_of, -width:])),
                torch.from_numpy(np.ascontiguousarray(types[rows_of, -width:])),
            )
            scores = users @ table_t  # [b, n]: column j = item index j + 1
            hist = [history[r] for r in rows_of]
            lens = [len(h) for h in hist]
            if sum(lens):
                rows = torch.from_numpy(np.repeat(np.arange(len(rows_of)), lens))
                cols = torch.from_numpy(np.concatenate(hist) - 1)
                scores[rows, cols] = -math.inf
            tgt = torch.from_numpy(targets[rows_of])
            known = tgt > 0
            target_scores = scores.gather(1, (tgt - 1).clamp(min=0).unsqueeze(1))
            better = (scores > target_scores).sum(dim=1) + 1
            ranks[rows_of] = torch.where(known, better, torch.zeros_like(better)).numpy()
    return ranks


def metrics_of(ranks: np.ndarray) -> dict[str, float]:
    """NDCG@10, HR@10, NDCG@20, HR@20 of 1-based ranks (0 = miss), as ``trainer.evaluation.metrics``."""
    hit = ranks > 0
    out: dict[str, float] = {}
    for k in (10, 20):
        inside = hit & (ranks <= k)
        out[f"HR@{k}"] = float(inside.mean()) if len(ranks) else 0.0
        gains = np.where(inside, 1.0 / np.log2(np.maximum(ranks, 1) + 1.0), 0.0)
        out[f"NDCG@{k}"] = float(gains.mean()) if len(ranks) else 0.0
    return out


def _batch_arrays(windows: Windows, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    width = max(len(windows.items[r]) for r in rows)
    pick = [windows.items[r] for r in rows]
    return (
        left_pad(pick, width),
        left_pad([windows.types[r] for r in rows], width),
        left_pad([windows.targets[r] for r in rows], width),
        left_pad([windows.mask[r].astype(np.int64) for r in rows], width).astype(bool),
    )


def fit(model: TwoTower, data: Prepared, params: TrainParams, log: Log = print) -> FitResult:
    """Train ``model`` in place with early stopping on validation NDCG@10; it ends holding the best weights."""
    import torch
    from torch.nn import functional
    from tqdm import tqdm

    rng = np.random.default_rng(params.seed)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=params.lr, betas=(0.9, 0.98), weight_decay=params.weight_decay
    )
    n_items = data.vocab.size
    sampled = 0 < params.negatives < n_items
    if sampled:
        # Popularity^0.75 (word2vec's smoothing) plus a little uniform mass, so rare items are drawn at all.
        pop = data.popularity[1:] ** 0.75
        q = 0.9 * pop / max(pop.sum(), 1e-12) + 0.1 / n_items
        q_t = torch.from_numpy(q).float()
        log_q = torch.log(torch.cat([torch.ones(1), q_t]))  # by item index
    generator = torch.Generator().manual_seed(params.seed)
    lengths = [len(row) for row in data.windows.items]
    started = time.perf_counter()
    best = -1.0
    best_epoch = 0
    best_state: dict[str, torch.Tensor] = copy.deepcopy(model.state_dict())
    best_metrics: dict[str, float] = {}
    history: list[dict[str, float]] = []
    stale = 0
    for epoch in range(1, params.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        batches = batches_by_length(lengths, params.batch_size, rng)
        total_loss = 0.0
        total_positions = 0
        bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", disable=not params.progress, leave=False)
        for rows in bar:
            items_np, types_np, targets_np, mask_np = _batch_arrays(data.windows, rows)
            items = torch.from_numpy(items_np)
            mask = torch.from_numpy(mask_np)
            hidden = model.sequence_output(items, torch.from_numpy(types_np))[mask]  # [P, d]
            targets = torch.from_numpy(targets_np)[mask]  # item indices, >= 1
            if sampled:
                negatives = (
                    torch.multinomial(q_t, params.negatives, replacement=True, generator=generator) + 1
                )
                # Only the items this batch touches go through the item tower: with 100k items, the whole
                # table per batch cost more than the rest of the step.
                positive = model.item_tower(targets)
                pos_logits = (hidden * positive).sum(-1, keepdim=True) - log_q[targets].unsqueeze(1)
                neg_logits = hidden @ model.item_tower(negatives).T - log_q[negatives].unsqueeze(0)
                # A drawn negative that is the target itself is not a negative.
                neg_logits = neg_logits.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), -1e9)
                logits = torch.cat([pos_logits, neg_logits], dim=1)
                loss = functional.cross_entropy(logits, torch.zeros_like(targets))
            else:
                logits = hidden @ model.item_vectors()[1:].T
                loss = functional.cross_entropy(logits, targets - 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            optimizer.step()
            total_loss += float(loss.detach()) * len(targets)
            total_positions += len(targets)
            if params.progress:
                bar.set_postfix(loss=f"{total_loss / max(total_positions, 1):.4f}", refresh=False)
        bar.close()
        train_s = time.perf_counter() - epoch_started
        ranks = rank_targets(
            model, data.valid_items, data.valid_types, data.valid_targets, data.valid_history
        )
        metrics = metrics_of(ranks)
        record = {
            "epoch": float(epoch),
            "loss": total_loss / max(total_positions, 1),
            "train_s": train_s,
            "valid_s": time.perf_counter() - epoch_started - train_s,
            **metrics,
        }
        history.append(record)
        improved = metrics["NDCG@10"] > best
        if improved:
            best, best_epoch, best_metrics, stale = metrics["NDCG@10"], epoch, metrics, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        log(
            f"epoch {epoch:3d}  loss {record['loss']:.4f}  valid NDCG@10 {metrics['NDCG@10']:.4f} "
            f"HR@10 {metrics['HR@10']:.4f}  {train_s:.1f} s train + {record['valid_s']:.1f} s valid"
            + ("  *" if improved else "")
        )
        if stale >= params.patience:
            log(f"early stop: no better NDCG@10 for {params.patience} epochs; best epoch {best_epoch}")
            break
        if params.time_limit_s and time.perf_counter() - started >= params.time_limit_s:
            log(f"time limit {params.time_limit_s:.0f} s reached; best epoch {best_epoch}")
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch, best_metrics, history, time.perf_counter() - started)


def configure(parser: argparse.ArgumentParser) -> None:
    defaults = TrainParams()
    parser.add_argument("--data", type=Path, required=True, help="data set directory")
    parser.add_argument("--format", choices=FORMATS, required=True, help="data set format")
    parser.add_argument(
        "--protocol", choices=PROTOCOLS, default="loo", help="what to learn from (default loo)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="bundles directory (the bundle goes in OUT/VERSION)"
    )
    parser.add_argument("--version", help="bundle version (default: UTC time, e.g. 20261126T203000Z)")
    parser.add_argument("--promote", action="store_true", help="promote the bundle once written")
    parser.add_argument(
        "--epochs", type=int, default=defaults.epochs, help="most epochs (default %(default)s)"
    )
    parser.add_argument("--dim", type=int, default=64, help="embedding size (default %(default)s)")
    parser.add_argument("--max-len", type=int, default=50, help="sequence length (default %(default)s)")
    parser.add_argument("--blocks", type=int, default=2, help="self-attention blocks (default %(default)s)")
    parser.add_argument("--heads", type=int, default=1, help="attention heads (default %(default)s)")
    parser.add_argument(
        "--negatives",
        type=int,
        default=defaults.negatives,
        help="shared sampled negatives per batch (logQ-corrected); 0 = full softmax (default %(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="(default %(default)s)")
    parser.add_argument(
        "--lr", type=float, default=defaults.lr, help="Adam learning rate (default %(default)s)"
    )
    parser.add_argument(
        "--weight-decay", type=float, default=defaults.weight_decay, help="(default %(default)s)"
    )
    parser.add_argument("--dropout", type=float, default=0.5, help="(default %(default)s)")
    parser.add_argument("--patience", type=int, default=defaults.patience, help="(default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="(default %(default)s)")
    parser.add_argument(
        "--threads", type=int, default=defaults.threads, help="torch threads (default %(default)s)"
    )
    parser.add_argument(
        "--valid-cases", type=int, default=defaults.valid_cases, help="validation cases (default %(default)s)"
    )
    parser.add_argument(
        "--time-limit", type=float, default=0.0, help="stop training after this many seconds (0: none)"
    )
    parser.add_argument(
        "--hnsw-above",
        type=int,
        default=50_000,
        help="HNSW index above this many items (default %(default)s)",
    )
    parser.add_argument(
        "--ivf-above",
        type=int,
        default=None,
        help="an inverted-file index (IVF) above this many items, exact search below (default 16384)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="learn only from the training part (each user's validation and test interactions removed), "
        "for `trainer evaluate --strict` (loo protocol)",
    )
    parser.add_argument(
        "--no-ranker", action="store_true", help="first stage only: no item transitions, no learned re-ranker"
    )
    parser.add_argument(
        "--no-transitions", action="store_true", help="no item-transition source in the bundle"
    )
    parser.add_argument(
        "--item-knn",
        action="store_true",
        help="add the whole-history item-neighbour source to the bundle (off by default: see the README)",
    )
    parser.add_argument(
        "--ranker-epochs",
        type=int,
        default=RankerParams().epochs,
        help="re-ranker epochs at most (default %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    try:
        require_torch()
    except MissingTrainDependency as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    from server.retrieval import bundles
    from trainer.export import ExportError, write_bundle
    from trainer.models.two_tower import TowerConfig, TwoTower

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    params = TrainParams(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        negatives=args.negatives,
        patience=args.patience,
        seed=args.seed,
        threads=args.threads,
        valid_cases=args.valid_cases,
        time_limit_s=args.time_limit,
        progress=not args.no_progress,
    )
    config = TowerConfig(
        dim=args.dim, max_len=args.max_len, blocks=args.blocks, heads=args.heads, dropout=args.dropout
    )
    try:
        version = bundles.check_version(args.version) if args.version else None
        dataset = load(args.format, args.data)
    except (DataFormatError, bundles.BundleError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    protocol = args.protocol
    if args.strict:
        if args.protocol != "loo":
            print("error: --strict applies to the loo protocol only", file=sys.stderr)
            return 2
        # Only the training part may be learned; within it, each user's last item is held out (early stopping,
        # the ranker's lists), as `none` does on a whole data set.
        dataset = training_part(dataset)
        protocol = "none"
    print(f"{dataset.summary()} (loaded in {time.perf_counter() - started:.1f} s)", flush=True)
    for note in dataset.notes:
        print(f"  note: {note}")
    data = prepare(dataset, protocol, config.max_len, params.valid_cases, params.seed)
    print(
        f"protocol {protocol}: {len(data.windows):,} training windows, {data.windows.positions:,} "
        f"target positions, {len(data.valid_targets):,} validation cases, {data.vocab.size:,} items "
        f"({time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    model = TwoTower(data.vocab, config)
    result = fit(model, data, params, log=lambda line: print(line, flush=True))
    print(
        f"best epoch {result.best_epoch}: valid NDCG@10 {result.metrics.get('NDCG@10', 0.0):.4f} "
        f"HR@10 {result.metrics.get('HR@10', 0.0):.4f}; trained in {result.seconds:.1f} s",
        flush=True,
    )
    data_meta: dict[str, Any] = {
        **dataset.provenance,
        "dataset": dataset.name,
        "summary": dataset.summary(),
        "format": args.format,
        "path": str(args.data),
        "protocol": protocol,
        "strict": bool(args.strict),
        "notes": list(dataset.notes),
    }
    all_params: dict[str, Any] = {
        **config.to_dict(),
        **{k: v for k, v in asdict(params).items() if k != "progress"},
        "hnsw_above": args.hnsw_above,
        "ivf_above": args.ivf_above,
    }
    metrics: dict[str, Any] = {
        **result.metrics,
        "split": "valid",
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.epochs),
        "epochs": result.epochs,
    }
    second = None
    if not args.no_ranker:
        from trainer.ranker_stage import second_stage

        ranker_params = RankerParams(epochs=args.ranker_epochs, seed=args.seed)

        def second(tmp: bundles.BundlePaths) -> dict[str, Any]:
            return second_stage(
                tmp,
                dataset,
                protocol,
                strict=args.strict,
                params=ranker_params,
                transitions=not args.no_transitions,
                item_knn=args.item_knn,
                log=lambda line: print(line, flush=True),
                progress=not args.no_progress,
            )

    try:
        paths = write_bundle(
            model,
            data,
            args.out,
            version=version,
            data_meta=data_meta,
            params=all_params,
            metrics=metrics,
            train_seconds=result.seconds,
            hnsw_above=args.hnsw_above,
            ivf_above=args.ivf_above,
            seed=params.seed,
            log=lambda line: print(line, flush=True),
            started=started,
            second_stage=second,
        )
        if args.promote:
            bundles.promote(args.out, paths.version)
            print(f"promoted {paths.version}")
    except (ExportError, RankerError, bundles.BundleError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"bundle {paths.root} written; total {time.perf_counter() - started:.1f} s, "
        f"peak RSS {peak_rss_bytes() / 2**30:.2f} GiB",
        flush=True,
    )
    return 0
