"""What starts Aisle and its services as local processes, for the tests, the load tests, the demo and tools.

- `children`: what every child process shares (start until ready, stop, kill, log), and the development
  master key children are given.
- `server`, `worker`, `gateway`: `python -m server`, `python -m feature_worker [sink]` and
  `python -m server.gateway` as child processes.
- `services`: a real Kafka broker (KRaft), Redis, a Redis Cluster, nginx and a headless browser, as local
  processes (`python -m loadtest.harness.services up`, behind `make services`).
- `bundles`: model bundles with chosen embeddings (synthetic, not trained).

Nothing in `server` or `feature_worker` imports this package: production starts its processes on its own.
"""
