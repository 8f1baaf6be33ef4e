"""The model version an answer reports when no model bundle serves it.

A module of its own so that both the engine (`server.engine.answers`) and the experiments' serving path
(`server.experiments.serving`, which the engine imports) can read it without an import cycle.
"""

from __future__ import annotations

#: Reported in every answer served without a model bundle; with one, its version is reported instead.
MODEL_VERSION = "realtime-blend-1"
