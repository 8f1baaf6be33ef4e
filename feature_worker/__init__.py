"""Feature worker: folds customer events into real-time features.

`fold` is pure and shared by the embedded server and the Kafka worker; `stores` hold the result.
"""
