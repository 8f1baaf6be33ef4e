"""The learned re-ranker: a small MLP over the candidate features (or the mean of linear ones, `fit_linear_mean`),
trained listwise, exported to ONNX.

Each training list is one request's candidates (``trainer.ranker_data``) with one right answer; the loss is
the softmax cross-entropy of the right answer among its list's rows (ListNet with a one-hot target, what
"which candidate comes next" asks). Features are standardised inside the model (the means and deviations of
the training rows are constants of the graph), so the server feeds the raw `feature_matrix`. Early stopping
on the validation lists' NDCG@10; the best epoch's weights are kept.

torch is imported by the functions that need it (`trainer.models.require_torch`): the server never imports
this module.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from server.retrieval.bundles import RANKER_INPUT, RANKER_OUTPUT
from trainer.ranker_data import RankerLists, list_metrics

if TYPE_CHECKING:
    import torch

    from trainer.models.ranker_graph import RankerWeights

Log = Callable[[str], None]
#: ONNX and PyTorch scores must agree this closely on the validation rows, else the export fails.
PARITY_TOLERANCE = 1e-4
#: The linear ranker weighed against the MLP (`fit_linear_mean`) is the mean of this many, one per seed.
LINEAR_SEEDS = 5
MLP_KIND = "mlp-listwise-softmax"
LINEAR_KIND = "linear-listwise-softmax-mean"


@dataclass(frozen=True, slots=True)
class RankerParams:
    #: 32-16 scores a request's ~300 rows in half the time of 64-32 (21 against 38 µs of ONNX Runtime, one
    #: thread) at the same test accuracy on Beauty (`loo` 0.0708 against 0.0709, `--strict` 0.0627 against 0.0633,
    #: validation 0.0832 / 0.0845 against 0.0841 / 0.0837): BENCHMARKS.md, issue 9, eleventh pass.
    hidden: tuple[int, ...] = (32, 16)
    epochs: int = 40
    lists_per_batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-5
    dropout: float = 0.1
    patience: int = 5
    seed: int = 0


class RankerError(Exception):
    """The ranker could not be trained or exported (too little data, an ONNX mismatch)."""


def _module(n_features: int, params: RankerParams, mean: np.ndarray, scale: np.ndarray) -> torch.nn.Module:
    import torch
    from torch import nn

    class MLP(nn.Module):
        # Buffers (register_buffer below): typed here, since nn.Module's attribute lookup says Tensor | Module.
        mean: torch.Tensor
        scale: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(mean.astype(np.float32)))
            self.register_buffer("scale", torch.from_numpy(scale.astype(np.float32)))
            layers: list[nn.Module] = []
            width = n_features
            for h in params.hidden:
                layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(params.dropout)]
                width = h
            layers.append(nn.Linear(width, 1))
            self.net = nn.Sequential(*layers)
            # A linear path beside the MLP: the blend is linear, so the model starts near something that works.
            self.linear = nn.Linear(n_features, 1)

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            x = (features - self.mean) / self.scale
            out: torch.Tensor = (self.net(x) + self.linear(x)).squeeze(-1)
            return out

    return MLP()


@dataclass(slots=True)
class FittedRanker:
    module: Any
    features: list[str]
    params: RankerParams
    metrics: dict[str, Any]
    #: `MLP_KIND`, or `LINEAR_KIND` for `fit_linear_mean`'s.
    kind: str = MLP_KIND

    def scores(self, matrix: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        import torch

        self.module.eval()
        with torch.no_grad():
            out: npt.NDArray[np.float32] = self.module(torch.from_numpy(matrix)).numpy()
        return out


def fit_ranker(
    train: RankerLists,
    valid: RankerLists,
    feature_names: list[str],
    params: RankerParams = RankerParams(),
    log: Log = print,
) -> FittedRanker:
    """Train on ``train``'s lists, early-stopping on ``valid``'s NDCG@10 (misses counted). Feature importance is
    added for the ranker that is kept (`add_importance`), not for each one tried."""
    import torch
    from torch.nn import functional

    if len(train) < 10 or len(valid) < 1:
        raise RankerError(
            f"too few lists to train a ranker: {len(train)} for training, {len(valid)} for validation"
        )
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    x = train.features.astype(np.float32)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    module = _module(x.shape[1], params, mean, scale)
    optimizer = torch.optim.Adam(module.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    x_t = torch.from_numpy(x)
    offsets = train.offsets
    sizes = np.diff(offsets)
    valid_x = torch.from_numpy(valid.features.astype(np.float32))
    blend = list_metrics(valid, valid.blend)
    log(
        f"ranker: {len(train):,} training lists, {len(valid):,} validation lists; blend valid NDCG@10 "
        f"{blend['NDCG@10']:.4f}"
    )
    best, best_epoch, stale = -1.0, 0, 0
    best_state = copy.deepcopy(module.state_dict())
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for epoch in range(1, params.epochs + 1):
        module.train()
        order = rng.permutation(len(train))
        total = 0.0
        for lo in range(0, len(order), params.lists_per_batch):
            lists = order[lo : lo + params.lists_per_batch]
            width = int(sizes[lists].max())
            rows = np.full((len(lists), width), -1, dtype=np.int64)
            for j, i in enumerate(lists.tolist()):
                rows[j, : sizes[i]] = np.arange(offsets[i], offsets[i + 1])
            mask = torch.from_numpy(rows >= 0)
            flat = torch.from_numpy(np.maximum(rows, 0).reshape(-1))
            logits = module(x_t[flat]).reshape(len(lists), width)
            logits = logits.masked_fill(~mask, -1e9)
            loss = functional.cross_entropy(logits, torch.from_numpy(train.target[lists]))
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            optimizer.step()
            total += float(loss.detach()) * len(lists)
        module.eval()
        with torch.no_grad():
            scores = module(valid_x).numpy()
        metrics = list_metrics(valid, scores)
        history.append({"epoch": epoch, "loss": total / len(train), **metrics})
        log(
            f"ranker epoch {epoch}: loss {total / len(train):.4f}, valid NDCG@10 {metrics['NDCG@10']:.4f} "
            f"HR@10 {metrics['HR@10']:.4f}"
        )
        if metrics["NDCG@10"] > best:
            best, best_epoch, stale = metrics["NDCG@10"], epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            stale += 1
            if stale >= params.patience:
                break
    module.load_state_dict(best_state)
    module.eval()
    fitted = FittedRanker(module, feature_names, params, {})
    _describe(fitted, train, valid, blend, {"best_epoch": best_epoch, "epochs": history}, started)
    return fitted


def fit_linear_mean(
    train: RankerLists,
    valid: RankerLists,
    feature_names: list[str],
    params: RankerParams = RankerParams(),
    log: Log = print,
    seeds: int = LINEAR_SEEDS,
) -> FittedRanker:
    """The mean of ``seeds`` linear rankers (no hidden layer), each trained as `fit_ranker` trains one, from seeds
    ``params.seed`` on. A linear model's scores are linear in its weights, so the mean of the weights scores what
    the mean of the models' scores would: an ensemble that costs one small model when served. With few lists one
    linear model's weights still move with its seed (the generated shop's 1,434 lists: test NDCG@10 0.1145 to
    0.1194 over five seeds); their mean moves far less."""
    import torch

    started = time.perf_counter()
    fits = [
        fit_ranker(
            train,
            valid,
            feature_names,
            replace(params, hidden=(), seed=params.seed + s),
            lambda _: None,
        )
        for s in range(seeds)
    ]
    states = [fit.module.state_dict() for fit in fits]
    module = fits[0].module
    module.load_state_dict(
        {name: torch.stack([state[name] for state in states]).mean(dim=0) for name in states[0]}
    )
    module.eval()
    fitted = FittedRanker(module, feature_names, replace(params, hidden=()), {}, LINEAR_KIND)
    blend = list_metrics(valid, valid.blend)
    seeded = [fit.metrics["valid"]["NDCG@10"] for fit in fits]
    _describe(
        fitted,
        train,
        valid,
        blend,
        {
            "best_epoch": [fit.metrics["best_epoch"] for fit in fits],
            "seeds": seeds,
            "seed_valid_ndcg10": seeded,
        },
        started,
    )
    log(
        f"linear ranker, mean of {seeds} seeds: valid NDCG@10 {fitted.metrics['valid']['NDCG@10']:.4f} "
        f"(each seed {min(seeded):.4f} to {max(seeded):.4f})"
    )
    return fitted


def _describe(
    fitted: FittedRanker,
    train: RankerLists,
    valid: RankerLists,
    blend: dict[str, float],
    training: dict[str, Any],
    started: float,
) -> None:
    """Fill ``fitted.metrics``: validation figures, the blend's on the same lists, how it trained."""
    fitted.metrics = {
        "valid": list_metrics(valid, fitted.scores(valid.features.astype(np.float32))),
        "blend_valid": blend,
        "recall": valid.recall,
        **training,
        "train_lists": len(train),
        "valid_lists": len(valid),
        "seconds": time.perf_counter() - started,
    }


def add_importance(fitted: FittedRanker, valid: RankerLists) -> None:
    """Add ``importance`` to ``fitted.metrics`` (`permutation_importance` on ``valid``): one scoring of the
    validation rows per feature, so it is done for the ranker kept, not for every one tried."""
    fitted.metrics["importance"] = permutation_importance(
        fitted, valid, fitted.scores(valid.features.astype(np.float32))
    )


def permutation_importance(
    fitted: FittedRanker, valid: RankerLists, base_scores: npt.NDArray[np.float32], seed: int = 0
) -> dict[str, float]:
    """Drop of validation NDCG@10 when one feature's column is shuffled across rows, per feature (larger
    matters more), sorted by importance."""
    rng = np.random.default_rng(seed)
    base = list_metrics(valid, base_scores)["NDCG@10"]
    out: dict[str, float] = {}
    for j, name in enumerate(fitted.features):
        shuffled = valid.features.astype(np.float32).copy()
        shuffled[:, j] = rng.permutation(shuffled[:, j])
        out[name] = round(base - list_metrics(valid, fitted.scores(shuffled))["NDCG@10"], 5)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def export_ranker(fitted: FittedRanker, path: Path, check: npt.NDArray[np.float32]) -> float:
    """Write the ONNX ranker to ``path`` (`trainer.models.ranker_graph`: the module's function in six nodes, no
    subnormal weights: `server.retrieval.subnormals`) and return the largest |ONNX - PyTorch| score on ``check``
    rows; `RankerError` when it exceeds `PARITY_TOLERANCE`."""
    import onnxruntime as ort

    from server.retrieval.subnormals import flush_subnormal_weights
    from trainer.models.ranker_graph import serving_graph

    graph = serving_graph(ranker_weights(fitted.module))
    flush_subnormal_weights(graph)  # weights of features constant in training decay below float32's normals
    path.write_bytes(graph.SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_scores = session.run([RANKER_OUTPUT], {RANKER_INPUT: check.astype(np.float32)})[0]
    gap = float(np.abs(onnx_scores - fitted.scores(check.astype(np.float32))).max()) if len(check) else 0.0
    if not gap <= PARITY_TOLERANCE:
        raise RankerError(
            f"the ONNX ranker differs from PyTorch by {gap:.2e} (> {PARITY_TOLERANCE}) on validation rows"
        )
    return gap


def ranker_weights(module: Any) -> RankerWeights:
    """The numbers of a module built by `_module`: its hidden layers (each ``Linear`` before a ``ReLU``), the
    output layer, the linear path and the standardisation."""
    import torch

    from trainer.models.ranker_graph import RankerWeights

    def numbers(tensor: torch.Tensor) -> npt.NDArray[np.float32]:
        return tensor.detach().cpu().numpy().astype(np.float32)

    linears = [layer for layer in module.net if isinstance(layer, torch.nn.Linear)]
    return RankerWeights(
        mean=numbers(module.mean),
        scale=numbers(module.scale),
        layers=[(numbers(layer.weight), numbers(layer.bias)) for layer in linears[:-1]],
        output=(numbers(linears[-1].weight), numbers(linears[-1].bias)),
        linear=(numbers(module.linear.weight), numbers(module.linear.bias)),
    )


def ranker_meta(fitted: FittedRanker, parity: float) -> dict[str, Any]:
    """The ``ranker`` object of the bundle's meta.json."""
    return {
        "kind": fitted.kind,
        "features": fitted.features,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(fitted.params).items()},
        "onnx_parity": parity,
        **fitted.metrics,
    }
