"""Tests of the convergence verdicts: every method says whether it worked.

Bad fits (Neal's funnel under NUTS and under a mean-field guide, too few SVI steps, a flat
direction for MAP) must be flagged and good ones pass; the figures are checked against Pyro's
own diagnostics, ArviZ and theory (the Pareto k of Gaussian importance ratios, the kinetic
energy's chi-square law). The issue's real-data failure (GP attention by SVI on the Nile
series) is reproduced. NUTS/SVI tests are ``slow`` but short.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC, NUTS
from pyro.ops.stats import effective_sample_size, split_gelman_rubin

from bayesattn.errors import ConvergenceWarning
from bayesattn.inference import fit, verdict_line
from bayesattn.inference.diagnostics import elbo_plateau, pareto_k
from bayesattn.inference.nuts import RecordingNUTS
from bayesattn.inference.threads import torch_threads
from bayesattn.models.base import BayesianModel

DT = torch.float64
# no prior / prior-predictive groups (500 draws by default): no test here reads them
FAST = {"progress_bar": False, "num_prior_draws": 0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: one thread is faster


def verdict(idata) -> dict:
    return json.loads(idata.attrs["diagnostics"])


def quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit(*args, **kwargs)


# ----------------------------------------------------------------------------- toy models
class Funnel(BayesianModel):
    """Neal's funnel: ``v ~ N(0, 3^2)``, ``x ~ N(0, exp(v))`` (2-D), one uninformative
    observation ``y ~ N(x_1, 100^2)``: the posterior is (almost) the funnel prior."""

    obs_name = "y"

    def latent_names(self):
        return ["v", "x"]

    def model(self, y=None):
        v = pyro.sample("v", dist.Normal(torch.tensor(0.0, dtype=DT), 3.0))
        x = pyro.sample("x", dist.Normal(torch.zeros(2, dtype=DT), (v / 2).exp()).to_event(1))
        pyro.sample("y", dist.Normal(x[..., :1], 100.0).to_event(1), obs=y)


class Gaussian(BayesianModel):
    """``mu ~ N(0, 10^2)`` (``dim``-D), ``y_n ~ N(mu, 1)``: a well-conditioned posterior
    ``N(sum y / (n + 0.01), 1 / (n + 0.01))``."""

    obs_name = "y"

    def __init__(self, dim=2):
        self.dim = dim

    def latent_names(self):
        return ["mu"]

    def model(self, y=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(self.dim, dtype=DT), 10.0).to_event(1))
        with pyro.plate("n", 10 if y is None else y.shape[0]):
            pyro.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)


def gaussian_data(seed=0, n=10, dim=2):
    g = torch.Generator().manual_seed(seed)
    return {"y": 1.0 + torch.randn(n, dim, generator=g, dtype=DT)}


class FlatDirection(BayesianModel):
    """``a ~ N(0, 1)``, ``y ~ N(a, 1)``, and ``b ~ N(0, 1)`` whose log density a factor
    ``+ b^2 / 2`` cancels: the joint density does not depend on ``b``, so the Hessian at any
    mode is singular."""

    obs_name = "y"

    def latent_names(self):
        return ["a", "b"]

    def model(self, y=None):
        a = pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
        b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=DT), 1.0))
        pyro.factor("flat", 0.5 * b**2)
        pyro.sample("y", dist.Normal(a, 1.0), obs=y)


class Underflow(BayesianModel):
    """``s ~ LogNormal(0, 12)``, five ``y = 0 ~ N(0, s)``: the posterior of ``log s`` sits
    near -720, where ``exp`` underflows to 0 below -745; the program then raises ValueError,
    as the package's models do for a bandwidth that underflowed (no key to attend to)."""

    obs_name = "y"

    def latent_names(self):
        return ["s"]

    def model(self, y=None):
        s = pyro.sample("s", dist.LogNormal(torch.tensor(0.0, dtype=DT), 12.0))
        if bool((s == 0).any()):
            raise ValueError("s underflowed to 0")
        with pyro.plate("n", 5):
            pyro.sample("y", dist.Normal(torch.tensor(0.0, dtype=DT), s), obs=y)


# ----------------------------------------------------------------------------- fast units
def test_verdict_line_states_ok_or_failed_with_figures_and_reasons():
    idata = az.from_dict(posterior={"a": np.zeros((1, 4))})
    assert verdict_line(idata) == "convergence: unknown (no diagnostics stored)"
    from bayesattn.inference.diagnostics import make_verdict, store_verdict

    figs = {"max_r_hat": 1.004, "min_ess_bulk": 812.0, "min_ess_tail": 640.0, "divergences": 0,
            "max_tree_depth_hits": 0, "min_bfmi": 0.91, "num_chains": 4, "num_draws": 500}
    store_verdict(idata, make_verdict("nuts", [], figs, {"num_chains": 4}))
    assert idata.attrs["converged"] == 1
    assert verdict_line(idata) == (
        "convergence: OK (nuts: max r_hat 1.004, min ESS bulk 812 / tail 640, 0 divergences, "
        "0 at max tree depth, min E-BFMI 0.91)")
    with pytest.warns(ConvergenceWarning, match=r"convergence: FAILED \(nuts: 3 divergent"):
        store_verdict(idata, make_verdict("nuts", ["3 divergent transitions"],
                                          {**figs, "divergences": 3}, {}))
    assert idata.attrs["converged"] == 0
    line = verdict_line(idata)
    assert line.startswith("convergence: FAILED") and "\n" not in line
    info = verdict(idata)
    assert info["reasons"] == ["3 divergent transitions"] and info["converged"] is False


def test_pareto_k_of_gaussian_importance_ratios_matches_theory():
    # proposal N(0, 1), target N(0, sigma^2): the ratio has Pareto tail k = 1 - 1/sigma^2 for
    # sigma > 1 (Vehtari et al. 2024, section 3) and bounded weights (k < 0.5) for sigma < 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal(8000)
    for sigma, lo, hi in ((2.0, 0.62, 0.88), (0.8, -np.inf, 0.5)):
        lw = -0.5 * (x / sigma) ** 2 - math.log(sigma) + 0.5 * x**2
        k = pareto_k(lw)
        assert lo < k < hi, (sigma, k)


def test_elbo_plateau_flags_a_falling_trace_and_passes_a_flat_noisy_one():
    rng = np.random.default_rng(1)
    flat = 100 + rng.normal(0, 1.0, 1000)
    falling = 100 + np.linspace(30, 0, 1000) + rng.normal(0, 1.0, 1000)
    assert elbo_plateau(flat)["plateau"]
    out = elbo_plateau(falling)
    assert not out["plateau"] and out["elbo_drop"] > 2 * out["elbo_drop_se"]
    assert not elbo_plateau(flat[:30])["plateau"]  # too short to test


def test_torch_threads_restores_the_setting_also_on_errors():
    torch.set_num_threads(2)
    with pytest.raises(RuntimeError, match="boom"), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="num_threads must be a positive integer"), \
            torch_threads(0):
        pass


class ThreadProbe(Gaussian):
    """Records torch's thread count while its program runs."""

    seen: set = set()

    def model(self, y=None):
        ThreadProbe.seen.add(torch.get_num_threads())
        super().model(y)


def test_fit_runs_small_models_on_one_thread_and_restores_the_setting():
    torch.set_num_threads(2)
    ThreadProbe.seen = set()
    idata = fit(ThreadProbe(), gaussian_data(), method="map", num_chains=1, num_samples=20,
                **FAST)
    assert ThreadProbe.seen == {1}
    assert torch.get_num_threads() == 2
    assert verdict(idata)["settings"]["num_threads"] == 1


def test_map_with_a_gaussian_posterior_is_exact_and_has_real_sds():
    data = gaussian_data(n=10)
    idata = fit(Gaussian(), data, method="map", num_chains=2, num_samples=500, seed=3, **FAST)
    assert idata.attrs["converged"] == 1
    mu = idata.posterior["mu"].values.reshape(-1, 2)
    prec = 10 + 0.01
    mean = data["y"].numpy().sum(0) / prec
    se = math.sqrt(1 / prec / mu.shape[0])
    assert np.all(np.abs(mu.mean(0) - mean) < 4 * se)
    # sd of a sample sd: sd / sqrt(2 (n - 1))
    sd_se = math.sqrt(1 / prec / 2 / mu.shape[0])
    assert np.all(np.abs(mu.std(0) - math.sqrt(1 / prec)) < 4 * sd_se)
    summary = az.summary(idata, var_names=["mu"], kind="stats")
    assert np.isfinite(summary.values).all()
    assert verdict_line(idata).startswith("convergence: OK (map: gradient norm")


def test_map_with_a_singular_hessian_is_a_flagged_point_estimate():
    data = {"y": torch.tensor(0.5, dtype=DT)}
    with pytest.warns(ConvergenceWarning, match="not positive definite"):
        idata = fit(FlatDirection(), data, method="map", num_chains=2, num_samples=50,
                    **FAST)
    assert idata.attrs["converged"] == 0
    info = verdict(idata)
    assert info["figures"]["point_estimate"] is True
    assert idata.posterior["a"].shape == (1, 1)
    assert float(idata.posterior["a"][0, 0]) == pytest.approx(0.25, abs=1e-6)  # N(0,1) N(.5|a,1)
    assert np.isfinite(idata.log_likelihood["y"].values).all()


def test_exact_type2_map_of_least_squares_matches_an_independent_optimum():
    from scipy.optimize import minimize

    from bayesattn.models import LeastSquaresAttentionModel

    g = torch.Generator().manual_seed(4)
    key = torch.randn(25, 2, generator=g, dtype=DT)
    value = key @ torch.tensor([[1.5], [-0.7]], dtype=DT) + 0.4 * torch.randn(25, 1,
                                                                             generator=g,
                                                                             dtype=DT)
    model = LeastSquaresAttentionModel(prior_scale=dist.HalfNormal(torch.tensor(2.0, dtype=DT)),
                                       noise=dist.HalfNormal(torch.tensor(1.0, dtype=DT)))
    idata = fit(model, {"key": key, "value": value}, method="exact", num_chains=1,
                num_samples=400, seed=0, **FAST)
    assert idata.attrs["converged"] == 1
    K, y = key.numpy(), value.numpy()[:, 0]

    def neg_log(t):  # t = (log prior_scale, log noise); evidence + HalfNormal priors + Jacobian
        ps, sd = np.exp(t)
        cov = ps**2 * K @ K.T + sd**2 * np.eye(len(y))
        _, logdet = np.linalg.slogdet(cov)
        ev = -0.5 * (y @ np.linalg.solve(cov, y) + logdet + len(y) * math.log(2 * math.pi))
        prior = -0.5 * (ps / 2.0) ** 2 - 0.5 * sd**2
        return -(ev + prior + t.sum())

    best = minimize(neg_log, np.zeros(2), method="Nelder-Mead",
                    options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
    ps_hat, sd_hat = np.exp(best.x)
    assert float(idata.posterior["prior_scale"][0, 0]) == pytest.approx(ps_hat, rel=1e-4)
    assert float(idata.posterior["noise"][0, 0]) == pytest.approx(sd_hat, rel=1e-4)
    # W drawn from its exact conditional posterior given those hyperparameters
    A = K.T @ K + (sd_hat / ps_hat) ** 2 * np.eye(2)
    w_mean = np.linalg.solve(A, K.T @ y)
    w = idata.posterior["W"].values.reshape(-1, 2)
    w_sd = sd_hat * np.sqrt(np.diag(np.linalg.inv(A)))
    assert np.all(np.abs(w.mean(0) - w_mean) < 4 * w_sd / math.sqrt(len(w)))
    assert "type-II MAP of prior_scale, noise, exact W" == verdict(idata)["settings"]["type"]


def test_fit_refuses_data_over_max_memory_and_uses_minibatches_where_it_can():
    class Big(Gaussian):
        def full_data_bytes(self, data):
            return 10 * 2**30

    with pytest.raises(ValueError, match=r"10.0 GiB, over max_memory=4.0 GiB.*minibatch|"
                                         r"10.0 GiB, over max_memory=4.0 GiB"):
        fit(Big(), gaussian_data(), method="nuts", **FAST)

    class Batched(Big):
        supports_subsampling = True
        sizes: set = set()

        num_obs = 3000  # rows simulated when y is None (prior predictive)

        def model(self, y=None, subsample_size=None):
            Batched.sizes.add(subsample_size)
            mu = pyro.sample("mu", dist.Normal(torch.zeros(2, dtype=DT), 10.0).to_event(1))
            n = self.num_obs if y is None else y.shape[0]
            with pyro.plate("n", n, subsample_size=subsample_size) as idx:
                pyro.sample("y", dist.Normal(mu, 1.0).to_event(1),
                            obs=None if y is None else y[idx])

    with pytest.raises(ValueError, match="use method='svi' \\(minibatch SVI\\)"):
        fit(Batched(), gaussian_data(), method="nuts", **FAST)
    data = gaussian_data(n=3000)
    short = quiet_fit(Batched(), data, method="map", num_steps=30, learning_rate=0.01,
                      num_chains=1, num_samples=20, seed=1, **FAST)
    assert short.attrs["converged"] == 0  # 30 small steps from the prior median: flagged
    idata = fit(Batched(), data, method="map", num_steps=1000, learning_rate=0.1,
                num_chains=1, num_samples=200, seed=1, **FAST)
    assert idata.attrs["converged"] == 1, verdict_line(idata)
    assert 512 in Batched.sizes
    assert verdict(idata)["settings"]["subsample_size"] == 512
    mean = data["y"].numpy().mean(0)
    assert np.all(np.abs(idata.posterior["mu"].values.mean((0, 1)) - mean) < 0.05)


@pytest.mark.parametrize("kwargs,match", [
    ({"warmup_steps": -1}, r"warmup_steps must be a non-negative integer, got -1"),
    ({"warmup_steps": 2.5}, r"warmup_steps must be a non-negative integer, got 2.5"),
    ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*32 - num_chains\), got -1"),
    ({"target_accept_prob": 1.0}, r"target_accept_prob must be in \(0, 1\)"),
    ({"max_tree_depth": 0}, r"max_tree_depth must be a positive integer"),
    ({"init": "prior"}, r"unknown init 'prior'"),
])
def test_fit_validates_its_new_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(Gaussian(), gaussian_data(), **FAST, **kwargs)


# ----------------------------------------------------------------------------- NUTS
@pytest.mark.slow
def test_nuts_flags_the_funnel_and_passes_a_gaussian():
    with pytest.warns(ConvergenceWarning):
        bad = fit(Funnel(), {"y": torch.zeros(1, dtype=DT)}, method="nuts", num_chains=1,
                  num_samples=300, warmup_steps=200, seed=0, **FAST)
    info = verdict(bad)
    assert bad.attrs["converged"] == 0
    assert info["figures"]["divergences"] > 0
    assert any("divergent" in r for r in info["reasons"])
    assert set(info["settings"]) >= {"num_chains", "warmup_steps", "num_samples",
                                     "target_accept_prob", "max_tree_depth"}

    good = fit(Gaussian(), gaussian_data(), method="nuts", num_chains=2, num_samples=300,
               warmup_steps=200, seed=1, **FAST)
    assert good.attrs["converged"] == 1, verdict_line(good)
    assert verdict_line(good).startswith("convergence: OK (nuts: max r_hat")


@pytest.mark.slow
def test_nuts_stats_agree_with_pyro_arviz_and_the_kinetic_energy_law():
    data = gaussian_data(dim=3)
    model = Gaussian(dim=3)
    pyro.set_rng_seed(5)
    kernel = RecordingNUTS(model.model, max_plate_nesting=1)
    seen = {}

    def hook(kernel, samples, stage, i):  # Pyro's running mean acceptance probability
        seen["acc"] = float(kernel.logging()["acc. prob"])

    mcmc = MCMC(kernel, num_samples=400, warmup_steps=200, disable_progbar=True, hook_fn=hook)
    mcmc.run(**data)
    stats = kernel.stats(400)
    diag = mcmc.diagnostics()
    np.testing.assert_array_equal(np.flatnonzero(stats["diverging"]),
                                  diag["divergences"]["chain 0"])
    assert stats["acceptance_rate"].mean() == pytest.approx(seen["acc"], abs=6e-4)  # 3 digits
    # energy[t] = -lp[t-1] + kinetic energy; kinetic energy ~ chi2(3) / 2: mean 1.5, sd 1.22
    kinetic = stats["energy"][1:] + stats["lp"][:-1]
    assert (kinetic >= 0).all()
    assert abs(kinetic.mean() - 1.5) < 4 * math.sqrt(1.5) / math.sqrt(len(kinetic))
    # leapfrog steps within the doubling bounds of the measured depth
    assert (stats["n_steps"] <= 2 ** stats["tree_depth"] - 1).all()
    assert (stats["n_steps"] > 2 ** (stats["tree_depth"] - 1) - 1).all()
    # lp is the log density: for this Gaussian, log N(mu; m, s^2 I) up to one constant
    mu = mcmc.get_samples()["mu"].numpy()
    prec = 10 + 0.01
    m = data["y"].numpy().sum(0) / prec
    logq = -0.5 * prec * ((mu - m) ** 2).sum(-1)
    assert np.ptp(stats["lp"] - logq) < 1e-8

    # the fit's verdict figures against Pyro's estimators and ArviZ on the same kind of run
    idata = fit(model, data, method="nuts", num_chains=2, num_samples=300, warmup_steps=200,
                seed=6, **FAST)
    f = verdict(idata)["figures"]
    x = torch.as_tensor(idata.posterior["mu"].values)  # (chain, draw, 3)
    assert f["max_r_hat"] == pytest.approx(float(split_gelman_rubin(x).max()), abs=0.02)
    ess = effective_sample_size(x).numpy()
    assert 0.6 < f["min_ess_bulk"] / ess.min() < 1.6
    assert f["max_r_hat"] == pytest.approx(float(az.rhat(idata)["mu"].max()), abs=1e-12)
    assert f["min_bfmi"] == pytest.approx(float(az.bfmi(idata).min()), abs=1e-12)
    e = idata.sample_stats["energy"].values
    bfmi = (np.diff(e, axis=1) ** 2).sum(1) / ((e - e.mean(1, keepdims=True)) ** 2).sum(1)
    np.testing.assert_allclose(az.bfmi(idata), bfmi, rtol=1e-12)


@pytest.mark.slow
def test_nuts_with_no_warmup_keeps_every_draw_aligned():
    idata = quiet_fit(Gaussian(), gaussian_data(), method="nuts", num_chains=1,
                      num_samples=40, warmup_steps=0, seed=2, **FAST)
    assert idata.sample_stats["lp"].shape == (1, 40)
    # lp of each draw is the log density of that same draw (up to one constant)
    mu = idata.posterior["mu"].values[0]
    prec = 10 + 0.01
    m = gaussian_data()["y"].numpy().sum(0) / prec
    diff = idata.sample_stats["lp"].values[0] + 0.5 * prec * ((mu - m) ** 2).sum(-1)
    assert np.ptp(diff) < 1e-8


@pytest.mark.slow
def test_nuts_treats_an_underflowing_step_as_a_divergence_not_an_error():
    data = {"y": torch.zeros(5, dtype=DT)}
    pyro.set_rng_seed(0)
    with pytest.raises(ValueError, match="underflowed"):  # Pyro's own NUTS aborts
        MCMC(NUTS(Underflow().model), num_samples=60, warmup_steps=60,
             disable_progbar=True).run(**data)
    idata = quiet_fit(Underflow(), data, method="nuts", num_chains=1, num_samples=60,
                      warmup_steps=60, seed=0, **FAST)
    assert idata.posterior["s"].shape == (1, 60)
    assert (idata.posterior["s"].values > 0).all()
    assert idata.sample_stats["diverging"].values.any()  # the rejected steps are reported


CTRL_C_SCRIPT = textwrap.dedent("""
    import os, sys, time, torch, pyro, pyro.distributions as dist
    from bayesattn.inference import fit
    from bayesattn.models.base import BayesianModel

    class Slow(BayesianModel):
        obs_name = "y"
        def latent_names(self):
            return ["mu"]
        def model(self, y=None):
            open(os.path.join(os.environ["MARKS"], str(os.getpid())), "w").close()
            mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0), 1.0))
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    if __name__ == "__main__":
        try:
            fit(Slow(), {"y": torch.tensor(0.3)}, method="nuts", num_chains=2,
                num_samples=10**7, warmup_steps=10, chain_method="parallel",
                progress_bar=False)
        except KeyboardInterrupt:
            print("interrupted", time.time(), flush=True)
            sys.exit(130)
""")


@pytest.mark.slow
def test_ctrl_c_during_parallel_chains_exits_promptly_without_worker_tracebacks(
        tmp_path, interruptible_popen):
    script = tmp_path / "run.py"
    script.write_text(CTRL_C_SCRIPT)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "MARKS": str(marks), "PYTHONPATH": os.getcwd()}
    proc = interruptible_popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        # wait until both worker processes run the model (their pids differ from the parent's)
        while len([p for p in os.listdir(marks) if int(p) != proc.pid]) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        start = time.time()
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        out, err = proc.communicate(timeout=60)
    finally:  # a failed test must not leave the endless fit running
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err.decode()
    word, when = out.decode().split()
    assert word == "interrupted"
    # the caller has its KeyboardInterrupt within 2 s (what follows is the interpreter's own
    # teardown of torch, seconds on a loaded machine, not this package's)
    assert float(when) - start < 2.0, float(when) - start
    assert "Traceback" not in err.decode() and "leaked" not in err.decode(), err.decode()


# ----------------------------------------------------------------------------- SVI
@pytest.mark.slow
def test_svi_flags_too_few_steps_and_a_mean_field_funnel_and_passes_a_gaussian():
    with pytest.warns(ConvergenceWarning, match="ELBO still falling|too few steps"):
        short = fit(Gaussian(), gaussian_data(), method="svi", init="median", num_steps=60,
                    learning_rate=0.01, num_chains=1, num_samples=200, seed=0, **FAST)
    assert short.attrs["converged"] == 0

    # the mean-field guide cannot bend into the funnel at any step count: Pareto k measured
    # 1.16 at 800 steps (0.93 at 1500, 1.08 at 500), against the 0.7 that flags it
    with pytest.warns(ConvergenceWarning, match=r"Pareto k .* > 0.7"):
        funnel = fit(Funnel(), {"y": torch.zeros(1, dtype=DT)}, method="svi", guide="normal",
                     num_steps=800, num_chains=1, num_samples=1000, seed=0, **FAST)
    assert verdict(funnel)["figures"]["pareto_k"] > 0.7
    # guide draws are independent: sample_stats holds their log density only, no NUTS stats
    assert set(funnel.sample_stats.data_vars) == {"lp"}
    assert not {"r_hat", "ess_bulk"} & set(verdict(funnel)["figures"])

    good = fit(Gaussian(), gaussian_data(), method="svi", num_steps=1000, num_chains=1,
               num_samples=1000, seed=0, **FAST)
    info = verdict(good)
    assert good.attrs["converged"] == 1, verdict_line(good)
    assert info["figures"]["pareto_k"] < 0.5
    assert info["settings"]["guide"] == "mvn" and "warmup_steps" not in info["settings"]
    assert "r_hat" not in verdict_line(good)


# Nile: annual flow of the Nile at Aswan, 1871-1970 (statsmodels). NUTS with the CLI's GP
# priors (4 chains x 500 draws, clean verdict) gives noise 139 +- 10 (10^8 m^3): the issue's
# reference, reproduced by this branch (see the report).
NILE_NOISE, NILE_NOISE_SD = 139.0, 10.0


@pytest.mark.slow
def test_svi_on_the_nile_gp_agrees_with_nuts_or_is_flagged():
    sm = pytest.importorskip("statsmodels.api")
    from bayesattn.experiments.regression import build_model

    nile = sm.datasets.nile.load_pandas().data
    model, data, _ = build_model("gp", torch.tensor(nile["year"].values),
                                 torch.tensor(nile["volume"].values))
    for kwargs in ({}, {"guide": "normal", "init": "median", "num_steps": 1000}):
        idata = quiet_fit(model, data, method="svi", num_chains=1, num_samples=400, seed=0,
                          **kwargs, **FAST)
        noise = idata.posterior["noise"].values
        agrees = abs(noise.mean() - NILE_NOISE) < 3 * NILE_NOISE_SD
        assert agrees or idata.attrs["converged"] == 0, (kwargs, noise.mean(),
                                                         verdict_line(idata))
        if not kwargs:  # the defaults must work here, not just be flagged
            assert agrees and idata.attrs["converged"] == 1, verdict_line(idata)
