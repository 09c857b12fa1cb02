"""Comparing artifacts against the PyTorch model: runners, evaluation, reports."""
