"""In-context (few-shot) regression: task families, training-free references, and a small
Transformer that reads a prompt of ``(x_i, y_i)`` pairs and predicts ``y`` at query points.

Task families (one function drawn per prompt; Garg et al. 2022, arXiv 2208.01066, for the
linear and two-layer-network families; Finn et al. 2017 for the sinusoids):

* ``linear{d}``: ``x ~ N(0, I_d)``, ``w ~ N(0, I_d)``, ``y = w . x + eps``,
  ``eps ~ N(0, sigma^2)``; the posterior mean under this prior, ridge regression with
  ``lambda = sigma^2``, is the Bayes-optimal predictor (Bishop 2006, eq. 3.53);
* ``sinusoid``: ``x ~ U(-5, 5)``, ``y = A sin(x + phi) + eps``, ``A ~ U(0.1, 5)``,
  ``phi ~ U(0, pi)``;
* ``relu_net``: ``x ~ N(0, I_3)``, ``y = sqrt(2 / h) a^T relu(W x + b) + eps`` with ``h = 32``
  hidden units and standard normal ``W``, ``b``, ``a``.

References that need no training: ordinary least squares (the minimum-norm solution when
``n < d``), ridge at the true noise, the **Intention layer with identity projections**
(:func:`bayesattn.functional.least_squares_attention` with ``Q = x_query``, ``K = X``,
``V = y``, which *is* ridge regression), k-nearest neighbours, GP attention with identity
projections and validation-chosen hyperparameters, and a scikit-learn GP whose
hyperparameters are fitted to each prompt by maximum marginal likelihood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import functional as Fn
from ..nn.attention import MultiheadAttention

__all__ = [
    "TaskFamily",
    "FAMILIES",
    "family",
    "sample_prompts",
    "InContextTransformer",
    "train_in_context",
    "predict_prefixes",
    "ridge_predict",
    "intention_predict",
    "sinusoid_bayes_prefixes",
    "ols_predict",
    "knn_predict",
    "gp_attention_predict",
    "sklearn_gp_predict",
    "interval_coverage",
]

#: two-sided 90 % normal quantile
Z90 = 1.6448536269514722
#: prior of the sinusoid family: ``A ~ U(*SINE_AMPLITUDE)``, ``phi ~ U(*SINE_PHASE)``
SINE_AMPLITUDE = (0.1, 5.0)
SINE_PHASE = (0.0, math.pi)


@dataclass(frozen=True)
class TaskFamily:
    """A distribution over regression functions.

    Attributes:
        name: ``linear{d}``, ``sinusoid`` or ``relu_net``.
        kind: ``"linear"``, ``"sinusoid"`` or ``"relu_net"``.
        dim: input dimension ``d``.
        noise: observation-noise sd ``sigma`` (units of ``y``).
        max_examples: largest number of in-context examples evaluated (``2 d + 1`` for the
            linear families).
        y_scale: typical sd of ``y`` (the Transformer predicts ``y / y_scale``).
        hidden: hidden units of ``relu_net``.
    """

    name: str
    kind: str
    dim: int
    noise: float
    max_examples: int
    y_scale: float
    hidden: int = 32


def family(name: str) -> TaskFamily:
    """The task family called ``name`` (``linear5``, ``linear10``, ``linear20``, ...).

    Raises:
        ValueError: an unknown name.
    """
    if name.startswith("linear") and name[6:].isdigit() and int(name[6:]) > 0:
        d = int(name[6:])
        return TaskFamily(name, "linear", d, 0.5, 2 * d + 1, math.sqrt(d))
    if name == "sinusoid":
        return TaskFamily(name, "sinusoid", 1, 0.1, 20, 2.0)
    if name == "relu_net":
        return TaskFamily(name, "relu_net", 3, 0.1, 20, 1.0)
    raise ValueError(f"unknown task family {name!r}; expected linear<d>, sinusoid or relu_net")


#: the families of the full benchmark
FAMILIES = ("linear5", "linear10", "linear20", "sinusoid", "relu_net")


def sample_prompts(fam: TaskFamily, batch: int, n_context: int, n_query: int, generator,
                   dtype=torch.float32):
    """Draw ``batch`` functions of ``fam`` and ``n_context + n_query`` noisy points of each.

    Returns:
        ``(x_ctx (B, n, d), y_ctx (B, n), x_q (B, Q, d), y_q (B, Q))``; the query targets
        carry observation noise as well (the MSE of a perfect predictor is ``sigma^2``).

    Raises:
        ValueError: a non-positive ``batch`` or ``n_query``, or a negative ``n_context``.
    """
    if batch < 1 or n_query < 1 or n_context < 0:
        raise ValueError(f"batch, n_query must be positive and n_context >= 0, got "
                         f"{batch}, {n_query}, {n_context}")
    g, B, N, d = generator, batch, n_context + n_query, fam.dim
    if fam.kind == "linear":
        x = torch.randn(B, N, d, generator=g, dtype=dtype)
        w = torch.randn(B, d, generator=g, dtype=dtype)
        f = (x @ w.unsqueeze(-1)).squeeze(-1)
    elif fam.kind == "sinusoid":
        (a0, a1), (p0, p1) = SINE_AMPLITUDE, SINE_PHASE
        x = 10 * torch.rand(B, N, 1, generator=g, dtype=dtype) - 5
        amp = a0 + (a1 - a0) * torch.rand(B, 1, generator=g, dtype=dtype)
        phase = p0 + (p1 - p0) * torch.rand(B, 1, generator=g, dtype=dtype)
        f = amp * torch.sin(x[..., 0] + phase)
    else:
        h = fam.hidden
        x = torch.randn(B, N, d, generator=g, dtype=dtype)
        w = torch.randn(B, d, h, generator=g, dtype=dtype)
        b = torch.randn(B, 1, h, generator=g, dtype=dtype)
        a = torch.randn(B, h, 1, generator=g, dtype=dtype)
        f = math.sqrt(2.0 / h) * (torch.relu(x @ w + b) @ a).squeeze(-1)
    y = f + fam.noise * torch.randn(B, N, generator=g, dtype=dtype)
    n = n_context
    return x[:, :n], y[:, :n], x[:, n:], y[:, n:]


# ----------------------------------------------------------------------------- the model
class _Block(nn.Module):
    """Pre-norm block: every token attends to the context tokens only, then a feed-forward."""

    def __init__(self, width, heads, ff, attention, options):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = MultiheadAttention(width, heads, batch_first=True, attention=attention,
                                       **options)
        self.norm2 = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, ff), nn.GELU(), nn.Linear(ff, width))

    def forward(self, h, n):
        a = self.norm1(h)
        ctx = a[:, :n]
        h = h + self.attn(a, ctx, ctx, need_weights=False)[0]
        return h + self.ff(self.norm2(h))


class InContextTransformer(nn.Module):
    """A small Transformer that regresses in context.

    Tokens: a context example is ``[x_i, y_i / y_scale, 0]``, a query ``[x_q, 0, 1]``, each
    embedded linearly to ``width``. Each pre-norm block lets *every* token attend to the
    context tokens only (so queries never see each other and any number of them can be
    answered at once; the mask of a Transformer neural process, Nguyen & Grover 2022), then
    applies a GELU feed-forward block; a LayerNorm and a linear read-out of the query tokens
    give ``y_q``. Every attention kind of :class:`bayesattn.nn.MultiheadAttention` fits,
    since no mask is needed (also ``gp`` and ``softmax_least_squares``).

    Args:
        dim: input dimension ``d``.
        y_scale: scale of ``y`` (inputs divided by it, outputs multiplied).
        width, depth, heads, ff: sizes.
        attention: the kind (:data:`bayesattn.nn.ATTENTION_KINDS` or
            :data:`bayesattn.nn.UNMASKED_KINDS`).
        **options: passed to :class:`bayesattn.nn.MultiheadAttention`.

    Raises:
        ValueError: the errors of :class:`bayesattn.nn.MultiheadAttention`.
    """

    def __init__(self, dim: int, y_scale: float = 1.0, *, width: int = 32, depth: int = 2,
                 heads: int = 4, ff: int = 64, attention: str = "softmax", **options):
        super().__init__()
        self.dim, self.y_scale = dim, float(y_scale)
        self.embed = nn.Linear(dim + 2, width)
        self.blocks = nn.ModuleList(_Block(width, heads, ff, attention, options)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 1)

    def forward(self, x_ctx, y_ctx, x_q):
        """Predict ``y`` at ``x_q (B, Q, d)`` from ``x_ctx (B, n, d)``, ``y_ctx (B, n)``;
        returns ``(B, Q)`` in the units of ``y``.

        Raises:
            ValueError: ``n = 0`` (an empty prompt) or mismatched shapes.
        """
        B, n, d = x_ctx.shape
        if n == 0 or d != self.dim or x_q.shape[-1] != d or y_ctx.shape != (B, n):
            raise ValueError(f"expected x_ctx (B, n >= 1, {self.dim}), y_ctx (B, n), x_q "
                             f"(B, Q, {self.dim}); got {tuple(x_ctx.shape)}, "
                             f"{tuple(y_ctx.shape)}, {tuple(x_q.shape)}")
        ctx = torch.cat([x_ctx, (y_ctx / self.y_scale).unsqueeze(-1),
                         x_ctx.new_zeros(B, n, 1)], -1)
        qry = torch.cat([x_q, x_q.new_zeros(*x_q.shape[:-1], 1),
                         x_q.new_ones(*x_q.shape[:-1], 1)], -1)
        h = self.embed(torch.cat([ctx, qry], 1))
        for block in self.blocks:
            h = block(h, n)
        return self.head(self.norm(h[:, n:])).squeeze(-1) * self.y_scale


def predict_prefixes(predict, x_ctx, y_ctx, x_q, *, max_batch: int = 512) -> torch.Tensor:
    """``predict(x_ctx[:, :n], y_ctx[:, :n], x_q)`` for every ``n = 1..N``: ``(N, B, Q)``."""
    N, B = x_ctx.shape[1], x_ctx.shape[0]
    rows = []
    for n in range(1, N + 1):
        parts = [predict(x_ctx[i:i + max_batch, :n], y_ctx[i:i + max_batch, :n],
                         x_q[i:i + max_batch]) for i in range(0, B, max_batch)]
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def train_in_context(model, fam: TaskFamily, *, steps: int, batch: int = 64, n_query: int = 4,
                     lr: float = 1e-3, weight_decay: float = 1e-4, clip_norm: float = 1.0,
                     seed: int = 0, validation=None, eval_every: int = 250):
    """Train ``model`` on fresh prompts of ``fam`` by mean squared error.

    Each step draws ``batch`` functions, a prompt length ``n ~ U{1..max_examples}`` and
    ``n_query`` queries per function; AdamW with a one-cycle schedule (Loshchilov & Hutter
    2019; Smith & Topin 2019) and gradient clipping, as :func:`bayesattn.nn.train_classifier`.
    With ``validation = (x_ctx, y_ctx, x_q, y_q)`` the model is evaluated every
    ``eval_every`` steps (MSE averaged over all prompt lengths) and the best state is kept
    (early stopping on validation tasks only).

    Returns:
        ``{"val_mse": [...], "best_step": int, "train_mse": [...]}``.

    Raises:
        ValueError: ``steps < 1``.
    """
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.1)
    best, best_state, best_step = math.inf, None, 0
    history = {"val_mse": [], "train_mse": []}
    running = 0.0
    for step in range(1, steps + 1):
        n = int(torch.randint(1, fam.max_examples + 1, (1,), generator=gen))
        xc, yc, xq, yq = sample_prompts(fam, batch, n, n_query, gen)
        loss = ((model(xc, yc, xq) - yq) ** 2).mean() / fam.y_scale**2
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        opt.step()
        sched.step()
        running += float(loss.detach())
        if validation is not None and (step % eval_every == 0 or step == steps):
            history["train_mse"].append(running / eval_every * fam.y_scale**2)
            running = 0.0
            model.eval()
            with torch.no_grad():
                pred = predict_prefixes(model, *validation[:3])
            model.train()
            mse = float(((pred - validation[3]) ** 2).mean())
            history["val_mse"].append(mse)
            if mse < best:
                best, best_step = mse, step
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history["best_step"] = best_step
    return history


# ----------------------------------------------------------------------------- references
def ridge_predict(x_ctx, y_ctx, x_q, ridge: float, noise: float):
    """Bayesian linear regression (ridge) by a Cholesky solve of the normal equations.

    ``mean = x_q^T (X^T X + ridge I)^{-1} X^T y``, ``var = noise^2 (1 + x_q^T (X^T X + ridge
    I)^{-1} x_q)`` (Bishop 2006, eqs. 3.53-3.59, with prior precision ``ridge / noise^2``):
    written independently of :func:`bayesattn.functional.least_squares_attention` so that
    the two can be compared. Shapes ``(B, n, d)``, ``(B, n)``, ``(B, Q, d)`` ->
    ``(mean (B, Q), var (B, Q))``.
    """
    d = x_ctx.shape[-1]
    a = x_ctx.mT @ x_ctx + ridge * torch.eye(d, dtype=x_ctx.dtype)
    chol = torch.linalg.cholesky(a)
    w = torch.cholesky_solve((x_ctx.mT @ y_ctx.unsqueeze(-1)), chol)
    mean = (x_q @ w).squeeze(-1)
    half = torch.linalg.solve_triangular(chol, x_q.mT, upper=False)
    return mean, noise**2 * (1 + (half * half).sum(-2))


def intention_predict(x_ctx, y_ctx, x_q, ridge: float, noise: float):
    """A single Intention layer with identity projections (``Q = x_q``, ``K = X``, ``V = y``):
    :func:`bayesattn.functional.least_squares_attention` with its predictive variance.
    Returns ``(mean (B, Q), var (B, Q))``."""
    mean, var = Fn.least_squares_attention(x_q, x_ctx, y_ctx.unsqueeze(-1), ridge=ridge,
                                           noise=noise, return_variance=True)
    return mean.squeeze(-1), var


def sinusoid_bayes_prefixes(x_ctx, y_ctx, x_q, *, noise: float, grid: tuple = (200, 400)):
    """Bayes-optimal (posterior-mean) predictions of the ``sinusoid`` family for every prefix.

    Under the family's prior (``A ~ U(SINE_AMPLITUDE)``, ``phi ~ U(SINE_PHASE)``, Gaussian
    noise of sd ``noise``) the posterior over ``(A, phi)`` given the first ``n`` context
    points is computed on a midpoint grid of ``grid = (amplitudes, phases)`` nodes
    (log-sum-exp normalisation), and the prediction is the posterior mean of
    ``A sin(x_q + phi)``, which minimises the expected squared error (Bishop 2006, section
    1.5.5). Writing ``A sin(x + phi) = u sin x + v cos x`` with ``u = A cos phi``,
    ``v = A sin phi``, the residual sum of squares is a quadratic form in ``(u, v)`` of six
    running sums of the prompt, and the prediction is ``E[u] sin x_q + E[v] cos x_q``, so all
    prefixes cost one ``(n, 5) x (5, G)`` product per prompt. Quadrature error: on the default
    grid, refining to twice the nodes per axis moves the benchmark's predictions by a mean
    squared 1e-8 (against ``noise^2 = 0.01``).

    Args:
        x_ctx: ``(B, N, 1)``; y_ctx: ``(B, N)``; x_q: ``(B, Q, 1)`` (any float dtype;
            computed in float64).
        noise: observation-noise sd (``> 0``).
        grid: numbers of amplitude and phase nodes.

    Returns:
        ``(N, B, Q)`` float64: the prediction from the first ``n = 1..N`` context points.

    Raises:
        ValueError: inputs that are not 1-d (``d != 1``), or non-positive ``noise`` / grid.
    """
    if (x_ctx.shape[-1] != 1 or x_q.shape[-1] != 1 or noise <= 0 or min(grid) < 1
            or y_ctx.shape != x_ctx.shape[:2]):
        raise ValueError(f"sinusoid_bayes_prefixes needs x_ctx (B, N, 1), y_ctx (B, N), x_q "
                         f"(B, Q, 1), noise > 0 and a positive grid; got {tuple(x_ctx.shape)}, "
                         f"{tuple(y_ctx.shape)}, {tuple(x_q.shape)}, noise {noise}, grid {grid}")
    (a0, a1), (p0, p1) = SINE_AMPLITUDE, SINE_PHASE
    amp = a0 + (a1 - a0) * (torch.arange(grid[0], dtype=torch.float64) + 0.5) / grid[0]
    phase = p0 + (p1 - p0) * (torch.arange(grid[1], dtype=torch.float64) + 0.5) / grid[1]
    u = (amp[:, None] * torch.cos(phase)).reshape(-1)
    v = (amp[:, None] * torch.sin(phase)).reshape(-1)
    # RSS = sum y^2 - 2u sum ys - 2v sum yc + u^2 sum ss + 2uv sum sc + v^2 sum cc
    feats = torch.stack([-2 * u, -2 * v, u * u, 2 * u * v, v * v])  # (5, G)
    uv = torch.stack([u, v], -1)  # (G, 2)
    xc, yc, xq = x_ctx[..., 0].double(), y_ctx.double(), x_q[..., 0].double()
    sn, cs = torch.sin(xc), torch.cos(xc)
    stats = torch.stack([yc * sn, yc * cs, sn * sn, sn * cs, cs * cs], -1).cumsum(1)  # (B,N,5)
    out = []
    for b in range(xc.shape[0]):
        logp = -0.5 * (stats[b] @ feats) / noise**2  # (N, G); sum y^2 is constant in (u, v)
        e_uv = torch.softmax(logp, -1) @ uv  # (N, 2)
        out.append(e_uv[:, :1] * torch.sin(xq[b]) + e_uv[:, 1:] * torch.cos(xq[b]))
    return torch.stack(out, 1)


def ols_predict(x_ctx, y_ctx, x_q):
    """Ordinary least squares; the minimum-norm interpolant when ``n < d`` (SVD, ``gelsd``).
    Returns ``(B, Q)``."""
    w = torch.linalg.lstsq(x_ctx.double(), y_ctx.double().unsqueeze(-1), driver="gelsd").solution
    return (x_q.double() @ w).squeeze(-1).to(x_q.dtype)


def knn_predict(x_ctx, y_ctx, x_q, k: int):
    """Mean ``y`` of the ``min(k, n)`` nearest context points (Euclidean). ``(B, Q)``."""
    k = min(k, x_ctx.shape[1])
    dist = torch.cdist(x_q, x_ctx)
    idx = dist.topk(k, dim=-1, largest=False).indices  # (B, Q, k)
    return torch.gather(y_ctx.unsqueeze(1).expand(-1, x_q.shape[1], -1), 2, idx).mean(-1)


def gp_attention_predict(x_ctx, y_ctx, x_q, *, lengthscale: float, ridge: float,
                         amplitude2: float = 1.0):
    """GP attention with identity projections: :func:`bayesattn.functional.gp_attention`
    (RBF, unit amplitude); the predictive variance of ``y`` is ``amplitude2 (latent + ridge)``.
    Returns ``(mean (B, Q), var (B, Q))``."""
    mean, latent = Fn.gp_attention(x_q, x_ctx, y_ctx.unsqueeze(-1), kernel="rbf",
                                   lengthscale=lengthscale, ridge=ridge, return_variance=True)
    return mean.squeeze(-1), amplitude2 * (latent + ridge)


def sklearn_gp_predict(x_ctx, y_ctx, x_q):
    """A GP per prompt with ``C * RBF + White`` hyperparameters fitted by maximum marginal
    likelihood (scikit-learn, L-BFGS-B, no restarts). Returns ``(mean (B, Q), var (B, Q))``
    as numpy arrays (the variance includes the fitted noise)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    xc, yc, xq = (t.double().numpy() for t in (x_ctx, y_ctx, x_q))
    means, variances = [], []
    for b in range(xc.shape[0]):
        kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * RBF(1.0, (1e-2, 1e2))
                  + WhiteKernel(0.1, (1e-4, 1e1)))
        gp = GaussianProcessRegressor(kernel, normalize_y=False, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(xc[b], yc[b])
        m, s = gp.predict(xq[b], return_std=True)
        means.append(m)
        variances.append(s**2)
    return np.stack(means), np.stack(variances)


def interval_coverage(mean, var, y) -> float:
    """Fraction of ``y`` inside the central 90 % normal interval ``mean +- 1.645 sd``."""
    mean, var, y = (torch.as_tensor(np.asarray(t, dtype=np.float64)) for t in (mean, var, y))
    return float(((y - mean).abs() <= Z90 * var.clamp_min(0).sqrt()).double().mean())
