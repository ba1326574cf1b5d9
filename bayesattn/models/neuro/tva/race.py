r"""The exact TVA race likelihood of an encoded set.

The race (Bundesen 1990; ``docs/design.md``, section "Neuroscience-style models"). A display
holds ``N`` items (one per location). Item ``x`` has attentional weight ``w_x >= 0`` (0 = empty
location) and processing rate

.. math:: v_x = C \, w_x / \textstyle\sum_z w_z \quad (\text{items/s}),

so the rates are the processing capacity ``C`` shared out by the normalised weights
``w_x / sum_z w_z = softmax(log w)_x`` -- the softmax of attention. Processing of item ``x``
finishes at ``t0 + T_x`` with ``T_x ~ Exp(v_x)`` independent, ``t0`` the perception threshold;
with exposure duration ``tau_exp`` the effective exposure is ``tau = max(0, tau_exp - t0)``.
Visual short-term memory (VSTM) holds ``K`` items: the first ``K`` items to finish before the
exposure ends are encoded, and (whole report) the encoded items are reported. The first item to
finish is ``x`` with probability ``v_x / sum_z v_z = w_x / sum_z w_z`` (Luce's choice rule).

Exact probability of the encoded set (Kyllingsbaek 2006; Dyrholm, Kyllingsbaek, Espeseth &
Bundesen 2011, the LibTVA likelihood). Write ``S`` for a candidate set, ``r = |S|``,
``V_out = sum_{y not in S} v_y``, ``v_A = sum_{x in A} v_x``.

* ``r < K``: VSTM is not filled, so ``S`` is encoded iff every item of ``S`` finishes before
  ``tau`` and no other item does:

  .. math:: P(S) = \prod_{x \in S} (1 - e^{-v_x \tau}) \prod_{y \notin S} e^{-v_y \tau}.

* ``r = K``: ``S`` is encoded iff its last item finishes (at ``M = max_{x in S} T_x``) before
  ``tau`` and before every item outside ``S`` (``U = min_{y not in S} T_y ~ Exp(V_out)``):
  ``P(S) = int_0^tau f_M(m) P(U > m) dm``. Inclusion-exclusion on the CDF of the maximum,
  ``F_M(m) = prod_{x in S}(1 - e^{-v_x m}) = sum_{A subset S} (-1)^{|A|} e^{-v_A m}``, gives
  ``f_M(m) = sum_{A != {}} (-1)^{|A|+1} v_A e^{-v_A m}`` and, integrating term by term,

  .. math:: P(S) = \sum_{\emptyset \ne A \subseteq S} (-1)^{|A|+1}
            \frac{v_A}{v_A + V_{out}} \bigl(1 - e^{-(v_A + V_{out})\tau}\bigr).

  (With ``S`` = all items, ``V_out = 0`` and this is ``F_M(tau)``, as it must be.)
* ``r > K``: ``P(S) = 0``.

Both cases are sums of decays. Write ``V = sum_z v_z`` and ``B = S \ A``, so that
``v_A + V_out = V - v_B``; expanding the product of the first case the same way,

.. math:: P(S \mid \tau) = P(K > r) \sum_{B \subseteq S} (-1)^{|S|-|B|} e^{-(V - v_B)\tau}
          - P(K = r) \sum_{B \subsetneq S} (-1)^{|S|-|B|}
            \frac{v_S - v_B}{V - v_B}\bigl(1 - e^{-(V - v_B)\tau}\bigr)
          + P(K = 0)\,[S = \emptyset].

Every decay ``e^{-(V - v_B) tau}`` depends on the subset ``B`` only, so a trial needs the
``2^N`` values ``v_B`` once, and a random ``t0`` replaces each decay by its expectation
(:func:`.threshold._expected_decay`, closed form) -- the likelihood is linear in the decays.
Only the pairs ``B subset S`` of report-consistent sets ``S`` are visited (:func:`_plan`): in
partial report ``S = R u D`` with ``R`` the report and ``D`` any subset of the present
distractors, and nothing else.

These ``2^N`` probabilities sum to 1 (checked over all sets in the tests). The sums alternate in
sign; they are evaluated in the tensors' dtype (use float64: with ``N <= 10`` the cancellation
costs a few digits at most, absolute error about ``1e-15``) and a positive probability that
rounds to ``<= 0`` is clamped to the smallest normal number (a log-probability near -708 in
float64) rather than returned as NaN. Structurally impossible reports (more items than the
largest possible ``K``, or a report with a fixed ``t0 >= exposure``) get exactly ``-inf``.

Extensions (Dyrholm et al. 2011): ``K`` may be a distribution over ``0..N`` (a mixture over
``K``; ``P(K > r)`` multiplies the first case and ``P(K = r)`` the second; ``K = 0`` encodes
nothing), and ``t0`` may vary from trial to trial, Gaussian or exponential, integrated in closed
form (:mod:`.threshold`). In
*partial report* (targets among distractors, only targets reported) a distractor has weight
``alpha`` times the weight of a target at its location; distractors compete for rate and VSTM
but are not reported, so the probability of a reported target set sums ``P(S u D)`` over the
sets ``D`` of encoded distractors.

Units: ``C`` in items/s, times (``exposure``, ``t0``, ``t0_sd``) in ms.
"""

from __future__ import annotations

import math

import torch

from .compiled import race_prob
from .sets import _codes, _popcount_table, report_sets
from .threshold import _expected_decay

_PLAN_CACHE: dict = {}


def _plan(reported: torch.Tensor, hidden: torch.Tensor, display: torch.Tensor | None = None):
    """Data-only index plan of the race sums for trials ``(T, N)``.

    ``reported`` and ``hidden`` (present items that are encoded but never reported, i.e. the
    distractors) are bool ``(T, N)``, disjoint. The encoded sets consistent with trial ``t`` are
    ``S = R_t u D``, ``D subset hidden_t``; the plan lists every pair ``(t, S, B)`` with
    ``B subset S`` as flat int64 tensors ``row, S, B`` (codes as in :func:`report_sets`), the
    float sign ``(-1)^(|S|-|B|)``, ``|S|`` and ``B != S``, with the flat indices into the
    per-display tables (``ib``, ``ia``) and the per-trial bins (``ik``). Returns a dict.

    ``display (T,)`` int64 names the display row of each trial: trials that share a display
    (the same exposure, rates and threshold, e.g. repeats of one condition of a design) share
    its ``2^N`` decays, which are then computed once per display (:func:`_race_prob`); None =
    one display per trial.
    """
    num = int(reported.shape[-1])
    size = 2**num
    device = reported.device
    codes = torch.arange(size, device=device)
    r_code = _codes(reported)[:, None]
    h_code = _codes(hidden)[:, None]
    valid = ((codes & r_code) == r_code) & ((codes & ~(r_code | h_code)) == 0)  # (T, M)
    row, s_code = valid.nonzero(as_tuple=True)
    sub = (codes[None, :] & ~codes[:, None]) == 0  # sub[S, B]: B subset of S, (M, M)
    q, b_code = sub[s_code].nonzero(as_tuple=True)
    row, s_code = row[q], s_code[q]
    pop = _popcount_table(num, device)
    s_size = pop[s_code]
    diff = s_size - pop[b_code]
    sign = torch.where(diff % 2 == 0, 1.0, -1.0).to(torch.float64)
    if display is None:
        display = torch.arange(int(reported.shape[0]), device=device)
    disp = display[row]
    return {
        "row": row,
        "ib": disp * size + b_code,  # the (display, B) cell of the per-display tables
        "ia": disp * size + (s_code ^ b_code),  # (display, A = S \\ B)
        "ik": row * (num + 1) + s_size,  # the (trial, |S|) bin
        "display": display,
        "sign": sign,
        "sign_full": sign * (b_code != s_code),  # 0 for A = {}: no "VSTM full" term
        "empty_ok": ~reported.any(-1),  # S = {} (K = 0 encodes nothing) is consistent
        "num_rows": int(reported.shape[0]),
    }


def _cached_plan(reported: torch.Tensor, hidden: torch.Tensor):
    """:func:`_plan`, memoised on the content of the masks (NUTS re-evaluates the same data
    thousands of times, often through fresh views of it); the last 16 plans are kept."""
    key = (
        int(reported.shape[-1]),
        str(reported.device),
        _codes(reported).cpu().numpy().tobytes(),
        _codes(hidden).cpu().numpy().tobytes(),
    )
    plan = _PLAN_CACHE.get(key)
    if plan is None:
        plan = _plan(reported, hidden)
        if len(_PLAN_CACHE) >= 16:
            _PLAN_CACHE.pop(next(iter(_PLAN_CACHE)))
        _PLAN_CACHE[key] = plan
    return plan


def _k_tables(k_probs: torch.Tensor):
    """``P(K > k)`` and ``P(K = k)`` for ``k = 0..N`` from probabilities ``(..., N+1)``."""
    ge = torch.flip(torch.cumsum(torch.flip(k_probs, [-1]), -1), [-1])  # P(K >= k)
    gt = torch.cat([ge[..., 1:], torch.zeros_like(ge[..., :1])], -1)
    return gt.clamp_min(0.0), k_probs, ge


def _race_prob(plan, rates, k_probs, exposure, t0, t0_sd, kind, compiled=False):
    """``P(report)`` of the plan's trials ``(..., T)``.

    Per display row (``U`` rows, indexed by the trials' ``plan["display"]``):
    ``rates (..., U, N)`` 1/ms, ``exposure``, ``t0``, ``t0_sd`` ``(..., U)`` (``t0_sd`` None
    when fixed); per trial: ``k_probs (..., T|1, N+1)`` over ``K = 0..N``.

    Per display the ``2^N`` decays ``G_B`` are computed once; every pair ``(S, B)`` of the plan
    then contributes ``sign G_B`` to the "VSTM not full" sum and ``sign v_A (1 - G_B) / u_B``
    (``A = S \\ B``, ``u_B = V - v_B``) to the "VSTM full" sum of its size ``|S|``; the sums per
    ``(trial, |S|)`` are weighted by ``P(K > |S|)`` and ``P(K = |S|)`` at the end.

    ``compiled=True``: the same sums by the C kernel (:func:`.compiled.race_prob`) where it
    applies (float64 on the CPU, fixed or Gaussian threshold); its result is differentiable
    once only, so callers that need a Hessian keep the default.
    """
    if compiled:
        prob = race_prob(plan, rates, k_probs, exposure, t0, t0_sd, kind)
        if prob is not None:
            return prob
    num = int(rates.shape[-1])
    size = 2**num
    num_rows = plan["num_rows"]
    num_displays = int(rates.shape[-2])
    subsets = report_sets(num, device=rates.device).to(rates.dtype)
    v_b = rates @ subsets.T  # (..., T, M)
    u = (rates.sum(-1, keepdim=True) - v_b).clamp_min(0.0)  # V - v_B
    sd = None if t0_sd is None else t0_sd[..., None]
    g = _expected_decay(u, exposure[..., None], t0[..., None], sd, kind)  # (..., T, M)
    # (1 - G_B) / u_B; u_B = 0 only for B = every present item, a pair with A = {} (weight 0)
    h = (1.0 - g) / torch.where(u > 0, u, torch.ones_like(u))
    lead = v_b.shape[:-2]
    cells = num_displays * size

    def pairs(table, index):  # (..., P): the pairs' cells of a per-display table (..., U, M)
        return table.reshape(*lead, cells).index_select(-1, index)

    def binned(values):  # (..., T, N+1): sums per (trial, |S|) bin of pair values (..., P)
        zeros = values.new_zeros(*lead, num_rows * (num + 1))
        return zeros.index_add(-1, plan["ik"], values).reshape(*lead, num_rows, num + 1)

    # gathers and sums along the last dim: an index op over a middle dim runs element by element
    small = binned(plan["sign"].to(rates.dtype) * pairs(g, plan["ib"]))
    full = binned(plan["sign_full"].to(rates.dtype) * pairs(v_b, plan["ia"]) * pairs(h, plan["ib"]))
    p_gt, p_eq, _ = _k_tables(k_probs)
    prob = (p_gt * small - p_eq * full).sum(-1)
    return prob + p_eq[..., 0] * plan["empty_ok"].to(rates.dtype)


def _race_log_prob(plan, reported, rates, k_probs, exposure, t0, t0_sd, kind, compiled=False):
    """``log P(report)`` ``(..., T)``: :func:`_race_prob` with exact ``-inf`` where impossible.

    Arguments as :func:`_race_prob` (per display row, ``k_probs`` per trial; ``compiled``
    chooses the C kernel) and ``reported (T, N)``. A report is impossible when
    ``P(K >= |R|) = 0`` or (fixed ``t0``) when it is not empty and ``exposure <= t0``; a
    possible report whose probability rounds to ``<= 0`` gets the smallest normal number
    instead (see the module docstring).
    """
    prob = _race_prob(plan, rates, k_probs, exposure, t0, t0_sd, kind, compiled)
    r = reported.sum(-1)  # (T,)
    _, _, p_ge = _k_tables(k_probs.detach())
    p_ge = p_ge.expand(*prob.shape, p_ge.shape[-1])
    impossible = p_ge.gather(-1, r.expand(prob.shape)[..., None]).squeeze(-1) <= 0
    if kind == "fixed" or t0_sd is None and kind == "normal":
        late = torch.broadcast_to((exposure - t0).detach() <= 0, rates.shape[:-1])
        impossible = impossible | late.index_select(-1, plan["display"]) & (r > 0)
    tiny = torch.finfo(rates.dtype).tiny
    safe = torch.where(impossible, torch.ones_like(prob), prob.clamp_min(tiny))
    return torch.where(impossible, -math.inf, torch.log(safe))
