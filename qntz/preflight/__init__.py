"""Preflight: which capture methods and exports work on this model, and why not."""
