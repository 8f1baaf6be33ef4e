"""Settings: read once from AISLE_* variables or an env file; both addresses select Kafka + Redis mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from feature_worker.config import Settings
from feature_worker.fold import FoldConfig
from server.config import ServerSettings


def test_kafka_mode_needs_both_addresses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("AISLE_REDIS_URL", raising=False)
    monkeypatch.setenv("AISLE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    assert not Settings().kafka_mode
    monkeypatch.setenv("AISLE_REDIS_URL", "redis://127.0.0.1:6379/0")
    settings = ServerSettings()
    assert settings.kafka_mode and settings.topics.events == "aisle.events"
    assert "6379" not in repr(settings), "the Redis URL may hold a password: it is a secret"


def test_one_env_file_serves_the_server_and_the_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AISLE_KAFKA_BOOTSTRAP", "AISLE_REDIS_URL", "AISLE_PORT", "AISLE_TOPIC_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    env = tmp_path / "aisle.env"
    env.write_text(
        "AISLE_KAFKA_BOOTSTRAP=k:1\nAISLE_REDIS_URL=redis://r:2/0\nAISLE_PORT=7000\nAISLE_TOPIC_PREFIX=shop\n"
    )
    # `_env_file` is an option of pydantic-settings' constructor, not a field: the signature mypy derives from
    # the fields lacks it (pydantic's mypy plugin adds it, hence unused-ignore).
    worker = Settings(_env_file=env)  # type: ignore[call-arg, unused-ignore]
    server = ServerSettings(_env_file=env)  # type: ignore[call-arg, unused-ignore]
    assert worker.kafka_mode and server.kafka_mode and server.port == 7000
    assert worker.topics.dlq == server.topics.dlq == "shop.dlq"


def test_a_batch_never_outgrows_what_redelivery_can_recognise() -> None:
    with pytest.raises(ValidationError):
        Settings(batch_max=FoldConfig().applied_ids_cap + 1)
