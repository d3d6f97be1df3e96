"""Offline analysis: the drift report from events, Prometheus or training data, and its statistics."""
