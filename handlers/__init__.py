"""Outbound handlers, one module per control plane. They import only ``glue``'s public API."""
