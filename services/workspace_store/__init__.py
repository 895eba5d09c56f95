"""The workspace store: HumanFirst JSON workspaces on disk, served over RabbitMQ."""
