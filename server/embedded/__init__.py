"""The embedded mode: the whole loop inside the server process, durable through a journal."""
