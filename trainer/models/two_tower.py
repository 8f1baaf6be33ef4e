"""The two-tower model: an item tower over id and attributes, and a SASRec user tower over the item sequence.

Score = ``dot(user, item)``. The user tower reads the item tower's vectors for the items of its sequence, so the
towers share the item representation (SASRec ties its input and output item embeddings the same way).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from trainer.models.sequences import NUM_EVENT_TYPES, Vocabulary


@dataclass(frozen=True, slots=True)
class TowerConfig:
    """Shape of the model (recorded in the bundle's ``params``)."""

    dim: int = 64
    max_len: int = 50
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.5

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


class ItemTower(nn.Module):
    """Item index -> vector: id embedding plus brand, category (full path and top level) and price band.

    The attribute of every item index is held in buffers, so the tower maps indices alone, and an item whose
    attributes are unknown (index 0 of a table) still gets its id embedding. Index 0 (padding) maps to zeros.
    """

    def __init__(self, vocab: Vocabulary, dim: int) -> None:
        super().__init__()
        n = vocab.size + 1
        self.ids = nn.Embedding(n, dim, padding_idx=0)
        self.brand = nn.Embedding(vocab.brands, dim, padding_idx=0)
        self.leaf = nn.Embedding(vocab.leaves, dim, padding_idx=0)
        self.top = nn.Embedding(vocab.tops, dim, padding_idx=0)
        self.price = nn.Embedding(vocab.prices, dim, padding_idx=0)
        self.item_brand: Tensor
        self.item_leaf: Tensor
        self.item_top: Tensor
        self.item_price: Tensor
        self.register_buffer("item_brand", torch.from_numpy(vocab.brand.copy()))
        self.register_buffer("item_leaf", torch.from_numpy(vocab.leaf.copy()))
        self.register_buffer("item_top", torch.from_numpy(vocab.top.copy()))
        self.register_buffer("item_price", torch.from_numpy(vocab.price.copy()))
        for table in (self.ids, self.brand, self.leaf, self.top, self.price):
            # Small init: the sum of five tables starts at about the scale of one.
            nn.init.normal_(table.weight, std=0.02)
            with torch.no_grad():
                table.weight[0].zero_()

    def forward(self, items: Tensor) -> Tensor:
        """``items`` int64 of any shape -> float32 of that shape + ``[dim]``."""
        out: Tensor = (
            self.ids(items)
            + self.brand(self.item_brand[items])
            + self.leaf(self.item_leaf[items])
            + self.top(self.item_top[items])
            + self.price(self.item_price[items])
        )
        return out

    def all_items(self) -> Tensor:
        """The vector of every item index, padding (row 0, all zeros) included: ``[n + 1, dim]``."""
        return self.forward(torch.arange(self.ids.num_embeddings, device=self.ids.weight.device))


class FastDropout(nn.Module):
    """Inverted dropout with the keep mask drawn as random bytes.

    ``nn.Dropout`` draws its mask with ``bernoulli_``, which on these CPUs costs about 6 times as much as drawing
    uint8 random numbers and comparing them: with a dozen dropouts per forward pass it dominated an epoch. The
    rate is rounded to a multiple of 1/256. Identity in eval mode (so it leaves no trace in the ONNX graph).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.threshold = round(p * 256)
        self.scale = 256.0 / (256 - self.threshold)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.threshold == 0:
            return x
        noise = torch.empty(x.shape, dtype=torch.uint8, device=x.device).random_()
        return x * ((noise >= self.threshold).to(x.dtype) * self.scale)


class _Block(nn.Module):
    """One pre-norm transformer block: causal self-attention, then a position-wise feed-forward layer.

    Attention is written out (matmul, mask, softmax) rather than ``nn.MultiheadAttention`` so that the ONNX graph
    is plain and identical to what PyTorch computes.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-8)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-8)
        self.ff1 = nn.Linear(dim, dim)
        self.ff2 = nn.Linear(dim, dim)
        self.drop = FastDropout(dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        """``x`` [B, L, d]; ``allowed`` bool [B, 1, L, L]: may query i attend to key j."""
        b, length, d = x.shape
        h, hd = self.heads, self.head_dim
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        q = q.reshape(b, length, h, hd).transpose(1, 2)
        k = k.reshape(b, length, h, hd).transpose(1, 2)
        v = v.reshape(b, length, h, hd).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        scores = scores.masked_fill(~allowed, -1e9)
        attn = self.drop(torch.softmax(scores, dim=-1))
        mixed = torch.matmul(attn, v).transpose(1, 2).reshape(b, length, d)
        x = x + self.drop(self.proj(mixed))
        y = self.ff2(self.drop(torch.relu(self.ff1(self.norm2(x)))))
        out: Tensor = x + self.drop(y)
        return out


class UserTower(nn.Module):
    """SASRec encoder: item vectors (from the item tower) + event-type and position embeddings, causal blocks.

    Sequences are left-padded, newest last, so the last position's output is the user vector whatever the
    length. Padding keys are masked out of attention; every position may attend to itself, so a row that is all
    padding still has a defined (if uninformative) output instead of NaN.
    """

    def __init__(self, config: TowerConfig) -> None:
        super().__init__()
        dim = config.dim
        self.max_len = config.max_len
        self.scale = math.sqrt(dim)
        self.types = nn.Embedding(NUM_EVENT_TYPES, dim, padding_idx=0)
        self.positions = nn.Embedding(config.max_len, dim)
        nn.init.normal_(self.types.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.types.weight[0].zero_()
        self.drop = FastDropout(config.dropout)
        self.blocks = nn.ModuleList(_Block(dim, config.heads, config.dropout) for _ in range(config.blocks))
        self.norm = nn.LayerNorm(dim, eps=1e-8)

    def forward(self, item_vectors: Tensor, items: Tensor, types: Tensor) -> Tensor:
        """Output at every position, ``[B, L, d]``; ``items``/``types`` int64 ``[B, L]`` (L <= max_len)."""
        length = items.shape[1]
        real = items > 0
        # Positions count back from the newest (the last column), so a short sequence uses the same
        # position embeddings for its newest events as a long one.
        pos = torch.arange(self.max_len - length, self.max_len, device=items.device)
        x = item_vectors * self.scale + self.types(types) + self.positions(pos).unsqueeze(0)
        # Padded positions are never read by a real one (they are masked out as keys) and carry no loss, so
        # they are left as they are instead of being zeroed after every step (that cost a pass per block).
        x = self.drop(x)
        # Built from comparisons of an arange (not tril/eye, which ONNX Runtime lacks for booleans).
        steps = torch.arange(length, device=items.device)
        causal = steps.unsqueeze(0) <= steps.unsqueeze(1)  # [query, key]: key not after query
        eye = steps.unsqueeze(0) == steps.unsqueeze(1)
        allowed = (causal & real.unsqueeze(1)) | eye  # [B, L, L]
        allowed = allowed.unsqueeze(1)
        for block in self.blocks:
            x = block(x, allowed)
        out: Tensor = self.norm(x)
        return out


class TwoTower(nn.Module):
    """Both towers; ``score(user, item) = dot``."""

    def __init__(self, vocab: Vocabulary, config: TowerConfig) -> None:
        super().__init__()
        self.config = config
        self.item_tower = ItemTower(vocab, config.dim)
        self.user_tower = UserTower(config)

    def sequence_output(self, items: Tensor, types: Tensor) -> Tensor:
        """The user tower at every position, ``[B, L, d]``."""
        out: Tensor = self.user_tower(self.item_tower(items), items, types)
        return out

    def user_vectors(self, items: Tensor, types: Tensor) -> Tensor:
        """The user vector (last position), ``[B, d]``."""
        out: Tensor = self.sequence_output(items, types)[:, -1, :]
        return out

    def item_vectors(self) -> Tensor:
        """``[n + 1, d]``, row 0 = padding."""
        return self.item_tower.all_items()


class ServedUserTower(nn.Module):
    """What ``user_tower.onnx`` holds: the item tower's output frozen into a table, then the user tower.

    Freezing the table makes the served graph one gather instead of five, and it is exactly the item vectors the
    FAISS index holds.
    """

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.table: Tensor
        with torch.no_grad():
            self.register_buffer("table", model.item_vectors().detach().clone())
        self.user_tower = model.user_tower

    def forward(self, items: Tensor, types: Tensor) -> Tensor:
        vectors = self.table[items]
        out: Tensor = self.user_tower(vectors, items, types)[:, -1, :]
        return out


def item_matrix(model: TwoTower) -> np.ndarray:
    """float32 ``[n, d]``: the item vectors in ``item_ids.txt`` order (padding row dropped)."""
    with torch.no_grad():
        out: np.ndarray = model.item_vectors()[1:].detach().cpu().numpy().astype(np.float32)
    return np.ascontiguousarray(out)
