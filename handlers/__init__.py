"""Outbound handlers, one module per control plane. They import only ``glue``'s public API."""

__all__: list[str] = []
