"""Ferry's common code: contracts, topology, settings, retry, logging, metrics and health."""
