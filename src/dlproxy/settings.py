"""Every setting of ``dlproxy serve``, with its default and why. CLI flags and a config file set them.

Values come from (last wins): defaults, ``DLPROXY_*`` environment variables, ``--config FILE``
(TOML or JSON, keys as below), command-line flags.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dlproxy.autoscaling.base import POLICIES as SCALING
from dlproxy.caching.base import POLICIES as CACHES
from dlproxy.scheduling.base import POLICIES as SCHEDULING


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    # The docstrings below are the settings' meanings: --help, docs/configuration.md.
    model_config = SettingsConfigDict(
        env_prefix="DLPROXY_", extra="forbid", use_attribute_docstrings=True
    )

    host: str = "127.0.0.1"
    """Address to listen on."""
    port: int = 8000
    """Port to listen on."""
    models: list[str] = Field(default_factory=lambda: ["minilm"])
    """Models to serve: built-in ``name[:variant]``, a path to an ``.onnx`` file, or ``module:Class``."""
    model_repository: Path | None = None
    """A model repository, ``DIR/<name>/<version>/`` (``models/repository.py``): every model in it
    is served, each version its policy names, with the settings of its ``config.json``. Without
    ``models`` given, only the repository's models are served."""
    model_control: Literal["all", "explicit"] = "all"
    """With a repository: ``all`` loads every model at start, ``explicit`` none (each loads on
    ``POST /v2/repository/models/{m}/load``); both take load and unload calls."""
    repository_poll_s: float | None = None
    """Scan the repository this often and reload what changed (none: only on load calls)."""
    memory_budget: int | None = None
    """Bytes the repository's model workers may hold (``2GiB``, ``1500MB`` or a number): models
    load on their first request, and the least recently used idle one is unloaded to make room.
    Measured as the workers' resident memory. Needs ``model_repository``."""
    instances: int | None = None
    """Worker processes per model; default: chosen from the core count (see ``resolved``)."""
    threads: int | None = None
    """Intra-op threads per worker; default: cores / instances (at least 1)."""
    borrow_threads: int | None = None
    """Intra-op threads a worker's batch may use while every other worker of the gateway is idle
    (a lone request on the whole machine; minilm's ONNX variants); default: the usable cores with
    one gateway, else 0 (off: a gateway does not see the others' load)."""
    policy: str = "least_connections"
    """Scheduling policy (round_robin, weighted_round_robin, least_connections, ...)."""
    weights: list[float] | None = None
    """Per-instance weights for weighted_round_robin, in instance order."""
    max_batch: int = 32
    """Most items in one batch sent to a worker."""
    max_delay_ms: float = 2.0
    """How long a partial batch waits behind a busy instance for more items (an idle one never
    waits); behind a local worker, which computes one batch at a time, it waits longer: until
    just before the batch computing should end, since sent sooner it would only wait there."""
    batch_by_length: bool = True
    """Fill each batch with the texts nearest in length to its oldest request's (the rest wait
    for a batch of their own length), so that short texts are not padded to a paragraph's
    length; ``dlproxy_batch_tokens`` shows the padding left."""
    max_batch_tokens: int = 1024
    """Most estimated padded tokens in one batch (items x the longest text's tokens, at 4 bytes a
    token), as well as ``max_batch`` items; 0: items only. A longer request still goes, alone.
    1,024 suits CPUs (32 sentences; on a mix with paragraphs 5.9x the req/s of no bound,
    docs/benchmarks.md); a GPU wants more (text-embeddings-inference uses 16,384)."""
    urgent_max_batch: int = 8
    """While urgent requests arrive (one in the last second: a prioritized one, ``X-Priority``,
    or, with fair shares, one of a client with nothing queued while another holds more than
    this), batches of the default priority hold at most this many items, so that an
    urgent request waits behind a short batch (a batch computing cannot be preempted); 0: no
    cap."""
    fair_share: bool = True
    """Share each instance's queue between clients (API key, else address) by weight, in
    virtual-time order, instead of first come first served: a client sending ten times its share
    gets its share, and a full queue refuses the client most over its share (429, saying so)."""
    client_weights: dict[str, float] = Field(default_factory=dict)
    """Weights of fair shares (default 1): ``ADDRESS=W``, or ``sha256:HEX=W`` for an API key (the
    first 16 hex digits of the key's SHA-256: ``printf %s KEY | sha256sum | cut -c1-16``)."""
    batching: Literal["fixed", "adaptive"] = "fixed"
    """Batch limit per instance: ``fixed`` at ``max_batch``, or ``adaptive`` (Clipper's AIMD: grows
    while recent batches meet the SLO, shrinks by 10% when they miss; ``max_batch`` is its cap)."""
    slo_ms: float | None = None
    """The p99 latency objective, ms: what ``adaptive`` batching keeps batch latencies under."""
    pipeline_depth: int = 2
    """Batches a worker may hold at once: 2 keeps it busy during the gateway round trip."""
    pipeline_stages: int = 1
    """Model parallelism: each instance is this many processes holding consecutive layers of the
    model, with micro-batches streamed through them (``minilm:torch`` only; 1: one process). Pays
    when a model does not fit one device; on one small CPU it costs throughput (benchmarks.md)."""
    max_queue: int = 512
    """Items that may wait per instance; beyond that requests get 503 + Retry-After at once."""
    max_queue_wait_ms: float | None = None
    """Admission control: refuse (503) a request whose estimated queue wait is longer than this."""
    rate_limit: float | None = None
    """Requests per second allowed per client (API key, else address); beyond it 429."""
    rate_burst: float | None = None
    """Requests a client may send at once before the rate applies (default: one second's worth)."""
    max_items: int = 256
    """Most items (rows) in one request."""
    max_text_bytes: int = 65536
    """Longest text item, in bytes."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest request body (413 beyond)."""
    max_connections: int = 4096
    """Most client connections open at once; one more is answered 503 and closed."""
    header_timeout_s: float = 10.0
    """Seconds a client has to send a request's headers (408 and closed beyond)."""
    body_timeout_s: float = 30.0
    """Seconds a client may leave between two pieces of a request body (408 and closed beyond)."""
    max_header_bytes: int = 32768
    """Largest request line and headers, in bytes (431 and closed beyond)."""
    max_request_units: int = 4096
    """Most batch units one request may take (413 beyond): its items, or for a model that counts text by size, one per window (minilm: 1 KiB); bounds how long one request holds an instance."""
    request_timeout_ms: float | None = None
    """Default deadline when a request sends no X-Request-Timeout-Ms (none: wait as long as it takes)."""
    max_request_timeout_ms: float = 600_000
    """Longest deadline a client may ask for with X-Request-Timeout-Ms; a longer one is cut to this."""
    cache: str = "none"
    """Result cache policy for the in-process level: none, lru, lfu, fifo, two_level, tinylfu."""
    cache_size: int = 100_000
    """Most entries (items) in the in-process cache."""
    cache_bytes: int = 256 * 1024 * 1024
    """Most bytes of results in the in-process cache."""
    cache_ttl: float | None = None
    """Seconds a cached result stays valid (none: until evicted)."""
    redis: str | None = None
    """Redis URL (``redis://host:port/db``) of the shared cache level (L2), if any."""
    memcached: str | None = None
    """``HOST:PORT`` of a memcached server as the shared cache level (L2), if any (not with redis)."""
    write_policy: Literal["through", "back", "combining"] = "through"
    """How stores reach L2: ``through`` (awaited before answering), ``back`` (buffered, flushed in
    the background and at shutdown), ``combining`` (awaited, gathered over 2 ms into one batch)."""
    l2_timeout_ms: float = 50.0
    """Longest an L2 lookup or store may take before it counts as a miss (and L2 is skipped for a
    growing back-off): a slow or dead cache server must not slow requests down."""
    write_back_interval_ms: float = 100.0
    """How often write-back flushes its dirty entries to L2 (sooner once 256 are waiting)."""
    write_back_max_entries: int = 10_000
    """Most dirty write-back entries waiting for L2; beyond that a store waits for a flush."""
    coalesce: bool = True
    """Compute identical items in flight at the same time once."""
    autoscale: str | None = None
    """Scaling policy (threshold, queue_length, predictive, cost); none: a fixed count."""
    scale_options: dict[str, float] = Field(default_factory=dict)
    """Options of the scaling policy's constructor, e.g. ``{"target": 4, "stable_window": 30}``."""
    min_instances: int = 1
    """Fewest local instances per model the autoscaler keeps."""
    max_instances: int | None = None
    """Most local instances per model the autoscaler starts (default: the core count)."""
    scale_interval_s: float = 1.0
    """How often the autoscaler looks at the pools."""
    scale_down_cooldown_s: float = 15.0
    """Seconds after any change before the autoscaler removes an instance."""
    instance_cost_per_hour: float = 1.0
    """What one instance costs per hour, for the ``cost`` policy's reports."""
    hang_timeout_s: float = 30.0
    """A worker holding one batch longer than this is killed and its requests retried elsewhere."""
    heartbeat_timeout_s: float = 5.0
    """A worker silent (no reply, no heartbeat) this long is killed and replaced."""
    upstreams: list[str] = Field(default_factory=list)
    """Base URLs of KServe v2 servers (another dlproxy, Triton) serving the same models, used as
    instances behind the same policies. With upstreams and no ``instances``, only they serve."""
    health_interval_s: float = 1.0
    """Seconds between health checks of an upstream; two failed in a row take it out of rotation."""
    outlier_failures: int = 5
    """Consecutive failed requests (connection errors, 502, 504) that eject an upstream."""
    outlier_base_ejection_s: float = 1.0
    """An ejection lasts this x the number of recent ejections (at most 30 s), then it returns."""
    hedge_ms: float | None = None
    """Send a request that an instance has not answered after this long to a second one too,
    and take the first answer (none: no hedging)."""
    backend: Literal["local", "ray"] = "local"
    """Where instances run: ``local`` worker processes, or ``ray`` actors placed by a Ray cluster
    (``pip install 'dlproxy[ray]'``)."""
    ray_address: str | None = None
    """``HOST:PORT`` of the Ray cluster's head (``ray start --head``); none: start Ray locally."""
    ray_num_cpus: float = 1.0
    """CPUs each Ray actor asks the cluster for (fractions allowed): how Ray packs instances."""
    gateways: int = 1
    """Gateway processes sharing the port (SO_REUSEPORT); each runs its own ``instances`` workers,
    so every instance has one gateway and its load figures are exact (docs/deployment.md)."""
    gateway_index: int = 0
    """Which of the ``gateways`` this process is (set by the supervisor; 0 when there is one)."""
    metrics: bool = True
    """Record per-request metrics (off only to measure what they cost)."""
    log_format: Literal["text", "json"] = "text"
    """Log lines as ``text`` or ``json`` (one object per line)."""
    access_log: bool = False
    """Log one line per inference request, with its request id, status and duration."""
    log_level: str = "info"
    """Logging level."""
    api_keys: Annotated[list[SecretStr] | None, NoDecode] = None
    """API keys, any of which opens the inference and metadata routes (``Authorization: Bearer
    KEY``); none: those routes are open. From the environment: comma-separated. See http/auth.py."""
    api_keys_file: Path | None = None
    """A file of API keys, one per line (``#`` comments), so keys stay off the command line."""
    admin_token: SecretStr | None = None
    """The token that opens ``/admin`` and repository routes; none: they are closed (403) unless
    ``admin_loopback``."""
    admin_loopback: bool = False
    """Without an admin token, let clients on this machine use the admin routes. Only where every
    local process is trusted: behind a same-host proxy or a sidecar every caller is local."""
    protect_operator_routes: bool = False
    """With API keys set, require a key for /metrics, /stats, /dashboard, /openapi.json and per-model readiness too; /v2/health/live and /v2/health/ready stay open for probes."""
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Proxies (IPs or networks, e.g. ``10.0.0.0/8``) whose ``X-Forwarded-For`` is believed: rate
    limits, logs and the admin check then see the client they name. From any other peer the
    header is ignored. From the environment: comma-separated."""
    graceful_shutdown_s: float = 30.0
    """Longest a shutdown (SIGTERM) waits for in-flight requests and queued batches before it
    stops the workers. Keep it below a pod's ``terminationGracePeriodSeconds`` minus its
    ``preStop`` wait (deploy/kubernetes/deployment.yaml)."""
    admin_port: int | None = None
    """Serve the admin and repository routes, ``/metrics``, ``/stats`` and ``/dashboard`` on this
    port only (the main port answers them 404), e.g. to keep them off an ingress."""

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        """``"3,1"`` (a flag or a variable) is ``[3.0, 1.0]``."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("scale_options", "client_weights", mode="before")
    @classmethod
    def _options(cls, value: Any, info: ValidationInfo) -> Any:
        """``["target=4", "window=30"]`` (a repeated flag) is a table."""
        if isinstance(value, list):
            table: dict[str, Any] = {}
            for item in value:
                key, sep, number = str(item).partition("=")
                if not sep or not key.strip():
                    what = "a scaling option" if info.field_name == "scale_options" else "a weight"
                    raise ValueError(f"{what} is KEY=NUMBER, got {item!r}")
                table[key.strip()] = number.strip()
            return table
        return value

    @field_validator(
        "max_items",
        "max_text_bytes",
        "max_body_bytes",
        "max_request_units",
        "max_connections",
        "max_header_bytes",
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value

    @field_validator("max_request_timeout_ms", "header_timeout_s", "body_timeout_s")
    @classmethod
    def _positive_ms(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"must be positive, got {value}")
        return value

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        return _known(value, SCHEDULING, "scheduling policy")

    @field_validator("cache")
    @classmethod
    def _cache(cls, value: str) -> str:
        return value if value == "none" else _known(value, CACHES, "cache policy (or none)")

    @field_validator("autoscale")
    @classmethod
    def _autoscale(cls, value: str | None) -> str | None:
        return None if value is None else _known(value, SCALING, "scaling policy")

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        levels = ("debug", "info", "warning", "error", "critical")
        if value.lower() not in levels:
            raise ValueError(f"unknown log level '{value}'; choose one of: {', '.join(levels)}")
        return value.lower()

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _bytes(cls, value: Any) -> Any:
        """``2GiB``, ``1.5G``, ``800MB``, ``512MiB`` or a plain number of bytes."""
        if isinstance(value, str):
            return parse_bytes(value)
        return value

    @model_validator(mode="after")
    def _budget_needs_a_repository(self) -> Settings:
        """Only repository models can be unloaded and loaded again on demand."""
        if self.memory_budget is not None:
            if self.model_repository is None:
                raise ValueError(
                    "memory_budget needs a model repository (--model-repository DIR): only its "
                    "models can be unloaded and loaded again"
                )
            if self.memory_budget <= 0:
                raise ValueError(f"memory_budget must be > 0 bytes, got {self.memory_budget}")
        return self

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        """A comma-separated string is a list; each entry must be an address or a network."""
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        for item in value or ():
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"'{item}' is not an IP address or network (e.g. 10.0.0.1, 10.0.0.0/8)"
                ) from None
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        """``DLPROXY_API_KEYS=k1,k2``: a comma-separated string is a list of keys."""
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()] or None
        return value

    @model_validator(mode="after")
    def _adaptive_needs_an_slo(self) -> Settings:
        """Adaptive batching steers by the SLO: without one it has nothing to aim at."""
        if self.batching == "adaptive" and not self.slo_ms:
            raise ValueError("batching 'adaptive' needs an SLO: set slo_ms (--slo-ms MS)")
        if self.slo_ms is not None and self.slo_ms <= 0:
            raise ValueError(f"slo_ms must be > 0, got {self.slo_ms}")
        return self

    @model_validator(mode="after")
    def _scale_out_bounds(self) -> Settings:
        """Scale-out numbers a person may mistype: say which and what is allowed."""
        if not 1 <= self.gateways <= 64:
            raise ValueError(f"gateways must be from 1 to 64, got {self.gateways}")
        if self.ray_num_cpus <= 0:
            raise ValueError(f"ray_num_cpus must be > 0, got {self.ray_num_cpus}")
        if self.ray_address and self.backend != "ray":
            raise ValueError("ray_address is set but backend is 'local': add --backend ray")
        for client, weight in self.client_weights.items():
            if not weight > 0:
                raise ValueError(
                    f"client_weights: the weight of '{client}' must be > 0, got {weight}"
                )
        if self.urgent_max_batch < 0:
            raise ValueError(
                f"urgent_max_batch must be >= 0 (0: no cap), got {self.urgent_max_batch}"
            )
        if self.max_batch_tokens < 0:
            raise ValueError(
                f"max_batch_tokens must be >= 0 (0: no bound), got {self.max_batch_tokens}"
            )
        if self.borrow_threads is not None and self.borrow_threads < 0:
            raise ValueError(f"borrow_threads must be >= 0 (0: off), got {self.borrow_threads}")
        return self

    @model_validator(mode="after")
    def _stages_fit_the_models(self) -> Settings:
        """Only models that can be cut into stages can be pipelined: say so before starting."""
        if self.pipeline_stages < 1:
            raise ValueError(f"pipeline_stages must be >= 1, got {self.pipeline_stages}")
        if self.pipeline_stages > 1:
            if self.backend != "local":
                raise ValueError("pipeline_stages > 1 needs the local backend")
            from dlproxy.models.stages import check_stages

            for reference in self.models:
                check_stages(reference, self.pipeline_stages)
        return self

    def resolved(self) -> Settings:
        """A copy with ``instances`` and ``threads`` chosen from the machine when unset.

        Measured on 2 cores (MiniLM, ONNX Runtime): two 1-thread processes serve ~870 sentences/s,
        one 2-thread process ~780/s: so one instance per core, one thread each, up to 8 instances.
        """
        cores = usable_cores()
        if self.upstreams and not self.instances:
            instances = 0  # the upstreams serve; no local worker unless asked for
        else:
            # With several gateways each runs its own workers: share the cores among them.
            instances = self.instances or max(
                1, min(cores // self.gateways, 8) // self.pipeline_stages
            )
        processes = instances * self.gateways * self.pipeline_stages  # each stage is a process
        threads = self.threads or max(1, cores // max(1, processes))
        borrow = self.borrow_threads
        if borrow is None:
            borrow = cores if self.gateways == 1 and self.pipeline_stages == 1 else 0
        update: dict[str, Any] = {
            "instances": instances,
            "threads": threads,
            "borrow_threads": borrow,
        }
        if self.model_repository is not None and "models" not in self.model_fields_set:
            update["models"] = []  # the repository's models only
        return self.model_copy(update=update)


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_bytes(text: str) -> int:
    """``"2GiB"`` -> 2147483648; ValueError naming the accepted forms otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match[2].lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ValueError(f"'{text}' is not a size: write bytes, or e.g. 800MB, 2GiB, 1.5G")
    return int(float(match[1]) * _UNITS[unit])


def _known(name: str, table: dict[str, str], family: str) -> str:
    if name not in table:
        raise ValueError(f"unknown {family} '{name}'; choose one of: {', '.join(sorted(table))}")
    return name


def load_config_file(path: Path) -> dict[str, Any]:
    """Settings from a TOML or JSON file (what ``dlproxy tune`` writes)."""
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        data = tomllib.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table of settings")
    return data
