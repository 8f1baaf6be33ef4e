"""Feature worker: folds customer events into real-time features.

`fold` is pure and shared by the embedded server and the Kafka worker; `stores` hold the result
(`memory` in process, `redis` in production, with its key layout in `keys`). `python -m feature_worker`
is the Kafka worker (`consumer`): it reads `topics`, follows the catalog (`tables`), dead-letters what
it cannot fold (`dead_letters`) and exports its lag (`metrics`, `lag`).
"""
