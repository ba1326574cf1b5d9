"""Fitting (exact, MAP, SVI, NUTS), ArviZ conversion and model comparison."""
