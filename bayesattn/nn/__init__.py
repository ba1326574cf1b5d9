"""torch.nn layers on :mod:`bayesattn.functional`, and Bayesian layers as PyroModules."""
