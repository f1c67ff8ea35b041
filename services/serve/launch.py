"""Build, start and update the endpoint from outside it: the `fieldkit serve` command, `serve run deploy/serve.yaml`,
and a training driver publishing its chosen checkpoint.

Building happens where the application is declared (the CLI, `serve run`, the Serve controller for `serve deploy`):
paths become absolute, the model is resolved (the tiny model is built if needed), each adapter (a directory, or a
URI in run storage read through this node's cache) becomes an AdapterRef with a probe, and the keys are read
(services.serve.keys). Replicas receive all of it; each fetches what is in storage into its own node's cache. An
adapter from a training run is served on that run's base model and engine settings (its config.yaml, beside the
adapters in run storage) unless a config says otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

from fieldkit.config import RunConfig, yaml_mapping
from fieldkit.generation import AdapterRejectedError, LoadedAdapter
from fieldkit.overrides import load_config
from fieldkit.storage import Storage, is_uri
from fieldkit.training.records import AdapterRef
from services.serve.adapters import PublishedAdapters, adapter_ref_at, location_of, with_probe
from services.serve.app import DEPLOYMENT, OpenAIServer, ServeSettings
from services.serve.errors import cause_of
from services.serve.keys import resolve_keys

RUN_CONFIG = "config.yaml"  # what a training run wrote beside its adapters (fieldkit.runs.RunStore.config)
# Ray Serve's high-throughput mode (Ray docs: "Enable High Throughput on Ray Serve"): HAProxy (C) listens on
# serve.port in place of Serve's Python proxy and forwards each request to its replica's own HTTP server, and a
# replica runs its code on its main event loop; bench/serve_latency measures what it saves. Given to the Serve
# controller, whose proxies and replicas inherit it; Serve reads it once, when the controller starts.
SERVE_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # a stopping replica keeps answering this long, for load balancers to stop sending to it: 30 s by default, for
    # a cloud load balancer; Serve's own HAProxy hears of it at once
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
}


class EndpointStartError(RuntimeError):
    """The application did not start (an adapter refused, an engine that cannot start); says why, once."""


@dataclass(frozen=True)
class AdapterSource:
    path: Path | str  # a directory, or a URI in run storage (s3://bucket/prefix/<run>/best)
    name: str | None = None  # None: the ref file's name, else derived from the location


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # what an OpenAI client takes as base_url
    models: list[str]
    ray_dashboard_url: str


def base_model_id(config: RunConfig) -> str:
    """The base model's id in /v1/models: serve.base_name, else the model's directory name or hub id."""
    if config.serve.base_name:
        return config.serve.base_name
    name = config.model.name_or_path
    if is_uri(name):  # a model in storage: named by its last part, as a directory is
        return PurePosixPath(urlsplit(name).path).name
    return Path(name).name if Path(name).exists() else name


def published_dir(config: RunConfig) -> Path:
    return config.paths.runs_dir / "serve" / config.serve.app_name / "published"


def absolute_paths(config: RunConfig) -> RunConfig:
    """A copy whose paths no longer depend on the working directory of whichever process reads them."""
    paths: dict[str, Path | str] = {}
    for name, value in config.paths.model_dump().items():
        if value is None or (isinstance(value, str) and "://" in value):
            continue  # unset (a default applies later), or an object-store URI: nothing here to resolve
        resolved = Path(value).resolve()
        paths[name] = str(resolved) if isinstance(value, str) else resolved  # paths.storage stays a string
    return config.model_copy(update={"paths": config.paths.model_copy(update=paths)})


def run_config_of(adapter: Path | str, cache: Path | None = None) -> str | None:
    """Where the config.yaml of the training run an adapter belongs to is (<run>/best or <run>/adapters/<version>,
    a directory or in run storage), or None for an adapter outside a run."""
    location = location_of(adapter)
    for run in (_parent(location), _parent(_parent(location))):
        storage = Storage(run, cache)
        if storage.exists(RUN_CONFIG):
            return storage.uri(RUN_CONFIG)
    return None


def _parent(location: str) -> str:
    """The directory, or the URI (its query kept), holding `location`."""
    if not is_uri(location):
        return str(Path(location).parent)
    parts = urlsplit(location)
    return urlunsplit(parts._replace(path=str(PurePosixPath(parts.path).parent)))


def _read_run_config(location: str, cache: Path | None) -> RunConfig:
    text = Storage(_parent(location), cache).read_bytes(RUN_CONFIG).decode()
    return RunConfig.from_data(yaml_mapping(text, location), location)


def config_from_runs(adapters: Sequence[AdapterSource], base: RunConfig) -> tuple[RunConfig, str | None]:
    """`base` with the model, LoRA limits and engine resources of the run the adapters were trained in (its
    config.yaml), and where that file is; `base` unchanged when no adapter comes from a run. Adapters of runs on
    different base models cannot share one engine. A run in a directory brings its model cache (relative paths
    anchored at that run's project directory); a run in an object store, whose relative paths mean nothing on this
    node, keeps `base`'s and brings its storage, where POST /v1/adapters finds the run's other versions."""
    cache = base.paths.node_cache
    found = {path for source in adapters if (path := run_config_of(source.path, cache)) is not None}
    if not found:
        return base, None
    runs = {path: _read_run_config(path, cache) for path in sorted(found)}
    models = {(c.model.name_or_path, c.model.engine, c.model.dtype) for c in runs.values()}
    if len(models) > 1:
        listing = "; ".join(f"{PurePosixPath(_parent(p)).name}: {c.model.name_or_path}" for p, c in runs.items())
        raise ValueError(f"the adapters come from runs on different base models ({listing}); serve them apart")
    path, run = next(iter(runs.items()))
    if is_uri(path):
        paths: dict[str, Any] = {"storage": base.paths.storage or run.paths.storage}
    else:
        runs_dir = Path(path).parent.parent  # runs/<run>/config.yaml
        relative = Path(run.paths.runs_dir)
        home = runs_dir
        if not relative.is_absolute() and runs_dir.parts[-len(relative.parts) :] == relative.parts:
            home = runs_dir.parents[len(relative.parts) - 1]  # the directory the run resolved its paths against
        models_dir = run.paths.models_dir
        paths = {"models_dir": models_dir if models_dir.is_absolute() else home / models_dir}
    config = base.model_copy(
        update={
            "model": run.model,
            "lora": run.lora,
            "resources": run.resources,
            "paths": base.paths.model_copy(update=paths),
        }
    )
    return config, path


def serve_settings(config: RunConfig, adapters: Sequence[AdapterSource] = ()) -> ServeSettings:
    """Everything a replica needs for `config` serving the base model and `adapters`, resolved here."""
    from fieldkit.training.lora_model import resolve_model_path

    api_key, admin_key = resolve_keys(config.serve, config.serve.host)  # refused here, before anything starts
    refs = [adapter_ref_at(source.path, source.name, config.paths.node_cache) for source in adapters]
    config = absolute_paths(config)
    base = base_model_id(config)
    model_dir = resolve_model_path(config.model, config.paths.models_dir)
    if config.lora.require_probe:
        refs = [with_probe(ref, model_dir, config.paths.node_cache) for ref in refs]
    names = [ref.name for ref in refs]
    clashes = sorted({n for n in names if names.count(n) > 1 or n == base})
    if clashes:
        raise ValueError(f"adapter names must be unique and differ from the base model id {base!r}: {clashes}")
    published = PublishedAdapters(published_dir(config))
    published.clear()
    return ServeSettings(
        config=config,
        base_name=base,
        adapters=refs,
        api_key=api_key,
        admin_key=admin_key,
        published_dir=str(published.root),
    )


def build_application(settings: ServeSettings) -> Any:
    """The Serve application (not yet running) for `settings`; each replica holds a policy engine, so it takes the
    policy's resources."""
    from services.policy.server import policy_options

    options = policy_options(settings.config)
    return OpenAIServer.options(ray_actor_options=options).bind(settings)  # type: ignore[attr-defined]


class AdapterArg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="a directory, or a URI in run storage")  # a Path would turn s3:// into s3:/
    name: str | None = None


class BuildArgs(BaseModel):
    """`args:` of the application in deploy/serve.yaml."""

    model_config = ConfigDict(extra="forbid")
    config: Path | None = Field(None, description="a RunConfig YAML; None = the defaults")
    adapters: list[AdapterArg] = Field(default_factory=list)
    overrides: list[str] = Field(default_factory=list, description="KEY=VALUE on the config, as the driver's --set")


def build_app(args: dict[str, Any]) -> Any:
    """The application builder `serve run`/`serve deploy` import from deploy/serve.yaml."""
    parsed = BuildArgs.model_validate(args)
    config = load_config(parsed.config, parsed.overrides)
    return build_application(serve_settings(config, [AdapterSource(a.path, a.name) for a in parsed.adapters]))


def start_endpoint(config: RunConfig, adapters: Sequence[AdapterSource] = ()) -> Endpoint:
    """Connect to (or start) Ray, start Serve's HTTP proxy on serve.host:port, run the application, wait until it
    serves. The application keeps running on the cluster until `stop_endpoint` (or the cluster ends)."""
    from ray import serve

    from services.cluster import connect

    settings = serve_settings(config, adapters)  # bad adapter directories fail here, before Ray starts
    cluster = connect(config.resources.ray_address)
    # one proxy, on the head: the address this returns is one host's, and on a cluster of several nodes on one
    # machine (tests/test_multinode.py) a proxy per node would contend for the same port
    serve.start(
        proxy_location="HeadOnly",
        http_options={"host": config.serve.host, "port": config.serve.port},
        controller_options={"runtime_env": {"env_vars": SERVE_ENV}},
    )
    try:
        serve.run(build_application(settings), name=config.serve.app_name, route_prefix="/")
    except RuntimeError as exc:  # the replica's start failed; the deployment's status holds its traceback
        status = serve.status().applications.get(config.serve.app_name)
        deployment = status.deployments.get(DEPLOYMENT) if status else None
        serve.delete(config.serve.app_name)
        why = _root_cause(deployment.message if deployment and deployment.message else str(exc))
        raise EndpointStartError(f"the endpoint did not start: {why}") from None
    return Endpoint(
        base_url=f"http://{config.serve.host}:{config.serve.port}/v1",
        models=[settings.base_name, *(ref.name for ref in settings.adapters)],
        ray_dashboard_url=cluster.dashboard_url,
    )


def _root_cause(message: str) -> str:
    """The last 'SomeError: why' line of a traceback that Serve passes on (the replica constructor's own error)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    errors = [line for line in lines if line.split(":", 1)[0].rsplit(".", 1)[-1].endswith(("Error", "Exception"))]
    return errors[-1] if errors else (lines[-1] if lines else message)


def stop_endpoint(app_name: str) -> None:
    from ray import serve

    serve.delete(app_name)


def publish_adapter(ref: AdapterRef, app_name: str = "fieldkit", timeout_s: float = 600.0) -> list[LoadedAdapter]:
    """Hot-load `ref` into every replica of the running application `app_name` (probe-verified in each engine);
    raises AdapterRejectedError naming the reason when any replica refuses it. Call from a connected Ray driver."""
    from ray import serve

    handle = serve.get_deployment_handle(DEPLOYMENT, app_name)
    try:
        return handle.publish.remote(ref).result(timeout_s=timeout_s)
    except AdapterRejectedError as exc:
        raise AdapterRejectedError(str(cause_of(exc))) from None
