"""Placeholder until the training engine lands (issue: training engine)."""
