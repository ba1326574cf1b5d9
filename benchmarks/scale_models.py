"""Time and memory of the key-selection and least-squares models at 20,000 rows (issue 8).

Measures, on one torch thread, for the leave-one-out Gaussian-kernel model and least squares:

* one minibatch SVI step (``model(..., subsample_size=B)``, AutoNormal, Trace_ELBO, Adam);
* one full-data likelihood + gradient evaluation (what a full-batch MAP/SVI step or one NUTS
  leapfrog step costs);
* ``log_likelihood`` of one draw over all rows (what ``to_inference_data`` pays per draw);
* the peak resident memory of the process (``ru_maxrss``) and ``model.full_data_bytes``.

Usage: ``python benchmarks/scale_models.py [--rows 20000] [--batch 256]``.
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from bayesattn.models import KernelAttentionModel, LeastSquaresAttentionModel

DT = torch.float64


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time(fn, repeat=1):
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main(rows: int, batch: int, steps: int) -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(rows, 1, generator=g, dtype=DT) * 10
    y = torch.sin(x) + 0.3 * torch.randn(rows, 1, generator=g, dtype=DT)
    half_normal = dist.HalfNormal(torch.tensor(1.0, dtype=DT))
    kernel = KernelAttentionModel(
        x, y, bandwidth=dist.LogNormal(torch.tensor(math.log(0.5), dtype=DT),
                                       torch.tensor(1.0, dtype=DT)),
        noise=half_normal, leave_one_out=True)
    ls = LeastSquaresAttentionModel(prior_scale=half_normal, noise=half_normal)
    cases = {
        "kernel (leave-one-out)": (kernel, {"query": x, "target": y},
                                   {"bandwidth": 0.5, "noise": 0.3}),
        "least squares": (ls, {"key": torch.cat([torch.ones_like(x), x], -1), "value": y},
                          {"W": [[0.0], [0.1]], "prior_scale": 1.0, "noise": 0.3}),
    }
    print(f"rows = {rows}, minibatch = {batch}, torch threads = 1, "
          f"load average = {open('/proc/loadavg').read().split()[:3]}, "
          f"peak RSS after setup {_rss_mib():.0f} MiB")
    for name, (model, data, point) in cases.items():
        _measure(name, model, data, point, batch, steps)


def _measure(name, model, data, point, batch, steps) -> None:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(model.model)
    svi = SVI(model.model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    svi.step(**data, subsample_size=batch)  # build the guide's parameters
    step = _time(lambda: svi.step(**data, subsample_size=batch), steps)
    params = {k: torch.tensor(v, dtype=DT, requires_grad=True) for k, v in point.items()}

    def full_grad():
        cond = poutine.condition(model.model, data=params)
        lp = poutine.trace(cond).get_trace(**data).log_prob_sum()
        torch.autograd.grad(lp, list(params.values()))

    grad = _time(full_grad)
    draw = {k: torch.as_tensor(v, dtype=DT)[None] for k, v in point.items()}
    with torch.no_grad():
        ll = _time(lambda: model.log_likelihood(draw, data))
    print(f"{name}: minibatch SVI step {step * 1e3:.1f} ms; full-data likelihood + "
          f"gradient {grad:.2f} s; log_likelihood of one draw {ll:.2f} s; "
          f"full_data_bytes {model.full_data_bytes(data) / 2**20:.1f} MiB; "
          f"peak RSS so far {_rss_mib():.0f} MiB", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    main(args.rows, args.batch, args.steps)
