"""One package per Ferry service, plus the `ferry` CLI."""
