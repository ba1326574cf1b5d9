"""Speed and peak-memory benchmark of the closed-form fast path (:mod:`bayesattn.functional`).

Shapes: query ``(2, 4, L, E)``, key ``(2, 4, S, E)``, value ``(2, 4, S, Ev)`` (batch x heads
``B = 8``), ``L = S``, ``E = Ev = 64``, float32, CPU. Methods:

``sdpa``           :func:`torch.nn.functional.scaled_dot_product_attention` (reference).
``softmax``        :func:`bayesattn.functional.softmax_attention`.
``kernel``         :func:`bayesattn.functional.kernel_attention`, Gaussian kernel.
``naive_nw``       the same Nadaraya-Watson estimator written naively here
                   (``torch.cdist`` + softmax + matmul; builds the ``L x S`` matrices).
``least_squares``  :func:`bayesattn.functional.least_squares_attention`, ``ridge = 1``.
``linear``         :func:`bayesattn.functional.linear_attention` (identity feature map).
``matmul``         a plain ``Q @ K^T`` (``(B, L, E) x (B, E, S)``): the roofline row.
``matmul_out``     the same into a preallocated output (``out=``): GEMM throughput without
                   the page faults of a fresh ``L x S`` allocation per call.

Time per call is the median over repeats (each repeat times enough calls to last ~20 ms) after
a warm-up. Peak memory is measured in a fresh subprocess per (method, L): inputs are allocated
first, then ``ru_maxrss`` is read before and after one call; the difference (MiB) is the
extra peak resident memory of the call, including its ``(B, L, Ev)`` output.

Flop counts (multiply and add counted separately), used for GFLOP/s:
attention-type methods ``4 B L S E`` (``Q K^T`` and ``W V``, with ``Ev = E``; the exp and
normalisation are not counted, so this is the useful matmul work, also for ``naive_nw``);
matmul ``2 B L S E``; least squares ``2 B (S + E) E^2 - 2 B E^3 / 3 + 2 B S E Ev +
B E^2 Ev + 2 B L E Ev`` (Householder QR of ``[K; sqrt(ridge) I]``, ``Q^T V``, one triangular
solve, ``Q`` times the solution);
linear ``2 B S E Ev + 2 B L E Ev``.

Batch rank (``--ranks``): peak memory of one call for 2-D, 3-D, 4-D and 5-D inputs
(batch shapes ``()``, ``(2,)``, ``(1, 2)``, ``(1, 2, 1)``) at ``L = S = 8192`` for torch's
SDPA, ``softmax_attention`` and ``kernel_attention`` (Gaussian and von Mises-Fisher), and the
paired time ratio Gaussian ``kernel_attention`` / SDPA at ``L = S = 4096`` (shape
``(2, 4, L, 64)``); written to ``functional_ranks.md`` / ``.json``.

Usage::

    python benchmarks/bench_functional.py                     # full run, ~10 min on 2 cores
    python benchmarks/bench_functional.py --ranks --threads 1 # batch-rank memory + ratio
    python benchmarks/bench_functional.py --sizes 256 1024    # quick
    python benchmarks/bench_functional.py --one kernel 1024   # one case, prints JSON
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

BATCH = (2, 4)  # batch x heads = 8
B = math.prod(BATCH)
E = EV = 64
DTYPE = torch.float32
#: Gaussian bandwidth: with ``bandwidth = E ** 0.25`` the kernel logits ``q.k / bandwidth^2``
#: carry the same ``1 / sqrt(E)`` scale as softmax attention.
BANDWIDTH = E**0.25
MAX_BYTES = 6 * 2**30  # skip cases whose estimated allocation exceeds this
REPEAT_BUDGET_S = 3.0  # time spent on the timed repeats of one case, roughly
MIN_REPEATS = 3
METHODS = (
    "sdpa", "softmax", "kernel", "naive_nw", "least_squares", "linear", "matmul", "matmul_out",
)
LABELS = {
    "sdpa": "torch SDPA",
    "softmax": "softmax_attention",
    "kernel": "kernel_attention (gaussian)",
    "naive_nw": "naive Nadaraya-Watson",
    "least_squares": "least_squares_attention (ridge 1)",
    "linear": "linear_attention",
    "matmul": "matmul Q K^T (roofline)",
    "matmul_out": "matmul Q K^T, out= (roofline)",
}
DEFAULT_SIZES = (256, 1024, 4096, 16384)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


# ----------------------------------------------------------------------------- methods
def naive_nadaraya_watson(query, key, value, bandwidth):
    """Gaussian Nadaraya-Watson the direct way: ``softmax(-|q - k|^2 / (2 h^2)) V``.

    Builds the ``(..., L, S)`` distance and weight matrices explicitly.
    """
    d2 = torch.cdist(query / bandwidth, key / bandwidth).square_()
    return torch.softmax(d2.mul_(-0.5), dim=-1) @ value


def make_call(method: str, L: int):
    """Inputs (allocated here) and a zero-argument closure running one call of ``method``."""
    from bayesattn import functional as BF

    gen = torch.Generator().manual_seed(L)
    q = torch.randn(*BATCH, L, E, generator=gen, dtype=DTYPE)
    k = torch.randn(*BATCH, L, E, generator=gen, dtype=DTYPE)
    v = torch.randn(*BATCH, L, EV, generator=gen, dtype=DTYPE)
    fns = {
        "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v),
        "softmax": lambda: BF.softmax_attention(q, k, v),
        "kernel": lambda: BF.kernel_attention(q, k, v, kernel="gaussian", bandwidth=BANDWIDTH),
        "naive_nw": lambda: naive_nadaraya_watson(q, k, v, BANDWIDTH),
        "least_squares": lambda: BF.least_squares_attention(q, k, v, ridge=1.0),
        "linear": lambda: BF.linear_attention(q, k, v),
        "matmul": lambda: torch.matmul(q, k.transpose(-1, -2)),
    }
    if method == "matmul_out":  # output preallocated with the inputs: no page faults per call
        scores = torch.empty(*BATCH, L, L, dtype=DTYPE)
        scores.zero_()  # touch the pages
        return lambda: torch.matmul(q, k.transpose(-1, -2), out=scores)
    return fns[method]


RANK_BATCH = {2: (), 3: (2,), 4: (1, 2), 5: (1, 2, 1)}
RANK_METHODS = ("sdpa", "softmax", "kernel", "kernel_vmf")
RANK_L = 8192
RATIO_L = 4096


def make_rank_call(method: str, rank: int, L: int):
    """Inputs with ``rank`` dims and a closure running one call of ``method``."""
    from bayesattn import functional as BF

    gen = torch.Generator().manual_seed(L)
    shape = (*RANK_BATCH[rank], L, E)
    q, k, v = (torch.randn(*shape, generator=gen, dtype=DTYPE) for _ in range(3))
    return {
        "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v),
        "softmax": lambda: BF.softmax_attention(q, k, v),
        "kernel": lambda: BF.kernel_attention(q, k, v, bandwidth=BANDWIDTH),
        "kernel_vmf": lambda: BF.kernel_attention(q, k, v, kernel="von_mises_fisher",
                                                  bandwidth=0.1),
    }[method]


def run_rank_one(method: str, rank: int, L: int, threads: int | None) -> dict:
    """Peak extra resident memory of one call (see :func:`run_one`), in this process."""
    if threads:
        torch.set_num_threads(threads)
    make_rank_call(method, rank, 32)()
    call = make_rank_call(method, rank, L)
    hwm_ok = _reset_peak_rss()
    rss0 = _proc_status_bytes("VmRSS") if hwm_ok else None
    maxrss0 = _maxrss_bytes()
    t0 = time.perf_counter()
    out = call()
    elapsed = time.perf_counter() - t0
    extra = (_proc_status_bytes("VmHWM") - rss0) if hwm_ok else _maxrss_bytes() - maxrss0
    del out
    n_batch = math.prod(RANK_BATCH[rank])
    return {"method": method, "rank": rank, "L": L, "status": "ok",
            "peak_extra_bytes": max(0, extra), "first_call_s": elapsed,
            "peak_source": "VmHWM - VmRSS" if hwm_ok else "ru_maxrss",
            "output_bytes": n_batch * L * EV * 4, "score_matrix_bytes": n_batch * L * L * 4}


def run_ranks(args) -> int:
    """Batch-rank memory table and the kernel/SDPA time ratio (``--ranks``)."""
    records = []
    for rank in sorted(RANK_BATCH):
        for m in RANK_METHODS:
            rec = _subprocess_json(["--rank-one", m, str(rank), str(RANK_L)], args.threads)
            rec = {"method": m, "rank": rank, "L": RANK_L, **rec}
            records.append(rec)
            print(f"{m:>11} {rank}-D: {_fmt_mib(rec.get('peak_extra_bytes'))} MiB", flush=True)
    pair = run_pair_case("kernel", "sdpa", RATIO_L, args.repeats, args.threads,
                         min_rounds=args.repeats)
    print(f"kernel / sdpa at L = {RATIO_L}: {pair.get('ratio', float('nan')):.3f} (paired)")
    meta = {"torch": torch.__version__, "threads": args.threads or torch.get_num_threads(),
            "cpu": cpu_model(), "loadavg": _loadavg(), "E": E, "dtype": "float32"}
    by = {(r["method"], r["rank"]): r for r in records}
    one = RANK_L * RANK_L * 4
    lines = [
        f"Peak extra resident memory (MiB) of one call, L = S = {RANK_L}, E = Ev = {E}, "
        f"float32, torch {meta['torch']}, {meta['threads']} thread(s); one L x S float32 "
        f"matrix is {one / 2**20:.0f} MiB per batch element, the output "
        f"{RANK_L * EV * 4 / 2**20:.0f} MiB per batch element.",
        "",
        "| rank | batch shape | " + " | ".join(RANK_METHODS) + " |",
        "|---|---|" + "---|" * len(RANK_METHODS),
    ]
    for rank in sorted(RANK_BATCH):
        cells = [_fmt_mib(by[(m, rank)].get("peak_extra_bytes")) for m in RANK_METHODS]
        lines.append(f"| {rank}-D | {RANK_BATCH[rank]} | " + " | ".join(cells) + " |")
    rr = pair.get("ratios", [])
    lines += ["", f"Gaussian kernel_attention / SDPA time at L = S = {RATIO_L}, shape "
              f"(2, 4, L, {E}): {pair.get('ratio', float('nan')):.3f} (median of "
              f"{len(rr)} alternating rounds; per round "
              + ", ".join(f"{x:.3f}" for x in rr) + f"; kernel "
              f"{pair.get('num_time_s', float('nan')) * 1e3:.0f} ms, SDPA "
              f"{pair.get('den_time_s', float('nan')) * 1e3:.0f} ms). Load {meta['loadavg']}.",
              ""]
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "functional_ranks.md").write_text(table)
    (args.out / "functional_ranks.json").write_text(
        json.dumps({"meta": meta, "records": records, "pair": pair}, indent=1))
    return 0


def flops(method: str, L: int) -> float:
    """Flop count of one call (see the module docstring)."""
    S = L
    if method in ("matmul", "matmul_out"):
        return 2.0 * B * L * S * E
    if method == "least_squares":
        return B * (2.0 * (S + E) * E * E - 2.0 * E**3 / 3 + 2.0 * S * E * EV + E * E * EV
                    + 2.0 * L * E * EV)
    if method == "linear":
        return 2.0 * B * (S + L) * E * EV
    return 4.0 * B * L * S * E


def score_matrix_bytes(L: int) -> int:
    """Bytes of one explicit float32 ``(B, L, S)`` score matrix."""
    return B * L * L * 4


def estimated_bytes(method: str, L: int) -> int:
    """Lower bound on what a call allocates, for the skip rule (inputs excluded)."""
    if method == "naive_nw":
        return 2 * score_matrix_bytes(L)  # cdist output and the softmax output coexist
    if method in ("matmul", "matmul_out"):
        return score_matrix_bytes(L)  # the output (allocated with the inputs for matmul_out)
    return B * L * EV * 4  # the output


# ----------------------------------------------------------------------------- one case
def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _proc_status_bytes(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status`` (None if unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (``VmHWM``) to its current RSS (Linux >= 4.0).

    ``ru_maxrss`` cannot be reset and, after ``exec``, starts at the parent's peak RSS, which
    can hide a small call's peak; the reset ``VmHWM`` measures the call alone.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _proc_status_bytes("VmHWM") is not None


def _timed(call, number: int) -> float:
    """Seconds per call, averaged over ``number`` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - t0) / number


def _calls_per_repeat(first_s: float) -> int:
    """Calls per timed repeat so that one repeat lasts ~20 ms (at least one call)."""
    return max(1, int(0.02 / max(first_s, 1e-7)))


def _n_repeats(repeats: int, repeat_s: float) -> int:
    return max(MIN_REPEATS, min(repeats, int(REPEAT_BUDGET_S / max(repeat_s, 1e-9))))


def run_one(method: str, L: int, repeats: int, threads: int | None) -> dict:
    """Measure one (method, L) in this process: peak memory of one call, then time."""
    if threads:
        torch.set_num_threads(threads)
    make_call(method, 32)()  # load kernels and start the thread pool on a tiny problem
    call = make_call(method, L)
    maxrss0 = _maxrss_bytes()
    hwm_ok = _reset_peak_rss()
    rss0 = _proc_status_bytes("VmRSS") if hwm_ok else None
    t0 = time.perf_counter()
    out = call()
    first = time.perf_counter() - t0
    maxrss1 = _maxrss_bytes()
    hwm1 = _proc_status_bytes("VmHWM") if hwm_ok else None
    del out
    maxrss_extra = max(0, maxrss1 - maxrss0)
    extra = max(0, hwm1 - rss0) if hwm_ok else maxrss_extra
    number = _calls_per_repeat(first)
    if first < 1.0:
        call()  # a second warm-up (the first call also served as one)
    times = [_timed(call, number) for _ in range(_n_repeats(repeats, first * number))]
    med = statistics.median(times)
    return {
        "method": method,
        "L": L,
        "status": "ok",
        "time_s": med,
        "times_s": times,
        "times_min_s": min(times),
        "calls_per_repeat": number,
        "first_call_s": first,
        "flops": flops(method, L),
        "gflops": flops(method, L) / med / 1e9,
        "peak_extra_bytes": extra,
        "peak_source": "VmHWM - VmRSS" if hwm_ok else "ru_maxrss",
        "rss_before_bytes": rss0,
        "maxrss_before_bytes": maxrss0,
        "maxrss_after_bytes": maxrss1,
        "maxrss_extra_bytes": maxrss_extra,
        "score_matrix_bytes": score_matrix_bytes(L),
        "threads": torch.get_num_threads(),
    }


def run_pair(num: str, den: str, L: int, repeats: int, threads: int | None,
             min_rounds: int = MIN_REPEATS) -> dict:
    """Time ratio ``num / den`` from alternating calls in this process (robust to load drift).

    Each round times both methods back to back (order alternating between rounds) and takes
    the ratio; the result is the median over rounds.
    """
    if threads:
        torch.set_num_threads(threads)
    calls = {m: make_call(m, L) for m in (num, den)}
    first = {}
    for m, call in calls.items():
        make_call(m, 32)()
        t0 = time.perf_counter()
        call()
        first[m] = time.perf_counter() - t0
    number = {m: _calls_per_repeat(first[m]) for m in calls}
    round_s = sum(first[m] * number[m] for m in calls)
    rounds = []
    for r in range(max(min_rounds, _n_repeats(repeats, round_s))):
        order = (num, den) if r % 2 == 0 else (den, num)
        t = {m: _timed(calls[m], number[m]) for m in order}
        rounds.append((t[num], t[den]))
    ratios = [a / b for a, b in rounds]
    return {
        "num": num,
        "den": den,
        "L": L,
        "status": "ok",
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "num_time_s": statistics.median(a for a, _ in rounds),
        "den_time_s": statistics.median(b for _, b in rounds),
        "threads": torch.get_num_threads(),
    }


def _subprocess_json(args: list[str], threads, timeout_s=900) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:]
        return {"status": "failed", "error": tail[0] if tail else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_case(method, L, repeats, threads) -> dict:
    """Run one case in a fresh subprocess and parse its JSON."""
    rec = _subprocess_json(["--one", method, str(L), "--repeats", str(repeats)], threads)
    return {"method": method, "L": L, **rec}


def run_pair_case(num, den, L, repeats, threads, min_rounds=MIN_REPEATS) -> dict:
    """Run one paired timing in a fresh subprocess and parse its JSON."""
    rec = _subprocess_json(["--pair", num, den, str(L), "--repeats", str(repeats),
                            "--min-rounds", str(min_rounds)], threads, timeout_s=1800)
    return {"num": num, "den": den, "L": L, **rec}


# ----------------------------------------------------------------------------- sanity
def check_agreement(L: int = 64) -> dict:
    """Max abs differences at a small size: softmax vs SDPA, kernel vs naive Nadaraya-Watson."""
    res = {m: make_call(m, L)() for m in ("sdpa", "softmax", "kernel", "naive_nw")}
    return {
        "softmax_vs_sdpa": float((res["softmax"] - res["sdpa"]).abs().max()),
        "kernel_vs_naive_nw": float((res["kernel"] - res["naive_nw"]).abs().max()),
    }


# ----------------------------------------------------------------------------- report
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ms(t):
    return f"{t * 1e3:.3g}" if t >= 1e-3 else f"{t * 1e3:.2g}"


def _mib(nbytes):
    return f"{nbytes / 2**20:.1f}"


def _skip_text(rec):
    return f"skipped (would allocate {rec['would_allocate_bytes'] / 2**30:.0f} GiB)"


#: Time ratios reported against the targets: (numerator, denominator, target text).
PAIRS = (
    ("softmax", "sdpa", "<= 1.10"),
    ("naive_nw", "kernel", ">= 4 at L = 4096"),
    ("softmax", "least_squares", ">= 20 at L = 16384"),
)


def _ratio(num, den):
    if num.get("status") != "ok" or den.get("status") != "ok":
        return None
    return num["time_s"] / den["time_s"]


def ratios(records: dict, pairs: dict, sizes) -> list[dict]:
    """Per size: the target ratios (paired and from the separate runs), peaks, roofline."""
    rows = []
    for L in sizes:
        r = {m: records[(m, L)] for m in METHODS}
        row = {"L": L}
        for num, den, _ in PAIRS:
            pr = pairs.get((num, den, L), {})
            row[f"{num}_over_{den}"] = pr.get("ratio") if pr.get("status") == "ok" else None
            row[f"{num}_over_{den}_separate"] = _ratio(r[num], r[den])
        row.update({
            "kernel_peak_bytes": r["kernel"].get("peak_extra_bytes"),
            "sdpa_peak_bytes": r["sdpa"].get("peak_extra_bytes"),
            "score_matrix_bytes": score_matrix_bytes(L),
            "matmul_gflops": r["matmul"].get("gflops"),
            "matmul_out_gflops": r["matmul_out"].get("gflops"),
        })
        rows.append(row)
    return rows


def _fmt(x, f="{:.3g}"):
    return "n/a" if x is None else f.format(x)


def _fmt_mib(x):
    return "n/a" if x is None else _mib(x)


def markdown(meta: dict, records: dict, pairs: dict, sizes) -> str:
    agree = meta["agreement"]
    lines = [
        "# bayesattn.functional benchmark",
        "",
        f"- torch {meta['torch']}, {meta['threads']} threads, CPU: {meta['cpu']} "
        f"({meta['logical_cpus']} logical CPUs), Python {meta['python']}; load average "
        f"{meta['loadavg_start']} at start, {meta['loadavg_end']} at end "
        f"(shared machine: timings are noisy)",
        f"- shapes: query/key/value (2, 4, L, 64), L = S, float32; batch x heads B = {B}; "
        f"Gaussian bandwidth E^0.25 = {BANDWIDTH:.3g}",
        "- time: median over repeats after a warm-up, each case in a fresh process "
        "(repeats = rounds x calls per round); peak: extra resident memory of one call in that "
        "process (MiB), output included; 'L x S matrix' = B*L*S*4 bytes of one explicit "
        "float32 score matrix",
        f"- agreement at L = 64: max |softmax - SDPA| = {agree['softmax_vs_sdpa']:.1e}, "
        f"max |kernel - naive NW| = {agree['kernel_vs_naive_nw']:.1e}",
        "",
        "| method | L | time (ms) | GFLOP/s | peak extra (MiB) | L x S matrix (MiB) | repeats |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in METHODS:
        for L in sizes:
            rec = records[(m, L)]
            sm = _mib(score_matrix_bytes(L))
            if rec["status"] == "skipped":
                lines.append(f"| {LABELS[m]} | {L} | {_skip_text(rec)} | | | {sm} | |")
            elif rec["status"] != "ok":
                what = rec["status"] + (f": {rec['error']}" if "error" in rec else "")
                lines.append(f"| {LABELS[m]} | {L} | {what} | | | {sm} | |")
            else:
                lines.append(
                    f"| {LABELS[m]} | {L} | {_ms(rec['time_s'])} | {rec['gflops']:.3g} | "
                    f"{_mib(rec['peak_extra_bytes'])} | {sm} | "
                    f"{len(rec['times_s'])}x{rec['calls_per_repeat']} |"
                )
    lines += [
        "",
        "Time ratios against the targets (reported, not asserted). Main number: median ratio "
        "over rounds that alternate the two methods in one process; in parentheses: the ratio "
        "of the separate-process medians above. Targets: "
        + "; ".join(f"{LABELS[n]} / {LABELS[d]} {t}" for n, d, t in PAIRS)
        + " (kernel with no L x S allocation).",
        "",
        "| L | softmax / SDPA | naive NW / kernel | softmax / least squares | "
        "kernel peak (MiB) | SDPA peak (MiB) | L x S matrix (MiB) | "
        "matmul GFLOP/s (plain / out=) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in ratios(records, pairs, sizes):
        cells = [str(row["L"])]
        for num, den, _ in PAIRS:
            f = "{:.3f}" if (num, den) == ("softmax", "sdpa") else "{:.3g}"
            cells.append(f"{_fmt(row[f'{num}_over_{den}'], f)} "
                         f"({_fmt(row[f'{num}_over_{den}_separate'], f)})")
        cells += [_fmt_mib(row["kernel_peak_bytes"]), _fmt_mib(row["sdpa_peak_bytes"]),
                  _mib(row["score_matrix_bytes"]),
                  f"{_fmt(row['matmul_gflops'])} / {_fmt(row['matmul_out_gflops'])}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")


def plot(records: dict, sizes, path: Path, threads: int) -> None:
    """Time vs L (log-log) and extra peak memory vs L per method, with the L x S line."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    for m in METHODS:
        ok = [records[(m, L)] for L in sizes if records[(m, L)]["status"] == "ok"]
        if not ok:
            continue
        xs = [r["L"] for r in ok]
        style = {"marker": MARKERS[METHODS.index(m) % len(MARKERS)], "label": LABELS[m]}
        ax_t.plot(xs, [r["time_s"] * 1e3 for r in ok], "-", **style)
        ax_m.plot(xs, [max(r["peak_extra_bytes"], 2**10) / 2**20 for r in ok], "-", **style)
    ax_m.plot(sizes, [score_matrix_bytes(L) / 2**20 for L in sizes], "k--",
              label="one L x S score matrix (B L S 4 bytes)")
    for ax, ylabel, title in (
        (ax_t, "time per call (ms)", "Time (median)"),
        (ax_m, "extra peak RSS of one call (MiB, floor 1 KiB)", "Peak memory"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [str(L) for L in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("L = S")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_m.legend(fontsize=7)
    fig.suptitle(f"bayesattn.functional, float32 CPU ({threads} threads), B = {B}, E = Ev = {E}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _skip_estimate(method: str, L: int, records: dict) -> int:
    """Estimated bytes a call allocates; extrapolated as ``L^2`` from the largest smaller size
    when the call was seen there to allocate at least half an ``L x S`` matrix."""
    est = estimated_bytes(method, L)
    prev = [r for (m, L0), r in sorted(records.items(), key=lambda kv: kv[0][1])
            if m == method and L0 < L and r["status"] == "ok"]
    if prev and prev[-1]["peak_extra_bytes"] > 0.5 * score_matrix_bytes(prev[-1]["L"]):
        est = max(est, int(prev[-1]["peak_extra_bytes"] * (L / prev[-1]["L"]) ** 2))
    return est


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                   help="sequence lengths L = S (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=15,
                   help="most timed repeats per case; fewer for big sizes (a ~3 s budget per "
                        "case), never fewer than 3 (default: %(default)s)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="output directory (default: benchmarks/results)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's default)")
    p.add_argument("--one", nargs=2, metavar=("METHOD", "L"),
                   help="measure one case in this process and print JSON (used internally)")
    p.add_argument("--min-rounds", type=int, default=MIN_REPEATS,
                   help="least alternating rounds of --pair (default: %(default)s)")
    p.add_argument("--ranks", action="store_true",
                   help="batch-rank memory table at L = 8192 and the kernel/SDPA ratio at 4096")
    p.add_argument("--rank-one", nargs=3, metavar=("METHOD", "RANK", "L"),
                   help="one batch-rank memory case in this process, JSON (used internally)")
    p.add_argument("--pair", nargs=3, metavar=("NUM", "DEN", "L"),
                   help="time NUM against DEN alternately in this process and print JSON "
                        "(used internally)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if any(L < 1 for L in args.sizes):
        p.error("--sizes must be positive")
    for name in (args.one or [])[:1] + (args.pair or [])[:2]:
        if name not in METHODS:
            p.error(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")

    if args.rank_one:
        m, rank, L = args.rank_one
        if m not in RANK_METHODS or int(rank) not in RANK_BATCH:
            p.error(f"--rank-one takes a method of {RANK_METHODS} and a rank of 2-5")
        print(json.dumps(run_rank_one(m, int(rank), int(L), args.threads)))
        return 0
    if args.ranks:
        return run_ranks(args)
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.repeats, args.threads)))
        return 0
    if args.pair:
        num, den, L = args.pair
        print(json.dumps(run_pair(num, den, int(L), args.repeats, args.threads,
                                  args.min_rounds)))
        return 0

    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = sorted(set(args.sizes))
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "batch_shape": list(BATCH),
        "E": E,
        "Ev": EV,
        "dtype": "float32",
        "bandwidth": BANDWIDTH,
        "max_bytes": MAX_BYTES,
        "repeats": args.repeats,
        "loadavg_start": _loadavg(),
        "agreement": check_agreement(),
    }
    print(f"torch {meta['torch']} | threads {meta['threads']} | CPU {meta['cpu']} "
          f"({meta['logical_cpus']} logical) | B={B} E=Ev={E} float32 | "
          f"load {meta['loadavg_start']}", flush=True)

    records: dict = {}
    pairs: dict = {}
    t_start = time.perf_counter()
    with tqdm(total=len(sizes) * (len(METHODS) + len(PAIRS)), unit="case") as bar:
        for L in sizes:
            for m in METHODS:
                bar.set_description(f"{m} L={L}")
                est = _skip_estimate(m, L, records)
                if est > MAX_BYTES:
                    rec = {"method": m, "L": L, "status": "skipped", "would_allocate_bytes": est}
                else:
                    rec = run_case(m, L, args.repeats, args.threads)
                records[(m, L)] = rec
                if rec["status"] == "ok":
                    bar.write(f"{m:>14} L={L:>6}: {rec['time_s'] * 1e3:10.3f} ms "
                              f"{rec['gflops']:7.3g} GFLOP/s "
                              f"{rec['peak_extra_bytes'] / 2**20:9.1f} MiB")
                else:
                    bar.write(f"{m:>14} L={L:>6}: {rec['status']} {rec.get('error', '')}")
                bar.update()
            for num, den, _ in PAIRS:
                bar.set_description(f"{num}/{den} L={L}")
                if records[(num, L)]["status"] == records[(den, L)]["status"] == "ok":
                    pr = run_pair_case(num, den, L, args.repeats, args.threads)
                    bar.write(f"{num + ' / ' + den:>24} L={L:>6}: "
                              f"{pr.get('ratio', float('nan')):8.3g} (paired)")
                else:
                    pr = {"num": num, "den": den, "L": L, "status": "skipped"}
                pairs[(num, den, L)] = pr
                bar.update()
    meta["wall_s"] = time.perf_counter() - t_start
    meta["loadavg_end"] = _loadavg()

    table = markdown(meta, records, pairs, sizes)
    print()
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "functional.md").write_text(table)
    (args.out / "functional.json").write_text(json.dumps({
        "meta": meta,
        "records": [records[(m, L)] for m in METHODS for L in sizes],
        "pairs": list(pairs.values()),
        "ratios": ratios(records, pairs, sizes),
    }, indent=1))
    plot(records, sizes, args.out / "functional.png", meta["threads"])
    print(f"wrote {args.out / 'functional.md'}, functional.json, functional.png "
          f"({meta['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
