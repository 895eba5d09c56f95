"""The AI-on-Demand uploader: idempotent dataset metadata upserts, keyed by platform id."""
