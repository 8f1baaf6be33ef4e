"""The Kafka + Redis mode: writes go to Kafka topics, features are read from Redis (feature_worker writes them)."""
