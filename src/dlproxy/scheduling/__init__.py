"""Scheduling policies: which instance gets a request."""
