"""Feature stores: where the fold's results live (`memory` in process, `redis` in production)."""
