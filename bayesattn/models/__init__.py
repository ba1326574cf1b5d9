"""Pyro generative models whose posterior means are the attention mechanisms."""
