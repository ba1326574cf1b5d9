"""Neuroscience-style models of attention (DESIGN.md section 5)."""
