"""The models of ``bayesattn bench uncertainty``: training, validation choices, prediction.

Every method is trained on the training part of a split, makes its choices on the validation
part, and returns a *predictor* ``(x, padding_mask) -> prob_samples (S, N, C)`` (``S = 1`` for
a deterministic model). Same backbone for all (:class:`bayesattn.nn.TransformerClassifier`
sizes of :class:`bayesattn.experiments.uea.BenchConfig`), same optimiser and epochs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..nn.calibration import fit_temperature
from ..nn.gp_attention import GPMultiheadAttention
from ..nn.laplace import LastLayerLaplace
from ..nn.metrics import negative_log_likelihood
from ..nn.stochastic import sample_probs, swap_attention, total_kl
from ..nn.temperature import TemperaturePosteriorAttention
from ..nn.training import iterate_minibatches, minibatch_descent, train_classifier
from ..nn.transformer import TransformerClassifier

__all__ = ["METHODS", "LABELS", "GROUPS", "Fitted", "predict_logits", "MethodTrainer"]

#: Methods of the benchmark, in table order.
METHODS = ("softmax", "softmax_ts", "kernel_ts", "least_squares_ts", "ensemble", "mc_dropout",
           "laplace", "temperature_posterior", "gp_attention", "bam")
LABELS = {
    "softmax": "softmax (no TS)",
    "softmax_ts": "softmax + TS",
    "kernel_ts": "kernel + TS",
    "least_squares_ts": "least-squares + TS",
    "ensemble": "deep ensemble (softmax)",
    "mc_dropout": "MC dropout (softmax)",
    "laplace": "last-layer Laplace (softmax)",
    "temperature_posterior": "posterior over temperature",
    "gp_attention": "GP attention (SGPA-style)",
    "bam": "BAM (SVI)",
}
GROUPS = {"softmax": "deterministic", "softmax_ts": "deterministic",
          "kernel_ts": "deterministic", "least_squares_ts": "deterministic",
          "ensemble": "baseline", "mc_dropout": "baseline", "laplace": "baseline",
          "temperature_posterior": "bayesian_attention", "gp_attention": "bayesian_attention",
          "bam": "bayesian_attention"}


@dataclass
class Fitted:
    """A trained method: its predictor, cost and the choices made on validation."""

    predict: object  # (x, padding_mask) -> (S, N, C)
    train_seconds: float
    parameters: int
    chosen: dict = field(default_factory=dict)


@torch.no_grad()
def predict_logits(model, x, padding_mask, batch_size: int = 512) -> torch.Tensor:
    """Eval-mode logits ``(N, C)`` of a deterministic classifier."""
    was = model.training
    model.eval()
    out = torch.cat([model(xb, pm) for _, xb, pm, _ in
                     iterate_minibatches(x, padding_mask, None, batch_size, shuffle=False)])
    model.train(was)
    return out


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _val_nll(samples: torch.Tensor, y: torch.Tensor) -> float:
    return negative_log_likelihood(samples.mean(0), y)


class MethodTrainer:
    """Trains the methods on one split (``train``, ``val``) with one seed.

    Args:
        config: :class:`bayesattn.experiments.uncertainty.UncertaintyConfig`.
        train, val: :class:`bayesattn.data.japanese_vowels.SequenceSplit` (standardised).
        num_classes: ``C``.
        seed: base seed; each model gets its own offset.
    """

    def __init__(self, config, train, val, num_classes: int, seed: int) -> None:
        self.cfg, self.train, self.val, self.C, self.seed = config, train, val, num_classes, seed
        self.F = train.x.shape[-1]
        self._softmax = None

    def sizes(self) -> dict:
        c = self.cfg
        return {"d_model": c.d_model, "nhead": c.nhead, "num_layers": c.num_layers,
                "dim_feedforward": c.dim_feedforward, "dropout": c.dropout}

    # ------------------------------------------------------------------ deterministic
    def _train_det(self, kind: str, seed: int):
        torch.manual_seed(seed)
        model = TransformerClassifier(self.F, self.C, attention=kind, **self.sizes())
        start = time.perf_counter()
        train_classifier(model, self.train.x, self.train.padding_mask, self.train.y,
                         epochs=self.cfg.epochs, batch_size=self.cfg.batch_size, lr=self.cfg.lr,
                         weight_decay=self.cfg.weight_decay, seed=seed, progress=False)
        return model, time.perf_counter() - start

    def softmax_model(self):
        """The deterministic softmax network (shared by softmax, TS, ensemble member 0, MC
        dropout and Laplace): ``(model, train_seconds)``."""
        if self._softmax is None:
            self._softmax = self._train_det("softmax", self.seed * 1000)
        return self._softmax

    def deterministic(self, kind: str, *, temperature_scaling: bool) -> Fitted:
        """Deterministic ``kind`` attention, optionally temperature-scaled on validation."""
        if kind == "softmax":
            model, seconds = self.softmax_model()
        else:
            offset = {"kernel": 1, "least_squares": 2}[kind]
            model, seconds = self._train_det(kind, self.seed * 1000 + offset)
        chosen = {}
        T = 1.0
        if temperature_scaling:
            start = time.perf_counter()
            T = fit_temperature(predict_logits(model, self.val.x, self.val.padding_mask),
                                self.val.y)
            seconds += time.perf_counter() - start
            chosen["temperature"] = T

        def predict(x, pm, model=model, T=T):
            return (predict_logits(model, x, pm) / T).softmax(-1).unsqueeze(0)

        return Fitted(predict, seconds, _n_params(model), chosen)

    # ------------------------------------------------------------------ baselines
    def ensemble(self) -> Fitted:
        """Deep ensemble (Lakshminarayanan et al. 2017): ``ensemble_size`` softmax networks
        from different initialisations and minibatch orders; member 0 is the softmax model."""
        members = [self.softmax_model()]
        for m in range(1, self.cfg.ensemble_size):
            members.append(self._train_det("softmax", self.seed * 1000 + 100 + m))
        models = [m for m, _ in members]

        def predict(x, pm, models=models):
            return torch.stack([predict_logits(m, x, pm).softmax(-1) for m in models])

        return Fitted(predict, sum(s for _, s in members), sum(map(_n_params, models)),
                      {"members": len(models)})

    def mc_dropout(self) -> Fitted:
        """MC dropout (Gal & Ghahramani 2016) on the softmax network: dropout kept on at test,
        ``mc_samples`` passes (dropout rate = the training rate, not tuned)."""
        model, seconds = self.softmax_model()
        S = self.cfg.mc_samples

        def predict(x, pm, model=model):
            return sample_probs(model, x, pm, num_samples=S, dropout=True)

        return Fitted(predict, seconds, _n_params(model), {"dropout": self.cfg.dropout})

    def laplace(self) -> Fitted:
        """Last-layer Laplace with a full GGN; prior precision chosen on validation NLL."""
        model, seconds = self.softmax_model()
        start = time.perf_counter()
        la = LastLayerLaplace(model).fit(self.train.x, self.train.padding_mask, self.train.y)
        tau = la.optimize_prior_precision(self.val.x, self.val.padding_mask, self.val.y,
                                          self.cfg.laplace_prior_grid,
                                          num_samples=self.cfg.laplace_samples)
        seconds += time.perf_counter() - start
        gen = torch.Generator().manual_seed(self.seed)

        def predict(x, pm, la=la):
            return la.predict(x, pm, num_samples=self.cfg.laplace_samples, generator=gen)

        return Fitted(predict, seconds, _n_params(model), {"prior_precision": tau})

    # ------------------------------------------------------------------ Bayesian attention
    def _train_stochastic(self, factory, seed: int):
        torch.manual_seed(seed)
        model = swap_attention(TransformerClassifier(self.F, self.C, **self.sizes()), factory)
        N = len(self.train)
        variational = [p for n, p in model.named_parameters() if "temperature_" in n]
        ids = {id(p) for p in variational}
        point = [p for p in model.parameters() if id(p) not in ids]

        def loss_fn(xb, pm, yb):
            return F.cross_entropy(model(xb, pm), yb) + total_kl(model) / N

        start = time.perf_counter()
        model.train()
        minibatch_descent(
            [{"params": point, "weight_decay": self.cfg.weight_decay},
             {"params": variational, "weight_decay": 0.0}], loss_fn, self.train.x,
            self.train.padding_mask, self.train.y, epochs=self.cfg.epochs,
            batch_size=self.cfg.batch_size, lr=self.cfg.lr, clip_norm=1.0,
            generator=torch.Generator().manual_seed(seed), progress=False, desc="train")
        model.eval()
        return model, time.perf_counter() - start

    def _mc(self, model):
        S = self.cfg.mc_samples

        def predict(x, pm, model=model):
            return sample_probs(model, x, pm, num_samples=S)

        return predict

    def temperature_posterior(self) -> Fitted:
        """Softmax attention with a Gaussian posterior over each head's log-temperature."""
        c = self.cfg

        def factory():
            return TemperaturePosteriorAttention(c.d_model, c.nhead, c.dropout, batch_first=True,
                                                 prior_scale=c.temperature_prior_scale)

        model, seconds = self._train_stochastic(factory, self.seed * 1000 + 3)
        return Fitted(self._mc(model), seconds, _n_params(model),
                      {"prior_scale": c.temperature_prior_scale})

    def gp_attention(self, amplitude: float) -> Fitted:
        """GP attention with sampled outputs of prior sd ``amplitude``."""
        c = self.cfg

        def factory():
            return GPMultiheadAttention(c.d_model, c.nhead, c.dropout, batch_first=True,
                                        amplitude=amplitude)

        model, seconds = self._train_stochastic(factory, self.seed * 1000 + 4)
        return Fitted(self._mc(model), seconds, _n_params(model), {"amplitude": amplitude})

    def bam(self, attention_kl_weight: float) -> Fitted:
        """The BAM-style :class:`bayesattn.nn.BayesianTransformerClassifier` fitted by SVI."""
        import pyro

        from ..nn.bayesian import BayesianTransformerClassifier, predict_bayesian, train_svi

        seed = self.seed * 1000 + 5
        pyro.set_rng_seed(seed)
        model = BayesianTransformerClassifier(self.F, self.C, **self.sizes(),
                                              attention_kl_weight=attention_kl_weight)
        start = time.perf_counter()
        guide, _ = train_svi(model, self.train.x, self.train.padding_mask, self.train.y,
                             epochs=self.cfg.epochs, batch_size=self.cfg.batch_size,
                             lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, seed=seed,
                             progress=False, init_scale=0.01)
        seconds = time.perf_counter() - start
        store = pyro.get_param_store()
        tag = model._pyro_name
        params = sum(p.numel() for n, p in store.named_parameters() if tag in n)
        S = self.cfg.mc_samples

        def predict(x, pm, model=model, guide=guide):
            return predict_bayesian(model, guide, x, pm, num_samples=S)["prob_samples"]

        return Fitted(predict, seconds, params, {"attention_kl_weight": attention_kl_weight})

    # ------------------------------------------------------------------ one entry point
    def fit(self, method: str, choice=None) -> Fitted:
        """Train ``method`` (one of :data:`METHODS`); ``choice`` is the grid value of
        ``gp_attention`` (amplitude) and ``bam`` (attention-KL coefficient).

        Raises:
            ValueError: unknown ``method``.
        """
        if method == "softmax":
            return self.deterministic("softmax", temperature_scaling=False)
        if method.endswith("_ts"):
            return self.deterministic(method[:-3], temperature_scaling=True)
        if method in ("ensemble", "mc_dropout", "laplace", "temperature_posterior"):
            return getattr(self, method)()
        if method == "gp_attention":
            return self.gp_attention(choice)
        if method == "bam":
            return self.bam(choice)
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")

    def select(self, method: str, grid) -> tuple[Fitted, dict]:
        """Fit ``method`` for each ``grid`` value; keep the one with the lowest validation NLL.

        Returns:
            ``(fitted, {value: validation NLL})``.
        """
        best, best_nll, scores = None, float("inf"), {}
        for value in grid:
            fitted = self.fit(method, value)
            scores[value] = _val_nll(fitted.predict(self.val.x, self.val.padding_mask),
                                     self.val.y)
            if scores[value] < best_nll:
                best, best_nll = fitted, scores[value]
        return best, scores
