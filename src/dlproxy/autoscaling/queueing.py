"""The M/G/c queue: how latency depends on the instance count, for the policies that plan with it.

Requests arrive at rate ``rate`` (Poisson) and ``servers`` instances each serve one at a time in
``service_time`` seconds on average (the time per request at the batch sizes they run, so batching
is in the figure). Erlang C gives the chance that a request waits; in M/M/c the wait of those that
do is exponential with rate ``servers / service_time - rate``, so its quantiles have a closed
form. Allen and Cunneen's approximation carries that to general service times by scaling the wait
by ``(ca2 + cs2) / 2``, the mean squared coefficients of variation of inter-arrival (1 for
Poisson) and service times.
"""

from __future__ import annotations

import math

from dlproxy.autoscaling.base import Snapshot


def erlang_c(servers: int, load: float) -> float:
    """The chance that an arrival waits, with ``load = rate * service_time`` (1 if unstable)."""
    if load <= 0:
        return 0.0
    if servers <= load:
        return 1.0
    blocking = 1.0  # Erlang B by its recurrence: stable for any number of servers
    for k in range(1, servers + 1):
        blocking = load * blocking / (k + load * blocking)
    utilisation = load / servers
    return blocking / (1.0 - utilisation * (1.0 - blocking))


def latency_quantile(
    servers: int,
    rate: float,
    service_time: float,
    quantile: float = 0.99,
    cs2: float = 1.0,
    ca2: float = 1.0,
) -> float:
    """The ``quantile`` of response time (wait plus own service), seconds; inf when overloaded.

    Exact for M/M/c's wait; the service part is the mean, which is what a batching instance
    spends on a request's batch once it starts.
    """
    if service_time <= 0 or rate <= 0:
        return max(service_time, 0.0)
    load = rate * service_time
    if servers <= load:
        return math.inf
    waits = erlang_c(servers, load)
    tail = 1.0 - quantile
    wait = 0.0
    if waits > tail:
        drain = servers / service_time - rate  # how fast the queue empties, requests/s
        wait = math.log(waits / tail) / drain * (ca2 + cs2) / 2.0
    return wait + service_time


def fewest_servers(
    rate: float,
    service_time: float,
    slo: float,
    quantile: float = 0.99,
    cs2: float = 1.0,
    max_utilisation: float = 1.0,
    limit: int = 10_000,
) -> int:
    """The fewest instances (at least 1) whose ``quantile`` latency meets ``slo`` at ``rate``.

    ``max_utilisation`` caps the busy share of each instance as well: the model is steady
    state, and a real pool a few seconds from a burst is not. Returns ``limit`` if none does.
    """
    if rate <= 0 or service_time <= 0:
        return 1
    servers = max(1, math.ceil(rate * service_time / max_utilisation))
    while servers < limit:
        if latency_quantile(servers, rate, service_time, quantile, cs2) <= slo:
            return servers
        servers += 1
    return limit


def service_time(snapshot: Snapshot) -> float:
    """Seconds per request: measured if the snapshot has it, else inferred (0 if unknowable).

    The utilisation law (busy share = rate * service time / instances) gives it from the CPU
    figure, so a pool that has not reported service times yet can still be planned for.
    """
    if snapshot.service_time > 0:
        return snapshot.service_time
    if snapshot.arrival_rate > 0 and snapshot.cpu > 0 and snapshot.ready > 0:
        return min(snapshot.cpu, 1.0) * snapshot.ready / snapshot.arrival_rate
    return 0.0
