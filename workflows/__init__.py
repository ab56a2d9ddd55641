"""Temporal workflows: one durable delivery per event."""
