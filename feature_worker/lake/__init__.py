"""The batch store: Delta Lake tables of every event and every item and user change, for training.

`schema` holds the tables' Arrow schemas and the protobuf -> row conversion, `writer` the appends with
their exactly-once bookkeeping, `sink` the Kafka consumer that fills them in production (the embedded
server fills them from its journal, `server.embedded.ingest`), `maintenance` compaction and vacuum.
"""
