"""``--gateways N``: N gateway processes on one port, kept running and stopped together.

Each gateway binds its own socket with SO_REUSEPORT, so the kernel spreads new connections over
them, and runs its own instances (``--instances`` per gateway): every instance then has exactly one
gateway, whose in-flight counts and latency EWMAs are the instance's whole load, so
least-connections and least-response-time need no cross-process load reports. What the gateways
share goes through the shared cache tier (``--redis``/``--memcached``): each one reads and writes
the same L2. docs/deployment.md says why this design and what it costs.

The supervisor (this module's ``supervise``) starts the gateways, restarts one that dies, and on
SIGTERM or SIGINT passes SIGTERM to each and waits while they drain. With ``--admin-port P`` it
serves ``/metrics`` on P itself: the sum of every gateway's (``aggregate.py``), each gateway's
operator routes then being on a private port of its own.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from dlproxy.console import free_port
from dlproxy.listen import reuse_port_socket
from dlproxy.settings import Settings

log = logging.getLogger("dlproxy.gateways")

RESTART_DELAY_S = 1.0
"""Pause before restarting a gateway that died, so a crash loop does not spin."""
STOP_TIMEOUT_S = 60.0
"""Longest a gateway may take to drain after SIGTERM before it is killed."""


def _gateway_main(settings: Settings) -> None:
    """One gateway process: the same ``serve`` as a lone gateway, on a SO_REUSEPORT socket."""
    import uvloop

    from dlproxy.app import serve
    from dlproxy.logging import configure
    from dlproxy.worker.main import die_with_parent

    die_with_parent()  # a supervisor killed outright takes its gateways (and their workers) along
    configure(settings.log_level, settings.log_format)
    try:
        uvloop.run(serve(settings))
    except KeyboardInterrupt:
        pass


def supervise(settings: Settings) -> int:
    """Run ``settings.gateways`` gateways until SIGTERM/SIGINT; then stop them all, gracefully."""
    _check_port(settings.host, settings.port)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited loop
    stopping = False

    private = {index: free_port() for index in range(1, settings.gateways + 1)}
    aggregator = None
    if settings.admin_port is not None:
        from dlproxy.aggregate import MetricsServer

        local = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        aggregator = MetricsServer(
            settings.host,
            settings.admin_port,
            {str(i): f"http://{local}:{port}/metrics" for i, port in private.items()},
        )
        aggregator.start()
    else:
        log.warning(
            "with --gateways, a scrape of /metrics reaches one gateway: add --admin-port P to "
            "scrape the sum of all of them there"
        )

    def start(index: int) -> BaseProcess:
        update: dict[str, object] = {"gateway_index": index}
        if aggregator is not None:
            update["admin_port"] = private[index]
        child = settings.model_copy(update=update)
        process = context.Process(target=_gateway_main, args=(child,), name=f"gateway {index}")
        process.start()
        log.info("gateway %d started (pid %s)", index, process.pid)
        return process

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    gateways = {index: start(index) for index in range(1, settings.gateways + 1)}
    log.info(
        "%d gateways on http://%s:%s (pids %s)",
        settings.gateways,
        settings.host,
        settings.port,
        ", ".join(str(p.pid) for p in gateways.values()),
    )
    try:
        while not stopping:
            sentinels = [p.sentinel for p in gateways.values()]
            multiprocessing.connection.wait(sentinels, timeout=0.5)
            for index, process in list(gateways.items()):
                if process.is_alive() or stopping:
                    continue
                log.warning(
                    "gateway %d (pid %s) exited with code %s; restarting it",
                    index,
                    process.pid,
                    process.exitcode,
                )
                time.sleep(RESTART_DELAY_S)
                gateways[index] = start(index)
    finally:
        _stop_all(list(gateways.values()))
        if aggregator is not None:
            aggregator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = [p for p in gateways.values() if p.exitcode not in (0, -signal.SIGTERM)]
    return 1 if failed else 0


def _stop_all(processes: list[BaseProcess]) -> None:
    """SIGTERM each gateway (each drains its requests and instances), then wait for all."""
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.error(
                "gateway pid %s did not stop in %.0f s: killing it", process.pid, STOP_TIMEOUT_S
            )
            process.kill()
            process.join()
    log.info("all gateways stopped")


def _check_port(host: str, port: int) -> None:
    """Fail at once, with a clear message, when the port is taken by something else."""
    try:
        probe = reuse_port_socket(host, port)
    except OSError as exc:
        raise SystemExit(f"dlproxy serve: cannot listen on {host}:{port}: {exc.strerror}") from None
    probe.close()
