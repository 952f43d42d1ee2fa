"""Helpers shared by the benchmark scripts: this machine's GEMM peak, interleaved timing, peak memory.

Speed claims are ratios measured in one run: the GEMM peak is timed in the same process as the models it
normalises, and models are timed round-robin (A, B, C, A, B, C, ...) so drift in machine load falls on all
of them alike. Latencies are summarised by the median and the spread of the repeats.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.utils.benchmark as benchmark

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def gemm_peak_gflops(
    dtype: str = "fp32", n: int = 2048, min_run_time: float = 1.0, device: str = "cpu", clock: str = "wall"
) -> float:
    """GFLOP/s of an ``n x n @ n x n`` matmul in ``dtype`` (``2 n^3`` FLOPs), median of blocked repeats.

    Timed with ``torch.utils.benchmark`` on all of this process's threads (its default is one); with
    ``clock="cpu"`` by this process's CPU time instead (the clock the models are then timed with), over
    about ``min_run_time`` seconds of repeats.
    """
    a = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    b = torch.randn(n, n, device=device, dtype=DTYPES[dtype])
    if clock == "cpu":
        once = interleaved_ms({"gemm": lambda: a @ b}, 1, clock="cpu")["gemm"][0]
        repeats = max(3, int(min_run_time * 1000 / max(once, 1e-3)))
        ms = statistics.median(interleaved_ms({"gemm": lambda: a @ b}, repeats, warmup=0, clock="cpu")["gemm"])
        return 2 * n**3 / (ms / 1000) / 1e9
    timer = benchmark.Timer("a @ b", globals={"a": a, "b": b}, num_threads=torch.get_num_threads())
    return 2 * n**3 / timer.blocked_autorange(min_run_time=min_run_time).median / 1e9


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved_ms(
    runs: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
    clock: str = "wall",
) -> dict[str, list[float]]:
    """``{name: [ms per call]}``: every callable warmed up, then called round-robin ``repeats`` times.

    ``clock="cpu"`` measures this process's CPU time instead of wall time: on a machine shared with other
    jobs it counts the work done rather than the time waited for a core (with one thread it is the
    honest measure; with several it also counts threads spinning at barriers).
    """
    now = CLOCKS[clock]
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = now()
            fn()
            sync()
            times[name].append((now() - t0) * 1000)
    return times


def median_and_spread(samples: list[float]) -> tuple[float, float]:
    """Median, and the spread ``(max - min) / median`` of the repeats (0 for a single one)."""
    med = statistics.median(samples)
    return med, (max(samples) - min(samples)) / med if med else 0.0


def achieved_fraction(gmacs: float, ms: float, peak_gflops: float) -> float:
    """Share of the GEMM peak that ``gmacs`` multiply-adds in ``ms`` reach: ``2 * GMACs / s / peak``."""
    return 2 * gmacs / (ms / 1000) / peak_gflops


def current_rss_mib() -> float:
    """Resident set size of this process now (Linux ``/proc/self/status``, ``VmRSS``)."""
    return _proc_status_mib("VmRSS")


def peak_rss_mib() -> float:
    """High-water mark of this process's resident set size (``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that over from the parent through fork and exec, so a
    child started by a big parent would report the parent's peak.
    """
    return _proc_status_mib("VmHWM")


def _proc_status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")
