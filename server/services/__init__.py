"""One module per gRPC service: thin translations between messages and `Engine` calls."""
