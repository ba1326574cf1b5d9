"""Several NUTS chains in one process, their potentials evaluated in one batched call.

A small model's potential costs about the same for one parameter vector as for four: the time
goes into launching a few hundred small tensor operations, not into arithmetic. So chains run
*in lockstep*: each chain is Pyro's own :class:`pyro.infer.NUTS` running in its own thread, but
only one thread runs at a time, and a chain that needs ``U(z)`` and its gradient posts ``z``
and waits; once every live chain has posted, the coordinator evaluates all of them in one
batched call (NumPyro calls this ``chain_method="vectorized"``). The sampler's code is Pyro's;
only the evaluation is shared.

Each chain keeps its own torch random state (switched in whenever it runs), so its draws are
those it would give alone with the same seed, whatever the other chains do (up to rounding of
the batched evaluation, usually nothing in float64).
"""

from __future__ import annotations

import contextlib
import threading

import pyro.ops.integrator
import torch

__all__ = ["Lockstep", "batched_value_and_grad"]


class _Abort(BaseException):
    """Raised inside a chain's thread to stop it (another chain failed, or Ctrl-C)."""


class _Evaluated(torch.autograd.Function):
    """``U`` whose gradient with respect to the inputs was already computed (by the batch)."""

    @staticmethod
    def forward(ctx, value, grads, *zs):
        ctx.grads = grads
        return value.clone()

    @staticmethod
    def backward(ctx, grad_output):
        return (None, None, *(grad_output * g for g in ctx.grads))


def batched_value_and_grad(potential, names, requests, batch_size, fallback):
    """``[(U, grads)]`` for each request ``{name: value}``, in one call of ``potential``.

    ``potential`` maps ``{name: (B, *site)}`` to ``U (B,)`` (``B = batch_size``; the requests
    are padded with copies of the first). A row whose ``U`` is not finite gets ``+inf`` and zero
    gradients, a rejected step (as :func:`~bayesattn.inference.nuts.safe_potential`). If the
    batched call raises ``ValueError``/``LinAlgError`` (a value outside the support), each
    request is evaluated alone by ``fallback(z) -> (U, grads)``.

    Raises:
        Any other exception of ``potential`` or of autograd, and those of ``fallback``.
    """
    rows = list(requests) + [requests[0]] * (batch_size - len(requests))
    zs = [torch.stack([r[k] for r in rows]).requires_grad_() for k in names]
    try:
        u = potential(dict(zip(names, zs, strict=True)))
        grads = torch.autograd.grad(u.sum(), zs, allow_unused=True)
    except (ValueError, torch.linalg.LinAlgError):
        return [fallback(r) for r in requests]
    u = u.detach()
    grads = [torch.zeros_like(z) if g is None else g for z, g in zip(zs, grads, strict=True)]
    out = []
    for i in range(len(requests)):
        ok = bool(torch.isfinite(u[i]))
        value = u[i] if ok else torch.tensor(float("inf"), dtype=u.dtype)
        out.append((value, [g[i] if ok else torch.zeros_like(g[i]) for g in grads]))
    return out


@contextlib.contextmanager
def direct_gradients():
    """While inside, Pyro's leapfrog step takes ``(grads, U)`` from
    ``potential_fn.value_and_grad(z)`` for a potential that has one (a chain in lockstep, whose
    gradient the batch already computed), instead of running autograd backward through
    :class:`_Evaluated` (about 0.15 ms a step); other potentials as before.

    Pyro's ``_single_step_verlet`` looks ``potential_grad`` up in ``pyro.ops.integrator`` at
    every step: that name is replaced and restored on exit. Without it (another Pyro), nothing
    changes.
    """
    module = pyro.ops.integrator
    original = getattr(module, "potential_grad", None)
    if original is None:
        yield
        return

    def potential_grad(potential_fn, z):
        direct = getattr(potential_fn, "value_and_grad", None)
        return original(potential_fn, z) if direct is None else direct(z)

    module.potential_grad = potential_grad
    try:
        yield
    finally:
        module.potential_grad = original


class Lockstep:
    """Run ``len(chains)`` chain functions in lockstep, sharing one batched potential.

    Args:
        evaluate: ``evaluate([z_1, ..., z_m]) -> [(U_i, [grad_i per name]), ...]`` for ``m``
            requests ``{name: value}`` (e.g. :func:`batched_value_and_grad`).
        names: the sites, in the order of the gradients.
        chains: ``chain(potential_fn) -> result``; ``potential_fn(z)`` returns ``U`` as a
            tensor whose gradient (``torch.autograd.grad``) is the batch's, so it can be given to
            :class:`pyro.infer.NUTS` as ``potential_fn``. A chain's thread runs only while the
            others wait.
        rng_states: the torch random state each chain starts from (``torch.get_rng_state()``
            after seeding it).

    :meth:`run` returns the chains' results in order.

    Raises:
        The first exception of any chain (the others are stopped first);
        :class:`KeyboardInterrupt` on Ctrl-C (every chain's thread is stopped and joined).
    """

    def __init__(self, evaluate, names, chains, rng_states):
        self.evaluate = evaluate
        self.names = list(names)
        self.chains = list(chains)
        self.states = list(rng_states)
        n = len(self.chains)
        self._go = [threading.Semaphore(0) for _ in range(n)]
        self._back = threading.Semaphore(0)
        self._request: list = [None] * n
        self._answer: list = [None] * n
        self._done = [False] * n
        self._result: list = [None] * n
        self._error: list = [None] * n
        self._abort = False

    # -- inside a chain's thread
    def _potential_fn(self, c):
        def answer(z):  # post z, wait for the batch: (U, [gradient per name])
            self._request[c] = {k: z[k].detach() for k in self.names}
            self._back.release()
            self._go[c].acquire()
            if self._abort:
                raise _Abort
            value, grads = self._answer[c]
            self._answer[c] = None
            return value, grads

        def potential(z):
            value, grads = answer(z)
            return _Evaluated.apply(value, grads, *(z[k] for k in self.names))

        def value_and_grad(z):  # as Pyro's potential_grad(potential, z) (direct_gradients)
            value, grads = answer(z)
            return dict(zip(self.names, grads, strict=True)), value

        potential.value_and_grad = value_and_grad
        return potential

    def _body(self, c):
        self._go[c].acquire()
        try:
            if not self._abort:
                self._result[c] = self.chains[c](self._potential_fn(c))
        except _Abort:
            pass
        except BaseException as e:  # reported by run() in the coordinating thread
            self._error[c] = e
        finally:
            self._done[c] = True
            self._back.release()

    # -- the coordinating thread
    def _resume(self, c):
        torch.set_rng_state(self.states[c])
        self._go[c].release()
        self._back.acquire()
        self.states[c] = torch.get_rng_state()

    def run(self) -> list:
        with direct_gradients():
            return self._run()

    def _run(self) -> list:
        saved = torch.get_rng_state()
        threads = [threading.Thread(target=self._body, args=(c,), daemon=True)
                   for c in range(len(self.chains))]
        for t in threads:
            t.start()
        try:
            while not all(self._done):
                live = [c for c in range(len(self.chains)) if not self._done[c]]
                for c in live:
                    self._resume(c)
                    if self._error[c] is not None:
                        raise self._error[c]
                posted = [c for c in live if not self._done[c]]
                if posted:
                    answers = self.evaluate([self._request[c] for c in posted])
                    for c, answer in zip(posted, answers, strict=True):
                        self._request[c], self._answer[c] = None, answer
        finally:
            self._abort = True
            for c, t in enumerate(threads):
                if not self._done[c]:
                    self._go[c].release()  # the chain raises _Abort and ends
                t.join()
            torch.set_rng_state(saved)
        return self._result
