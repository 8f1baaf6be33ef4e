"""The server modes a behavioural test module can run in: `pytestmark = pytest.mark.parametrize(
"server_mode", SERVER_MODES, indirect=True)`. Kafka mode talks to a real broker and Redis (integration); `kafka-cluster` to a real broker and a Redis Cluster."""

from __future__ import annotations

import pytest

SERVER_MODES = [
    "embedded",
    pytest.param("kafka", marks=pytest.mark.integration),
    pytest.param("kafka-cluster", marks=pytest.mark.integration),
]
