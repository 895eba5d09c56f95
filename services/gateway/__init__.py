"""The gateway: Ferry's only ingress (gRPC with mutual TLS, and Hugging Face webhooks)."""
