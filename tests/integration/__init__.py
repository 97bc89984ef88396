"""Integration tests: the worker against the real PostgreSQL and RabbitMQ."""
