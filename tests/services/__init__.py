"""The pytest side of the development services (`loadtest.harness.services`): session fixtures and their tests."""
