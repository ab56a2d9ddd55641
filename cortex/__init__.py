"""Cortex Realtime: shared pieces of the API, the worker and the CLI."""
