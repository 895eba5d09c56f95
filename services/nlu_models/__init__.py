"""The NLU model service: HumanFirst `Models` (train, classify, embed) over RabbitMQ."""
