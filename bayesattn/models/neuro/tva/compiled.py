"""The TVA race sums compiled from C (``race_kernel.c``), for the NUTS potential.

NUTS on one subject evaluates the race likelihood and its gradient about 90,000 times (4 chains
x 2,000 iterations x 11 leapfrog steps). In torch that is some hundred operations on tensors of
a few thousand elements, whose launch costs dwarf the arithmetic; on a 50-subject study the
gathers and scatters of the pair sums dominate. The same sums in one C loop, with the gradient
by hand, cost a fraction of that (``benchmarks/bench_tva.py --potential``). :func:`race_prob` is
:func:`.race._race_prob` (same arguments, same values to rounding, its gradient by hand in C)
for float64 CPU tensors with a fixed or Gaussian threshold, and None otherwise, so the caller
falls back to the torch path, which stays the reference (tests compare the two).

The kernel is compiled on first use with the system's C compiler (``$CC``, else ``cc``) into
``$BAYESATTN_CACHE`` (default ``~/.cache/bayesattn``), atomically, once per source version.
No compiler, a failed build, or ``BAYESATTN_NO_KERNEL=1`` in the environment: the torch path
(slower, the same values to rounding). Nothing is downloaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

from .sets import MAX_ITEMS  # the kernel's fixed-size arrays hold P(K = 0..N) for N <= 10

__all__ = ["kernel_available", "race_prob"]

_SOURCE = Path(__file__).with_name("race_kernel.c")
_LOCK = threading.Lock()
_LIB: list = []  # [] = not tried yet; [None] = unavailable; [lib] = loaded


def _cache_dir() -> Path:
    root = os.environ.get("BAYESATTN_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "bayesattn"


def _build() -> ctypes.CDLL | None:
    """Compile (once per source version) and load the kernel; None when that is impossible."""
    if os.environ.get("BAYESATTN_NO_KERNEL"):
        return None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None or not _SOURCE.exists():
        return None
    source = _SOURCE.read_bytes()
    machine = f"{sys.platform}-{platform.machine()}-{compiler}".encode()
    tag = hashlib.sha256(source + machine).hexdigest()[:16]
    target = _cache_dir() / f"tva_race_{tag}.so"
    try:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
            os.close(fd)
            try:
                subprocess.run([compiler, "-O2", "-std=c99", "-fPIC", "-shared", str(_SOURCE),
                                "-o", tmp, "-lm"], check=True, capture_output=True, timeout=120)
                os.replace(tmp, target)  # atomic: a concurrent build replaces it whole
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError):
        return None
    ptr, i32, i64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    lib.tva_race_forward.argtypes = [i32] * 4 + [i64, i32] + [ptr] * 20
    lib.tva_race_forward.restype = None
    lib.tva_race_backward.argtypes = [i32] * 4 + [i64, i32] + [ptr] * 29
    lib.tva_race_backward.restype = None
    return lib


def _lib():
    if not _LIB:
        with _LOCK:
            if not _LIB:
                _LIB.append(_build())
    return _LIB[0]


def kernel_available() -> bool:
    """True when the compiled kernel is loaded (compiling it now if needed)."""
    return _lib() is not None


def _kernel_plan(plan: dict, num_displays: int, num_items: int) -> tuple:
    """``(number of pairs, [pointers])`` of the plan's arrays as the kernel reads them
    (contiguous int64 ``ib, ia, ik``; float64 ``sign, sign_full, empty_ok``; uint8 ``need``, the
    display cells whose decay a pair reads), cached in the plan with the arrays themselves."""
    key = ("_kernel", num_displays, num_items)
    cached = plan.get(key)
    if cached is None:
        need = torch.zeros(num_displays << num_items, dtype=torch.uint8)
        need[plan["ib"]] = 1
        arrays = [plan["ib"], plan["ia"], plan["ik"], plan["sign"], plan["sign_full"],
                  plan["empty_ok"], need]
        arrays = [a.contiguous() if a.dtype in (torch.int64, torch.uint8)
                  else a.to(torch.float64).contiguous() for a in arrays]
        cached = plan[key] = (int(arrays[0].numel()), [a.data_ptr() for a in arrays], arrays)
    return cached


class _Race(torch.autograd.Function):
    """``P(report)`` ``(B, W)`` of the plan's rows; inputs flattened to one batch dim."""

    @staticmethod
    def forward(ctx, rates, kp, expo, t0, sd, plan, normal):
        b, u, n = (int(x) for x in rates.shape)  # plain ints also under the JIT tracer
        w = int(kp.shape[1])
        pairs, plan_ptrs, _ = _kernel_plan(plan, u, n)
        cells, bins = b * u << n, b * w * (n + 1)
        # v_B, V - v_B, G, G's second term, (1 - G) / u per cell; "VSTM not full" and "full"
        work = rates.new_empty(5 * cells + 2 * bins)
        prob = rates.new_empty(b, w)
        at, size = work.data_ptr(), work.element_size()
        tables = ([at + size * i * cells for i in range(5)]
                  + [at + size * (5 * cells + i * bins) for i in range(2)])
        _lib().tva_race_forward(
            b, u, w, n, pairs, int(normal), rates.data_ptr(), kp.data_ptr(), expo.data_ptr(),
            t0.data_ptr(), sd.data_ptr() if normal else None, *plan_ptrs, *tables,
            prob.data_ptr())
        ctx.save_for_backward(kp, expo, t0, sd if normal else None, work)
        ctx.kernel = (b, u, w, n, pairs, int(normal), plan_ptrs, tables)  # tables: into work
        return prob

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_prob):
        kp, expo, t0, sd, _ = ctx.saved_tensors  # the work tensor stays alive (and checked)
        b, u, w, n, pairs, normal, plan_ptrs, tables = ctx.kernel
        grad_prob = grad_prob.contiguous()
        # per parameter vector: the bins' gradients (2 W (N+1)), the cells' (3 U 2^N)
        scratch = kp.new_empty(2 * w * (n + 1) + 3 * (u << n))
        sp, size = scratch.data_ptr(), scratch.element_size()
        scratch_ptrs = ([sp, sp + size * w * (n + 1)]
                        + [sp + size * (2 * w * (n + 1) + i * (u << n)) for i in range(3)])
        grates = kp.new_empty(b, u, n)
        gkp = torch.empty_like(kp)
        gexpo, gt0 = expo.new_empty(b, u), expo.new_empty(b, u)
        gsd = sd.new_empty(b, u) if normal else None
        _lib().tva_race_backward(
            b, u, w, n, pairs, normal, kp.data_ptr(), expo.data_ptr(), t0.data_ptr(),
            sd.data_ptr() if normal else None, *plan_ptrs, *tables, grad_prob.data_ptr(),
            *scratch_ptrs, grates.data_ptr(), gkp.data_ptr(), gexpo.data_ptr(), gt0.data_ptr(),
            gsd.data_ptr() if normal else None)
        return grates, gkp, gexpo, gt0, gsd, None, None


def race_prob(plan, rates, k_probs, exposure, t0, t0_sd, kind):
    """:func:`.race._race_prob` by the compiled kernel, or None where it does not apply.

    Arguments as :func:`.race._race_prob`: ``rates (..., U, N)`` 1/ms, ``k_probs (..., W|1,
    N+1)``, ``exposure``, ``t0``, ``t0_sd`` ``(..., U)`` ms (``t0_sd`` None when fixed).

    Returns:
        ``P(report)`` ``(..., W)``, differentiable once (a second derivative raises
        ``RuntimeError``), or None when the kernel is unavailable or the call is outside what
        it computes: a tensor not float64 or not on the CPU, an exponential threshold, a
        Gaussian one with a zero sd, or more than 10 items.

    Raises:
        RuntimeError: the arguments' leading dims do not broadcast (as on the torch path).
    """
    if kind not in ("fixed", "normal") or rates.shape[-1] > MAX_ITEMS:
        return None
    normal = kind == "normal" and t0_sd is not None
    params = [rates, k_probs, exposure, t0] + ([t0_sd] if normal else [])
    if any(p.dtype != torch.float64 or p.device.type != "cpu" for p in params):
        return None
    if normal and not bool((t0_sd.detach() > 0).all()):
        return None
    if _lib() is None:
        return None
    leads = [rates.shape[:-2], k_probs.shape[:-2], exposure.shape[:-1], t0.shape[:-1]]
    leads += [t0_sd.shape[:-1]] if normal else []
    lead = leads[0] if all(x == leads[0] for x in leads) else torch.broadcast_shapes(*leads)
    u, n = rates.shape[-2:]
    w = plan["num_rows"]

    def flat(x, *tail):
        if x.shape != (*lead, *tail):
            x = x.expand(*lead, *tail)
        return x.reshape(-1, *tail).contiguous()

    prob = _Race.apply(
        flat(rates, u, n), flat(k_probs, w, n + 1), flat(exposure, u), flat(t0, u),
        flat(t0_sd, u) if normal else None, plan, normal)
    return prob.reshape(*lead, w)
