"""Temporal activities: the delivery workflow's side effects."""
