"""Development and test services: a real Kafka broker (KRaft) and a real Redis server, as local processes.

- `python -m loadtest.harness.services up|down|status` runs them for development (`make services`); `up` writes their
  addresses to `.services.env`.
- `tests.services.fixtures` is a pytest plugin with session fixtures that start them for a test run.
- `AISLE_KAFKA_BOOTSTRAP` / `AISLE_REDIS_URL`, when set and reachable, are used instead of starting anything.

No containers and no mocks: Kafka runs from jars that Maven fetches (`pom.xml` here), Redis from Debian's
`redis-server`.
"""

from feature_worker.topics import AISLE_TOPICS, TopicSpec, create_topics
from loadtest.harness.services.kafka import ExternalKafka, KafkaService
from loadtest.harness.services.process import ServiceError, ServiceNotManaged, ServiceStartError
from loadtest.harness.services.redis import ExternalRedis, RedisClusterService, RedisService

__all__ = [
    "AISLE_TOPICS",
    "ExternalKafka",
    "ExternalRedis",
    "KafkaService",
    "RedisClusterService",
    "RedisService",
    "ServiceError",
    "ServiceNotManaged",
    "ServiceStartError",
    "TopicSpec",
    "create_topics",
]
