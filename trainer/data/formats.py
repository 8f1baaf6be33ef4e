"""Every data format ``trainer evaluate`` reads, by name, each loaded into a :class:`Dataset`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from protos.aisle.v1 import catalog_pb2
from trainer.data import generated
from trainer.data.dataset import Dataset
from trainer.data.delta import load_delta
from trainer.data.diginetica import load_diginetica
from trainer.data.s3rec import DEFAULT_SPACING_MS, load_s3rec, load_s3rec_time
from trainer.data.taobao import load_taobao


def load_generated(directory: Path) -> Dataset:
    """The shop ``python -m trainer generate`` wrote, every item marked in stock.

    Stock is a snapshot taken at the end of the generated month; the protocols rank every item, as they do for
    the public data sets, so the catalog marks them all in stock (a recommendation of an item that was out of
    stock at the end is not a miss of the model).
    """
    items: dict[str, catalog_pb2.Item] = {}
    for item in generated.read_items(Path(directory)):
        item.in_stock = True
        items[item.item_id] = item
    events = list(generated.read_events(Path(directory)))
    return Dataset("generated", items, events, notes=["every item marked in stock"])


def load(
    fmt: str, directory: Path, *, spacing_ms: int = DEFAULT_SPACING_MS, attributes: Path | None = None
) -> Dataset:
    """Load ``directory`` in format ``fmt`` (one of ``FORMATS``)."""
    if fmt == "s3rec":
        return load_s3rec(directory, spacing_ms=spacing_ms)
    if fmt == "s3rec-time":
        return load_s3rec_time(directory, attributes_path=attributes)
    loader = _PLAIN.get(fmt)
    if loader is None:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return loader(Path(directory))


_PLAIN: dict[str, Callable[[Path], Dataset]] = {
    "diginetica": load_diginetica,
    "taobao": load_taobao,
    "generated": load_generated,
    "delta": load_delta,
}
FORMATS = ("s3rec", "s3rec-time", "diginetica", "taobao", "generated", "delta")
