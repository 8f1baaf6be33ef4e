"""Where the customers' wrapped data keys live: `file` (embedded), `redis` (Kafka + Redis), `memory` (tests)."""
