"""Pinning a process to CPUs (`--cpus` / AISLE_CPUS): every thread it has, and every thread it starts later.

A server process is one event loop plus the threads of gRPC, ONNX Runtime and the warmers. Left to the
scheduler on a small machine, those threads, the event loop and a load generator keep moving between the
cores, and every move leaves the caches behind. Pinned to one core (the load generator on the other), a
Recommend answered to one caller at a time took a tenth less server CPU, and its p50 and p99 fell with it, on the
2-core benchmark machine; with many calls in flight the unpinned server did better, its other threads using the
second core (BENCHMARKS.md, issue 9, tenth pass). With `--workers N` each worker takes one CPU of the list, in
turn.

Linux sets affinity per thread, and a new thread inherits its creator's: `pin_process` sets it for every
thread in ``/proc/self/task``, so whatever started before (imports start some) is pinned too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

#: Longest CPU list accepted (a typo such as "0-100000" must not build a huge set).
MAX_CPU = 4095


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """The CPUs of a Linux CPU list ("1", "0-3", "0,2,4-5"), ascending, without repeats.

    ValueError with the reason for anything else (empty, negative, a range backwards, not a number).
    """
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"{text!r}: an empty entry; write CPU numbers and ranges such as 0,2-3")
        first, dash, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise ValueError(f"{text!r}: {part!r} is not a CPU number or a range such as 2-3") from None
        if low < 0 or high > MAX_CPU:
            raise ValueError(f"{text!r}: CPU numbers go from 0 to {MAX_CPU}")
        if high < low:
            raise ValueError(f"{text!r}: the range {part!r} goes backwards")
        cpus.update(range(low, high + 1))
    return tuple(sorted(cpus))


def check_available(cpus: Sequence[int]) -> None:
    """ValueError naming the CPUs of ``cpus`` this process may not run on (offline, or outside its cgroup), or
    saying that this system cannot pin (only Linux's kernel interface is used); nothing to check for none."""
    if not cpus:
        return
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("pinning to CPUs needs Linux (os.sched_setaffinity); leave the CPU list empty here")
    allowed = os.sched_getaffinity(0)
    missing = [cpu for cpu in cpus if cpu not in allowed]
    if missing:
        raise ValueError(
            f"CPU {','.join(map(str, missing))} is not available to this process "
            f"(it may run on {','.join(map(str, sorted(allowed)))})"
        )


def worker_cpus(cpus: Sequence[int], index: int) -> tuple[int, ...]:
    """The CPU of worker ``index`` (0-based): one each, in turn through ``cpus``."""
    return (cpus[index % len(cpus)],)


def pin_process(cpus: Sequence[int]) -> None:
    """Run every thread of this process, and every thread it starts from now on, on ``cpus`` only (none: leave
    them where they are)."""
    if not cpus:
        return
    mask = set(cpus)
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:  # no /proc: the calling thread, which the threads it starts inherit from
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, mask)
        except ProcessLookupError:  # a thread that ended since the listing
            continue


def process_cpus(pid: int) -> set[int]:
    """The CPUs each thread of process ``pid`` may run on, all of them together (tools, tests)."""
    cpus: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            cpus |= os.sched_getaffinity(int(tid))
        except ProcessLookupError:
            continue
    return cpus
