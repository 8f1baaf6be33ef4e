"""Loading a generated shop (`python -m trainer generate`) into a running server through its public API."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clients.client import AsyncAisleClient, ClientOptions
from clients.replay import ReplayReport, replay
from trainer.data.generated import read_events, read_items, read_meta, read_users


def load_shop(target: str, shop: Path, token: str = "", progress: bool = True) -> ReplayReport:
    """Send the shop's catalog, customers and every event to the server at ``target`` (with ``token`` when it
    requires one), as a shop's backends would; blocks until the last event is accepted."""

    async def load() -> ReplayReport:
        options = ClientOptions(target=target, write_timeout_s=120, token=token or None)
        async with AsyncAisleClient(options) as client:
            return await replay(
                client,
                list(read_items(shop)),
                list(read_users(shop)),
                read_events(shop),
                total_events=read_meta(shop)["events"],
                progress=progress,
            )

    return asyncio.run(load())


def loaded(report: ReplayReport) -> str:
    """One line saying what was loaded and how fast."""
    return (
        f"loaded {report.events:,} events, {report.users:,} users, {report.items:,} items in "
        f"{report.seconds:.1f} s ({report.events_per_s:,.0f} events/s over gRPC)"
    )
