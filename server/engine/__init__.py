"""The server's domain core: validation, ingestion, reads and recommendations, with no gRPC in sight.

Services translate messages to calls on `Engine`; tests and tools can call it directly. `Engine` is one class
written in parts, one module per service area: `core` (state, derived lists, start and close), `writes` (Track
and catalog and customer updates), `reads` (GetItem, GetProfile), `recommend` (with experiments) and `similar`.
"""

from __future__ import annotations

from server.engine.answers import MODEL_VERSION, Answer, TrackResult, now_ms
from server.engine.checks import MAX_BATCH, MAX_EXCLUDE
from server.engine.reads import Reads
from server.engine.recommend import Recommending
from server.engine.similar import Similar
from server.engine.writes import Writes

__all__ = ["MAX_BATCH", "MAX_EXCLUDE", "MODEL_VERSION", "Answer", "Engine", "TrackResult", "now_ms"]


class Engine(Writes, Reads, Recommending, Similar):
    """Everything the services do, over a catalog, a user directory, a feature store and an ingest."""
