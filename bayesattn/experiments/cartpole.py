"""CartPole for policy distillation: an LQR expert and batched rollouts with observation histories.

The expert is a linear-quadratic regulator (LQR) on the CartPole dynamics linearised about the
upright pole, with the continuous force replaced by its sign (the environment only pushes with
``+-force_mag``). Gymnasium's ``CartPole-v1`` integrates (explicit Euler, ``tau = 0.02`` s) the
equations of Barto, Sutton & Anderson (1983) as corrected by Florian (2007)::

    temp   = (F + m_p l thetadot^2 sin theta) / M
    thetaacc = (g sin theta - cos theta temp) / (l (4/3 - m_p cos^2 theta / M))
    xacc   = temp - m_p l thetaacc cos theta / M

with ``M = m_c + m_p`` and ``l`` the half pole length. Linearised at the origin (``sin theta ~
theta``, ``cos theta ~ 1``, ``thetadot^2 ~ 0``) and discretised as the environment does, the
state ``s = (x, xdot, theta, thetadot)`` follows ``s' = A s + B F``; the gain ``K`` of
``F = -K s`` minimises ``sum s^T Q s + r F^2`` (discrete Riccati equation, iterated to a fixed
point; Anderson & Moore, *Optimal Control: Linear Quadratic Methods*, 1990, section 2.4).

Students see only a history of the last ``T`` observations; by default (``observe="positions"``)
only the cart position and pole angle, so the velocities must be read off the history (the
velocity-masked CartPole of partially observed control benchmarks). Each row of a history also
holds the action taken just before it (``+1`` right, ``-1`` left): the bang-bang expert
alternates its pushes, so the current velocity depends on the last push, which positions alone
reveal only a step later. Steps before the start of an episode repeat its first observation
(with action 0), so every history has exactly ``T`` rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["OBSERVATIONS", "LQRExpert", "Rollouts", "lqr_gain", "rollout"]

#: what a student sees of the 4-d state ``(x, xdot, theta, thetadot)``
OBSERVATIONS = {"full": (0, 1, 2, 3), "positions": (0, 2)}


def _linear_model(env) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` of the Euler-discretised CartPole linearised about the upright pole."""
    u = env.unwrapped
    g, mc, mp, l, tau = u.gravity, u.masscart, u.masspole, u.length, u.tau
    M = mc + mp
    den = l * (4.0 / 3.0 - mp / M)
    # thetaacc = (g theta - F / M) / den ; xacc = F / M - mp l thetaacc / M
    a_th_th, a_th_F = g / den, -1.0 / (M * den)
    a_x_th, a_x_F = -mp * l * a_th_th / M, 1.0 / M - mp * l * a_th_F / M
    Ac = np.array([[0, 1, 0, 0], [0, 0, a_x_th, 0], [0, 0, 0, 1], [0, 0, a_th_th, 0]], float)
    Bc = np.array([[0], [a_x_F], [0], [a_th_F]], float)
    return np.eye(4) + tau * Ac, tau * Bc


def lqr_gain(env, Q=(1.0, 1.0, 10.0, 1.0), r: float = 0.1, *, iterations: int = 10_000,
             tol: float = 1e-10) -> np.ndarray:
    """Discrete LQR gain ``K`` (shape ``(4,)``) of ``F = -K s`` for a CartPole environment.

    Iterates the Riccati recursion ``P <- Q + A^T P A - A^T P B (r + B^T P B)^{-1} B^T P A``
    to a fixed point (Anderson & Moore 1990, section 2.4) on the model of :func:`_linear_model`.

    Args:
        env: a gymnasium ``CartPole`` environment (its physical constants are read).
        Q: diagonal state weights for ``(x, xdot, theta, thetadot)``.
        r: control weight (force in newtons).
        iterations, tol: recursion cap and convergence tolerance on ``P`` (max abs change).

    Raises:
        ValueError: non-positive ``r`` or a negative ``Q``; no convergence in ``iterations``.
    """
    Qm = np.diag(np.asarray(Q, float))
    if r <= 0 or (np.diag(Qm) < 0).any():
        raise ValueError(f"r must be positive and Q non-negative, got r={r}, Q={Q}")
    A, B = _linear_model(env)
    P = Qm.copy()
    for _ in range(iterations):
        BtP = B.T @ P
        K = np.linalg.solve(r + BtP @ B, BtP @ A)
        P_new = Qm + A.T @ P @ (A - B @ K)
        if np.max(np.abs(P_new - P)) < tol * max(1.0, np.max(np.abs(P))):
            return np.linalg.solve(r + B.T @ P_new @ B, B.T @ P_new @ A).ravel()
        P = P_new
    raise ValueError("the Riccati recursion did not converge")


@dataclass
class LQRExpert:
    """Bang-bang LQR expert: action 1 (push right) when ``-K s > 0``, else 0.

    Attributes:
        gain: ``K`` from :func:`lqr_gain`, shape ``(4,)``.
    """

    gain: np.ndarray

    def __call__(self, states: np.ndarray) -> np.ndarray:
        """Actions ``(N,)`` int64 for full states ``(N, 4)``."""
        return (states @ -self.gain > 0).astype(np.int64)


@dataclass
class Rollouts:
    """What a batch of episodes visited.

    Attributes:
        returns: ``(E,)`` undiscounted return of each episode (= its length: reward 1 a step).
        histories: ``(steps, T, F)`` float32 histories at every visited step: each row the
            observed state components followed by the action that led to it (``+-1``; 0 for
            the rows before and at the episode's start).
        states: ``(steps, 4)`` full states at those steps (for the expert's labels).
        actions: ``(steps,)`` actions taken.
    """

    returns: np.ndarray
    histories: np.ndarray
    states: np.ndarray
    actions: np.ndarray


def rollout(
    act: Callable[[np.ndarray, np.ndarray], np.ndarray],
    seeds: list[int],
    *,
    history: int = 8,
    observe: str = "positions",
    max_steps: int = 500,
    env_id: str = "CartPole-v1",
    record: bool = True,
) -> Rollouts:
    """Run one episode per seed in lock-step, with one batched policy call per time step.

    Args:
        act: ``act(histories (n, T, F), states (n, 4)) -> actions (n,)`` for the ``n``
            episodes still running (a student reads the histories, the expert the states).
        seeds: environment reset seeds, one episode each.
        history: ``T``, observations per history (the oldest first).
        observe: a key of :data:`OBSERVATIONS`.
        max_steps: truncation (``CartPole-v1``: 500).
        env_id: a gymnasium CartPole id.
        record: keep histories, states and actions (False: only the returns).

    Returns:
        :class:`Rollouts`.

    Raises:
        ValueError: unknown ``observe``; ``history`` or ``max_steps`` not positive; no seeds.
    """
    import gymnasium as gym

    if observe not in OBSERVATIONS:
        raise ValueError(f"observe must be one of {sorted(OBSERVATIONS)}, got {observe!r}")
    if history < 1 or max_steps < 1 or not seeds:
        raise ValueError("history and max_steps must be positive and seeds non-empty")
    cols = list(OBSERVATIONS[observe])
    envs = [gym.make(env_id, max_episode_steps=max_steps) for _ in seeds]
    states = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)])
    first = np.concatenate([states[:, cols], np.zeros((len(seeds), 1))], axis=1)
    hist = np.repeat(first[:, None], history, axis=1).astype(np.float32)
    alive = np.ones(len(seeds), bool)
    returns = np.zeros(len(seeds))
    kept_h, kept_s, kept_a = [], [], []
    while alive.any():
        idx = np.flatnonzero(alive)
        actions = np.asarray(act(hist[idx], states[idx]), dtype=np.int64)
        if record:
            kept_h.append(hist[idx].copy())
            kept_s.append(states[idx].copy())
            kept_a.append(actions)
        for i, a in zip(idx, actions, strict=True):
            obs, reward, terminated, truncated, _ = envs[i].step(int(a))
            returns[i] += reward
            states[i] = obs
            if terminated or truncated:
                alive[i] = False
        hist[idx, :-1] = hist[idx, 1:]
        hist[idx, -1, :-1] = states[idx][:, cols]
        hist[idx, -1, -1] = 2.0 * actions - 1.0
    for env in envs:
        env.close()
    if not record:
        return Rollouts(returns, np.zeros((0, history, len(cols) + 1), np.float32),
                        np.zeros((0, 4)), np.zeros(0, np.int64))
    return Rollouts(returns, np.concatenate(kept_h), np.concatenate(kept_s),
                    np.concatenate(kept_a))


def torch_policy(model: torch.nn.Module) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Greedy actions of a student ``model(histories (n, T, F)) -> logits (n, 2)``."""

    @torch.no_grad()
    def act(histories: np.ndarray, states: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(histories)).argmax(-1).numpy()

    return act
