"""Server interceptors: errors to statuses (and, later, auth and metrics)."""
