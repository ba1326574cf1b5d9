"""Runnable studies behind the CLI: the mcycle demo, the neuro demo, the UEA benchmark."""
