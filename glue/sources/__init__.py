"""Transports that bring deliveries to the intake: HTTP, Kafka, the MinIO listen stream."""

__all__: list[str] = []
