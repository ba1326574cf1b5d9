"""``AttentionRegressor``: uncertainty-aware attention regression as a scikit-learn estimator.

Fit one of the attention regression models of :mod:`bayesattn.models.defaults` (kernel,
softmax, GP or least-squares attention, with weakly informative priors and per-feature ARD
bandwidths or lengthscales) to a table ``X (n, p)``, ``y (n,)`` or ``(n, k)`` by NUTS, SVI,
MAP or the exact posterior (:func:`bayesattn.inference.fit`), then predict new rows with the
posterior predictive distribution: mean and standard deviation by the law of total variance
over posterior draws (:func:`bayesattn.inference.predictive.predictive_moments`), draws, and
central intervals.

For the kernel and softmax models the memory is the training set: at fit time each row attends
to every other row (leave-one-out, so the bandwidth cannot collapse onto the row itself), and a
new query attends to all training rows.

A fitted estimator is saved as its InferenceData (``.nc``) plus a JSON specification (the
settings, the priors as text, the standardisation and the training data the predictions need):
:meth:`AttentionRegressor.save`, :meth:`AttentionRegressor.load`; no code object is pickled.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

import arviz as az
import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .inference import METHODS, fit
from .inference.predictive import posterior_draws, predictive_moments
from .inference.threads import auto_num_threads, torch_threads
from .io import atomic_path
from .models.defaults import MODELS, build_regression_model

__all__ = ["SPEC_FORMAT", "AttentionRegressor"]

#: the ``"format"`` entry of a saved specification
SPEC_FORMAT = "bayesattn.AttentionRegressor"
_SPEC_VERSION = 1
#: rows of new inputs predicted at once (bounds the (rows, n_train) attention matrices)
_CHUNK = 1024
#: arguments of :func:`bayesattn.inference.fit` the estimator exposes (None: fit's default)
_FIT_OPTIONS = ("num_samples", "warmup_steps", "num_chains", "num_steps", "learning_rate",
                "guide")


def _check_positive_int(name: str, value) -> int:
    """``value`` as an int when it is a positive integer (bools refused).

    Raises:
        ValueError: anything else, naming ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _standardize(a: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(a - loc) / scale`` (one place, so a loaded model repeats it bit for bit)."""
    return (a - loc) / scale


class AttentionRegressor(RegressorMixin, BaseEstimator):
    """Bayesian attention regression with posterior predictive uncertainty (scikit-learn API).

    The models, priors and their sources: :mod:`bayesattn.models.defaults` (docs/design.md,
    "Regression models", "Key-selection models"). The predictive mean and variance combine
    the draws by the law of total variance (Gelman et al. 2013, *Bayesian Data Analysis*,
    3rd ed., section 2.5).

    Args:
        attention: ``"kernel"`` (Gaussian-kernel / Nadaraya-Watson attention), ``"softmax"``,
            ``"gp"`` (Gaussian-process attention) or ``"least_squares"`` (Bayesian linear
            regression).
        method: ``"nuts"``, ``"svi"``, ``"map"`` or ``"exact"`` (see
            :func:`bayesattn.inference.fit`; ``"exact"`` needs a closed-form posterior).
        priors: optional ``{hyperparameter: number or text}``, e.g.
            ``{"noise": "HalfNormal(0.5)", "bandwidth": 0.3}``, replacing default priors
            (:func:`bayesattn.models.defaults.parse_prior`); in standardised units when
            ``standardize`` is true.
        standardize: centre and scale every input column and target column to mean 0, sd 1
            before fitting (columns with sd 0 are only centred); predictions are returned in
            the units of ``y``.
        random_state: int seed, ``numpy.random.RandomState`` or None (a fresh seed); the seed
            used is kept in ``seed_`` and seeds the fit and every prediction.
        num_samples, warmup_steps, num_chains, num_steps, learning_rate, guide: passed to
            :func:`bayesattn.inference.fit` when not None (None: ``fit``'s default). They are
            named parameters, not ``**kwargs``, so that ``clone``, ``GridSearchCV`` and
            ``get_params`` see them.
        max_draws: most posterior draws used per prediction (a seeded random subset).
        progress_bar: show the fit's progress bars.

    Attributes:
        idata_: the fit's :class:`arviz.InferenceData` (parameters in standardised units when
            ``standardize``).
        model_: the fitted :class:`bayesattn.models.base.BayesianModel`.
        n_features_in_: ``p``. feature_names_in_: column names when ``X`` was a DataFrame.
        n_outputs_: ``k`` (1 for 1-d ``y``).
        x_mean_, x_scale_ ``(p,)``, y_mean_, y_scale_ ``(k,)``: the standardisation.
        seed_: the integer seed used.
        converged_: the fit's verdict (``idata.attrs["converged"]``) or None when the fit
            records none.

    Raises:
        ValueError (from :meth:`fit`): unknown ``attention`` or ``method``; bad priors; fewer
            than 3 rows; a constant input column (``standardize=False``) or constant ``y``;
            non-finite data.
        NotImplementedError (from :meth:`fit`): ``method="exact"`` for a model without a
            closed-form posterior.
    """

    def __init__(self, attention="kernel", method="nuts", priors=None, standardize=True,
                 random_state=None, *, num_samples=None, warmup_steps=None, num_chains=None,
                 num_steps=None, learning_rate=None, guide=None, max_draws=400,
                 progress_bar=False):
        self.attention = attention
        self.method = method
        self.priors = priors
        self.standardize = standardize
        self.random_state = random_state
        self.num_samples = num_samples
        self.warmup_steps = warmup_steps
        self.num_chains = num_chains
        self.num_steps = num_steps
        self.learning_rate = learning_rate
        self.guide = guide
        self.max_draws = max_draws
        self.progress_bar = progress_bar

    # ------------------------------------------------------------------ scikit-learn tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        # softmax attention weighs keys by the dot product q . k (larger-norm keys win), not by
        # distance, so it is no nonparametric smoother: scikit-learn's check that a regressor
        # reaches R^2 > 0.5 on its training data does not apply to it
        tags.regressor_tags.poor_score = self.attention == "softmax"
        return tags

    # ------------------------------------------------------------------ fitting
    def _check_settings(self):
        if self.attention not in MODELS:
            raise ValueError(f"attention must be one of {', '.join(MODELS)}, "
                             f"got {self.attention!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.priors is not None and not isinstance(self.priors, dict):
            raise TypeError(f"priors must be a dict or None, got {type(self.priors).__name__}")
        _check_positive_int("max_draws", self.max_draws)

    def _seed(self) -> int:
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            if not 0 <= int(rs) < 2**31:
                raise ValueError(f"random_state must be from 0 to 2**31 - 1, got {rs}")
            return int(rs)
        return int(check_random_state(rs).randint(0, 2**31 - 1))

    def fit(self, X, y):
        """Fit the model to inputs ``X (n, p)`` and targets ``y (n,)`` or ``(n, k)``.

        Returns:
            self.

        Raises:
            ValueError, TypeError, NotImplementedError: see the class docstring.
        """
        self._check_settings()
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        if X.shape[0] < 3:
            raise ValueError(f"AttentionRegressor needs at least 3 samples, got "
                             f"n_samples = {X.shape[0]}")
        y2 = y.reshape(len(y), -1)
        self.n_outputs_ = y2.shape[1]
        self._y_ndim = y.ndim
        if self.standardize:
            self.x_mean_, self.x_scale_ = X.mean(0), X.std(0)
            self.y_mean_, self.y_scale_ = y2.mean(0), y2.std(0)
            self.x_scale_[self.x_scale_ == 0] = 1.0
            self.y_scale_[self.y_scale_ == 0] = 1.0
        else:
            self.x_mean_, self.x_scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
            self.y_mean_, self.y_scale_ = np.zeros(y2.shape[1]), np.ones(y2.shape[1])
        self.seed_ = self._seed()
        self._X_train, self._y_train = X.copy(), y2.copy()
        self._build()
        options = {k: getattr(self, k) for k in _FIT_OPTIONS if getattr(self, k) is not None}
        self.idata_ = fit(self.model_, self._data, method=self.method, seed=self.seed_,
                          progress_bar=self.progress_bar, **options)
        self._set_verdict()
        return self

    def _build(self):
        """The model and its data from the stored training set and standardisation."""
        Xs = _standardize(self._X_train, self.x_mean_, self.x_scale_)
        ys = _standardize(self._y_train, self.y_mean_, self.y_scale_)
        if self.standardize:
            # a constant input column carries no information: give it a unit range so the
            # default priors stay finite (it is 0 after centring)
            Xs = np.where(np.ptp(Xs, axis=0) == 0, 0.0, Xs)
        self.model_, self._data, self._features = build_regression_model(
            self.attention, torch.as_tensor(Xs), torch.as_tensor(ys), self.priors,
            constant_ok=self.standardize)

    def _set_verdict(self):
        conv = self.idata_.attrs.get("converged")
        self.converged_ = None if conv is None else bool(int(conv))

    # ------------------------------------------------------------------ prediction
    def _query(self, X):
        check_is_fitted(self, "idata_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._features(torch.as_tensor(_standardize(X, self.x_mean_, self.x_scale_)))

    def _threads(self, query: torch.Tensor):
        """The torch thread count for predicting at ``query`` (one for a small model), as a
        context that restores the caller's (:func:`~bayesattn.inference.threads.torch_threads`)."""
        return torch_threads(auto_num_threads(self.model_, self._data, query.shape[0]))

    def _shape_out(self, a: np.ndarray) -> np.ndarray:
        """``(m, k)`` in standardised units to y's units and y's dimensionality."""
        return a[:, 0] if self._y_ndim == 1 else a

    def predict(self, X, return_std: bool = False):
        """Posterior predictive mean (and sd) of ``y`` at new inputs ``X (m, p)``, y's units.

        Mean ``mean_d m(theta_d)``, variance ``mean_d v(theta_d) + var_d m(theta_d)`` over at
        most ``max_draws`` posterior draws, where ``m, v`` are the model's predictive mean and
        variance of a new observation given draw ``theta_d`` (noise included).

        Returns:
            ``mean (m,)`` or ``(m, k)`` (the shape of ``y``); with ``return_std`` also ``sd``
            of the same shape.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
            ValueError: ``X`` has the wrong number of columns or non-finite values.
        """
        query = self._query(X)
        means, sds = [], []
        for start in range(0, query.shape[0], _CHUNK):
            m, s = predictive_moments(self.model_, self.idata_, query[start:start + _CHUNK],
                                      self._data, max_draws=self.max_draws, seed=self.seed_)
            means.append(m.numpy())
            sds.append(s.numpy())
        mean = np.concatenate(means) * self.y_scale_ + self.y_mean_
        if not return_std:
            return self._shape_out(mean)
        sd = np.concatenate(sds) * self.y_scale_
        return self._shape_out(mean), self._shape_out(sd)

    def sample_y(self, X, n_samples: int = 1, random_state=0):
        """Draws of new observations at ``X (m, p)`` from the posterior predictive, y's units.

        Each draw picks a posterior draw at random (with replacement) and draws a new
        observation from the model given it (for kernel/softmax attention the mixture over
        the training rows), so the draws mix parameter uncertainty and noise.

        Args:
            X: ``(m, p)`` new inputs.
            n_samples: number of draws.
            random_state: int, ``RandomState`` or None.

        Returns:
            ``(m, n_samples)`` for 1-d ``y``, ``(m, k, n_samples)`` otherwise (the layout of
            scikit-learn's ``GaussianProcessRegressor.sample_y``).

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
            ValueError: ``n_samples < 1``; bad ``X``.
        """
        n_samples = _check_positive_int("n_samples", n_samples)
        query = self._query(X)
        rng = check_random_state(random_state)
        names = self.model_.latent_names()
        total = _num_draws(self.idata_, names)
        draws, num = posterior_draws(self.idata_, names, max_draws=total, seed=self.seed_)
        picks = rng.randint(0, num, size=n_samples)
        gen = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
        out = torch.empty(n_samples, query.shape[0], self.n_outputs_, dtype=torch.float64)
        with self._threads(query), torch.no_grad():
            for d in np.unique(picks):  # the predictive once per posterior draw picked
                where = torch.as_tensor(np.nonzero(picks == d)[0])
                params = {k: v[d] for k, v in draws.items()}
                out[where] = self.model_.predictive_sample(query, params, self._data, gen,
                                                           num_samples=len(where)).to(out.dtype)
        samples = out.numpy() * self.y_scale_ + self.y_mean_  # (n_samples, m, k)
        samples = np.moveaxis(samples, 0, -1)  # (m, k, n_samples)
        return samples[:, 0, :] if self._y_ndim == 1 else samples

    def predict_interval(self, X, prob: float = 0.94, *, n_samples: int = 2000,
                         random_state=None):
        """Central posterior predictive interval of mass ``prob`` at ``X (m, p)``, y's units.

        The ``(1 - prob) / 2`` and ``(1 + prob) / 2`` quantiles of ``n_samples`` draws of
        :meth:`sample_y` (Monte Carlo: the quantiles' error shrinks as
        ``1 / sqrt(n_samples)``).

        Args:
            X: ``(m, p)`` new inputs.
            prob: interval mass, in (0, 1).
            n_samples: predictive draws used.
            random_state: seed of the draws (None: the fit's ``seed_``, so the interval is
                reproducible).

        Returns:
            ``(lower, upper)``, each the shape of ``predict(X)``.

        Raises:
            ValueError: ``prob`` outside (0, 1); bad ``n_samples`` or ``X``.
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
        """
        if isinstance(prob, bool) or not isinstance(prob, numbers.Real) \
                or not 0 < float(prob) < 1:
            raise ValueError(f"prob must be a number in (0, 1), got {prob!r}")
        check_is_fitted(self, "idata_")
        seed = self.seed_ if random_state is None else random_state
        draws = self.sample_y(X, n_samples, random_state=seed)
        lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=-1)
        return lo, hi

    def log_predictive_density(self, X, y) -> np.ndarray:
        """Log posterior predictive density ``log p(y*_i | x*_i, data)`` of observed ``y``.

        ``log mean_d p(y*_i | x*_i, theta_d)`` over at most ``max_draws`` posterior draws (a
        log-sum-exp), in the units of ``y`` (the standardisation's Jacobian is included). Per
        draw the density is the model's own: a mixture over the training rows
        ``sum_j w_ij N(y; v_j, noise^2)`` for kernel and softmax attention, a Gaussian with the
        model's predictive mean and variance for GP and least-squares attention. The mean over
        test rows is the "mean log predictive density" (Gelman, Hwang & Vehtari 2014,
        "Understanding predictive information criteria", eq. 1).

        Args:
            X: ``(m, p)`` inputs. y: ``(m,)`` or ``(m, k)`` targets (the fitted shape).

        Returns:
            ``(m,)`` log densities (summed over the ``k`` target columns).

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
            ValueError: ``y`` of the wrong shape or non-finite; bad ``X``.
        """
        from torch.distributions import Normal

        from .models.selection import KeySelectionModel

        query = self._query(X)
        y = np.asarray(y, dtype=np.float64)
        y2 = y.reshape(len(y), -1) if y.ndim == 1 else y
        if y2.shape != (query.shape[0], self.n_outputs_) or not np.isfinite(y2).all():
            raise ValueError(f"y must be finite with shape ({query.shape[0]},"
                             f"{' ' + str(self.n_outputs_) if self._y_ndim == 2 else ''}), "
                             f"got {y.shape}")
        ys = torch.as_tensor(_standardize(y2, self.y_mean_, self.y_scale_))
        draws, num = posterior_draws(self.idata_, self.model_.latent_names(),
                                     max_draws=self.max_draws, seed=self.seed_)
        model = self.model_
        out = []
        with self._threads(query), torch.no_grad():
            for d in range(num):
                params = {k: v[d] for k, v in draws.items()}
                if isinstance(model, KeySelectionModel):
                    fixed = model._fixed(params)
                    log_w = model._log_weights(query, fixed, None, None)  # (m, S)
                    comp = Normal(model.value.unsqueeze(0), fixed["noise"]).log_prob(
                        ys.unsqueeze(1)).sum(-1)
                    out.append(torch.logsumexp(log_w + comp, dim=-1))
                else:
                    mean, var = model.predict(query, params, self._data)
                    out.append(Normal(mean, var.sqrt()).log_prob(ys).sum(-1))
        lpd = torch.logsumexp(torch.stack(out), dim=0) - math.log(num)
        return lpd.numpy() - float(np.log(self.y_scale_).sum())

    # ------------------------------------------------------------------ saving
    def to_spec(self, idata_file: str) -> dict:
        """The JSON-serialisable specification of the fitted estimator.

        Args:
            idata_file: the name of the ``.nc`` file that holds ``idata_`` (relative to the
                specification's folder).

        Returns:
            ``{"format", "format_version", "bayesattn_version", "params", "seed", "idata",
            "feature_names", "y_ndim", "x_mean", "x_scale", "y_mean", "y_scale", "X", "y"}``
            (floats round-trip exactly through JSON).

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
            TypeError: ``priors`` holds something other than numbers and texts.
        """
        check_is_fitted(self, "idata_")
        params = self.get_params(deep=False)
        if not isinstance(params["random_state"], numbers.Integral | type(None)):
            params["random_state"] = None  # a RandomState object: seed_ keeps the seed used
        for name, value in (params["priors"] or {}).items():
            if not isinstance(value, numbers.Real | str) or isinstance(value, bool):
                raise TypeError(f"priors[{name!r}] cannot be saved: only numbers and texts "
                                "such as 'LogNormal(0, 1)' can")
        return _make_spec(params, self.seed_, idata_file,
                          getattr(self, "feature_names_in_", None), self._y_ndim,
                          (self.x_mean_, self.x_scale_, self.y_mean_, self.y_scale_),
                          self._X_train, self._y_train)

    @classmethod
    def from_spec(cls, spec: dict, idata) -> AttentionRegressor:
        """A fitted estimator from :meth:`to_spec`'s dict and its InferenceData.

        Raises:
            ValueError: not a specification of this format, or one that does not fit together
                (shapes, a model the posterior does not match).
        """
        _check_format(spec, "")
        if spec.get("format_version") != _SPEC_VERSION:
            raise ValueError(f"unsupported specification version {spec.get('format_version')!r}"
                             f" (this bayesattn reads version {_SPEC_VERSION})")
        try:
            est = cls(**spec["params"])
            est._check_settings()
            est._X_train = np.asarray(spec["X"], dtype=np.float64)
            est._y_train = np.asarray(spec["y"], dtype=np.float64)
            est.x_mean_ = np.asarray(spec["x_mean"], dtype=np.float64)
            est.x_scale_ = np.asarray(spec["x_scale"], dtype=np.float64)
            est.y_mean_ = np.asarray(spec["y_mean"], dtype=np.float64)
            est.y_scale_ = np.asarray(spec["y_scale"], dtype=np.float64)
            est.seed_ = int(spec["seed"])
            est._y_ndim = int(spec["y_ndim"])
            names = spec.get("feature_names")
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed {SPEC_FORMAT} specification ({err!r})") from None
        X, y = est._X_train, est._y_train
        p = X.shape[1] if X.ndim == 2 else -1
        if (X.ndim != 2 or y.ndim != 2 or len(X) != len(y) or est.x_mean_.shape != (p,)
                or est.x_scale_.shape != (p,) or est.y_mean_.shape != (y.shape[1],)
                or est.y_scale_.shape != (y.shape[1],) or est._y_ndim not in (1, 2)):
            raise ValueError(f"malformed {SPEC_FORMAT} specification (shapes disagree)")
        est.n_features_in_, est.n_outputs_ = p, y.shape[1]
        if names is not None:
            if len(names) != p:
                raise ValueError(f"malformed {SPEC_FORMAT} specification (feature names)")
            est.feature_names_in_ = np.asarray(names, dtype=object)
        est._build()
        missing = [n for n in est.model_.latent_names()
                   if "posterior" not in idata.groups() or n not in idata.posterior]
        if missing:
            raise ValueError(f"the InferenceData lacks posterior draws of {', '.join(missing)}")
        est.idata_ = idata
        est._set_verdict()
        return est

    @classmethod
    def from_fit(cls, attention: str, method: str, X, y, idata, *, seed: int,
                 feature_names=None) -> AttentionRegressor:
        """A fitted estimator around an InferenceData fitted elsewhere in data units.

        For a fit of :func:`bayesattn.models.defaults.build_regression_model` ``(attention,
        X, y)`` with the default priors (as ``bayesattn fit`` and the demo do):
        ``standardize=False`` and ``random_state=seed``.

        Args:
            attention, method: as the constructor's.
            X: ``(n, p)`` inputs; y: ``(n,)`` targets (data units).
            idata: the fit's InferenceData.
            seed: the fit's seed.
            feature_names: optional ``p`` column names.

        Raises:
            ValueError: as :meth:`from_spec`.
        """
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        X = X[:, None] if X.ndim == 1 else X
        y2 = y.reshape(len(y), -1)
        params = cls(attention, method, standardize=False, random_state=seed).get_params()
        p, k = X.shape[1], y2.shape[1]
        identity = (np.zeros(p), np.ones(p), np.zeros(k), np.ones(k))
        spec = _make_spec(params, seed, "", feature_names, y.ndim, identity, X, y2)
        return cls.from_spec(spec, idata)

    def save(self, path) -> tuple[Path, Path]:
        """Save as ``STEM.nc`` (the InferenceData) and ``STEM.json`` (:meth:`to_spec`).

        ``path`` is the stem, or either file's name (a ``.json`` or ``.nc`` suffix is
        dropped). Both files are written atomically, the ``.nc`` first, so a specification
        never names a missing or partial InferenceData.

        Returns:
            ``(spec_path, idata_path)``.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
            OSError: the folder does not exist or is not writable.
        """
        stem = _stem(path)
        nc, spec_path = stem.with_name(stem.name + ".nc"), stem.with_name(stem.name + ".json")
        spec = self.to_spec(nc.name)
        with atomic_path(nc) as tmp:
            self.idata_.to_netcdf(str(tmp))
        with atomic_path(spec_path) as tmp:
            tmp.write_text(json.dumps(spec) + "\n", encoding="utf-8")
        return spec_path, nc

    @classmethod
    def load(cls, path) -> AttentionRegressor:
        """Load an estimator saved by :meth:`save` (``path``: the stem, ``.json`` or ``.nc``).

        Raises:
            FileNotFoundError: the specification or its ``.nc`` file is missing.
            ValueError: the file is not a specification (see :meth:`from_spec`) or not JSON;
                the ``.nc`` file is not a readable InferenceData.
        """
        stem = _stem(path)
        spec_path = stem.with_name(stem.name + ".json")
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{spec_path}: not JSON ({err})") from None
        _check_format(spec, f"{spec_path}: ")
        nc = spec_path.parent / Path(spec["idata"]).name
        if not nc.is_file():
            raise FileNotFoundError(f"{nc}: the InferenceData named by {spec_path} is missing")
        try:
            idata = load_idata(nc)
        except (OSError, ValueError) as err:
            raise ValueError(f"{nc}: not a readable InferenceData netCDF file ({err})") from None
        return cls.from_spec(spec, idata)


def load_idata(path) -> az.InferenceData:
    """Read an InferenceData from netCDF fully into memory (the file is not kept open)."""
    with az.rc_context({"data.load": "eager"}):
        return az.from_netcdf(str(path))


def _make_spec(params: dict, seed: int, idata_file: str, feature_names, y_ndim: int,
               scaling, X: np.ndarray, y: np.ndarray) -> dict:
    """The specification dict of :meth:`AttentionRegressor.to_spec` (one place for its keys).

    ``scaling``: ``(x_mean (p,), x_scale (p,), y_mean (k,), y_scale (k,))``; ``X (n, p)``,
    ``y (n, k)`` the training data.
    """
    from . import __version__

    x_mean, x_scale, y_mean, y_scale = (np.asarray(a, dtype=np.float64) for a in scaling)
    return {
        "format": SPEC_FORMAT, "format_version": _SPEC_VERSION,
        "bayesattn_version": __version__, "params": params, "seed": int(seed),
        "idata": idata_file,
        "feature_names": None if feature_names is None else [str(n) for n in feature_names],
        "y_ndim": int(y_ndim),
        "x_mean": x_mean.tolist(), "x_scale": x_scale.tolist(),
        "y_mean": y_mean.tolist(), "y_scale": y_scale.tolist(),
        "X": np.asarray(X).tolist(), "y": np.asarray(y).tolist(),
    }


def _check_format(spec, where: str) -> None:
    """Refuse anything but a dict with this format's ``"format"`` and a text ``"idata"``.

    Raises:
        ValueError: ``"{where}not a bayesattn.AttentionRegressor specification"``.
    """
    if (not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT
            or not isinstance(spec.get("idata"), str)):
        raise ValueError(f"{where}not a {SPEC_FORMAT} specification")


def _stem(path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".json", ".nc") else path


def _num_draws(idata, names) -> int:
    if not names:
        return 1
    post = idata.posterior
    return int(post.sizes["chain"] * post.sizes["draw"])
