"""The Aisle gRPC server: ingestion, catalog, users and recommendations."""
