"""Runnable studies behind the CLI: the demos, `bayesattn fit`/`predict` and the benches
(:mod:`.benches`)."""
