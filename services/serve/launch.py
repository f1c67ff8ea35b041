"""Build, start and update the endpoint from outside it: the `fieldkit serve` command, `serve run deploy/serve.yaml`,
and a training driver publishing its chosen checkpoint.

Building happens where the application is declared (the CLI, `serve run`, the Serve controller for `serve deploy`):
paths become absolute, the model is resolved (the tiny model is built if needed), each adapter directory becomes
an AdapterRef with a probe, and the API key is read (FIELDKIT_API_KEY over `serve.api_key`). Replicas receive all
of it and resolve nothing themselves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fieldkit.config import RunConfig
from fieldkit.generation import AdapterRejectedError, LoadedAdapter
from fieldkit.training.records import AdapterRef
from services.serve.adapters import PublishedAdapters, adapter_ref_from_dir, with_probe
from services.serve.app import DEPLOYMENT, OpenAIServer, ServeSettings, cause_of

API_KEY_ENV = "FIELDKIT_API_KEY"


@dataclass(frozen=True)
class AdapterSource:
    path: Path
    name: str | None = None  # None: the ref file's name, else derived from the directory


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
    return Path(name).name if Path(name).exists() else name


def published_dir(config: RunConfig) -> Path:
    return config.paths.runs_dir / "serve" / config.serve.app_name / "published"


def absolute_paths(config: RunConfig) -> RunConfig:
    """A copy whose paths no longer depend on the working directory of whichever process reads them."""
    paths = {name: Path(value).resolve() for name, value in config.paths.model_dump().items()}
    return config.model_copy(update={"paths": config.paths.model_copy(update=paths)})


def serve_settings(config: RunConfig, adapters: Sequence[AdapterSource] = ()) -> ServeSettings:
    """Everything a replica needs for `config` serving the base model and `adapters`, resolved here."""
    from fieldkit.training.lora_model import resolve_model_path

    refs = [adapter_ref_from_dir(source.path, source.name) for source in adapters]
    config = absolute_paths(config)
    base = base_model_id(config)
    model_dir = resolve_model_path(config.model, config.paths.models_dir)
    if config.lora.require_probe:
        refs = [with_probe(ref, model_dir) for ref in refs]
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
        api_key=os.environ.get(API_KEY_ENV) or config.serve.api_key or None,
        published_dir=str(published.root),
    )


def build_application(settings: ServeSettings) -> Any:
    """The Serve application (not yet running) for `settings`."""
    return OpenAIServer.bind(settings)  # type: ignore[attr-defined]  # the decorators make it a Deployment


class AdapterArg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path
    name: str | None = None


class BuildArgs(BaseModel):
    """`args:` of the application in deploy/serve.yaml."""

    model_config = ConfigDict(extra="forbid")
    config: Path | None = Field(None, description="a RunConfig YAML; None = the defaults")
    adapters: list[AdapterArg] = Field(default_factory=list)


def build_app(args: dict[str, Any]) -> Any:
    """The application builder `serve run`/`serve deploy` import from deploy/serve.yaml."""
    parsed = BuildArgs.model_validate(args)
    config = RunConfig.from_yaml(parsed.config) if parsed.config else RunConfig()
    return build_application(serve_settings(config, [AdapterSource(a.path, a.name) for a in parsed.adapters]))


def start_endpoint(config: RunConfig, adapters: Sequence[AdapterSource] = ()) -> Endpoint:
    """Connect to (or start) Ray, start Serve's HTTP proxy on serve.host:port, run the application, wait until it
    serves. The application keeps running on the cluster until `stop_endpoint` (or the cluster ends)."""
    from ray import serve

    from services.cluster import connect

    settings = serve_settings(config, adapters)  # bad adapter directories fail here, before Ray starts
    cluster = connect(config.resources.ray_address)
    serve.start(http_options={"host": config.serve.host, "port": config.serve.port})
    serve.run(build_application(settings), name=config.serve.app_name, route_prefix="/")
    return Endpoint(
        base_url=f"http://{config.serve.host}:{config.serve.port}/v1",
        models=[settings.base_name, *(ref.name for ref in settings.adapters)],
        ray_dashboard_url=cluster.dashboard_url,
    )


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
