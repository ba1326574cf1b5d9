"""Simulate -> fit -> recover / compare, through bayesattn.inference.fit and compare."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest

from bayesattn.experiments.neuro import (
    model_selection_rate,
    recovery_rows,
    simulate_cueing_data,
    simulate_tva_subjects,
    tva_recovery,
)
from bayesattn.models.neuro.cueing import OBSERVERS

# num_prior_draws=0: no prior / prior-predictive groups, which nothing here reads (they were
# a fifth of the fits' time)
SVI = {"method": "svi", "guide": "mvn", "learning_rate": 0.05, "num_chains": 1,
       "num_prior_draws": 0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: one thread is faster


def test_simulated_subjects_follow_the_standard_design():
    subjects = simulate_tva_subjects(2, seed=3)
    for s in subjects:
        exposure, reported = s["data"]["exposure"], s["data"]["reported"]
        assert exposure.shape == (234,) and reported.shape == (234, 6)
        assert float(exposure.min()) == pytest.approx(16.6) and float(exposure.max()) == 200.0
        assert int(reported.sum(-1).max()) <= s["truth"]["K"]
        assert sum(s["truth"]["weights"]) == pytest.approx(1.0)


def test_recovery_rows_flag_coverage():
    rng = np.random.default_rng(0)
    post = {
        "C": rng.normal(40, 1, (1, 500)),
        "K": rng.normal(3, 0.05, (1, 500)),
        "t0": rng.normal(10, 1, (1, 500)),
        "weights": rng.dirichlet(np.full(6, 200.0), (1, 500)),
    }
    truth = {"C": 40.0, "K": 4, "t0": 10.0, "weights": [1 / 6] * 6}
    rows = {r["parameter"]: r for r in recovery_rows(az.from_dict(posterior=post), truth, 0)}
    assert rows["C"]["covered"] and rows["t0"]["covered"] and rows["weights[2]"]["covered"]
    assert not rows["K"]["covered"]  # true K = 4 far outside N(3, 0.05)


def test_cueing_data_shapes_and_errors():
    data = simulate_cueing_data("switching", seed=1, num_trials=50)
    assert data["response"].shape == (50,) and int(data["response"].max()) < 4
    with pytest.raises(ValueError, match="observer"):
        simulate_cueing_data("ideal")


@pytest.mark.slow
def test_tva_parameters_are_recovered_within_their_94pct_intervals():
    """3 simulated subjects (234 whole-report trials each), SVI with a full-rank guide.

    Measured: 25 of 27 true values (C, K, t0, 6 weights per subject) inside the 94% HDI.
    """
    subjects = simulate_tva_subjects(3, seed=0)
    table, _ = tva_recovery(subjects, {**SVI, "num_steps": 400, "num_samples": 300}, progress=False)
    coverage = table.covered.mean()
    assert coverage >= 0.8, table
    # the capacity parameters, the ones TVA studies report, are all recovered
    core = table[table.parameter.isin(["C", "K", "t0"])]
    assert core.covered.mean() >= 2 / 3
    assert (
        np.corrcoef(core[core.parameter == "C"].true, core[core.parameter == "C"]["mean"])[0, 1]
        > 0.8
    )


@pytest.mark.slow
def test_loo_picks_the_generating_cueing_observer():
    """One data set from each observer, all three fitted (SVI), ranked by PSIS-LOO.

    Measured: the generating observer is ranked first on 3 of 3 data sets.
    """
    rate, confusion = model_selection_rate(
        1, {**SVI, "num_steps": 200, "num_samples": 200}, seed=0, progress=False
    )
    assert list(confusion.index) == list(OBSERVERS)
    assert rate >= 2 / 3, confusion
