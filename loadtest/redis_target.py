"""The Redis of a benchmark run: a database of one Redis, or a whole Redis Cluster (which has only one)."""

from __future__ import annotations

import redis


def run_database(base_url: str, db: int) -> tuple[str, bool]:
    """`base_url` with database `db` on one Redis; `base_url` itself when it names a Cluster node. And whether
    it is a Cluster."""
    with redis.Redis.from_url(base_url) as client:
        cluster = bool(client.info("cluster").get("cluster_enabled"))
    return (base_url if cluster else f"{base_url.rsplit('/', 1)[0]}/{db}"), cluster


def primaries(url: str, cluster: bool) -> list[str]:
    """The URL of every node that holds data: `url` itself on one Redis, every primary of a Cluster."""
    if not cluster:
        return [url]
    with redis.Redis.from_url(url) as client:
        text = client.execute_command("CLUSTER", "NODES")
    text = text.decode() if isinstance(text, bytes) else str(text)
    return [f"redis://{line.split()[1].split('@')[0]}/0" for line in text.splitlines() if "master" in line]


def flush(nodes: list[str], cluster: bool) -> None:
    """Empty the run's database (every primary of a Cluster)."""
    for node in nodes:
        with redis.Redis.from_url(node) as client:
            if cluster:
                client.flushall()
            else:
                client.flushdb()


def cpu_seconds(nodes: list[str]) -> float:
    """User + system CPU seconds the Redis server processes have used, summed over `nodes`."""
    total = 0.0
    for node in nodes:
        with redis.Redis.from_url(node) as client:
            info = client.info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total
