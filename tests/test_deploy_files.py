"""Deploy files: the cluster launcher config passes Ray's own validation, the KubeRay manifests have the shape KubeRay
needs with token auth, every entrypoint module and run config they name exists (and validates), the RayService runs
the application deploy/serve.yaml runs, and the 7B GPU config sets only commented non-defaults whose GPU fractions
hold what the planner asks for."""

from __future__ import annotations

import copy
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from fieldkit.capabilities.catalog import load_catalogue
from fieldkit.capabilities.planner import make_plan
from fieldkit.capabilities.ray_layout import NODE_CACHE, pod_storage, rayjob
from fieldkit.capabilities.request import PlanRequest
from fieldkit.config import RunConfig
from fieldkit.overrides import load_config

REPO = Path(__file__).resolve().parent.parent
DEPLOY_FILES = [REPO / "ray_cluster.yaml", *sorted((REPO / "deploy" / "kuberay").glob("*.yaml"))]
CONFIG_7B = REPO / "deploy" / "configs" / "clawgym-grpo-7b.yaml"
# Entrypoints other engineers write after these files: a missing one skips, naming the file; any other fails.
NOT_YET_WRITTEN = {"services.train": "services/train.py", "services.serve.launch": "services/serve/launch.py"}
MODULE = re.compile(r"python -m ([\w.]+)")
IMPORT_PATH = re.compile(r"import_path:\s*([\w.]+):(\w+)")
RUN_CONFIG = re.compile(r"deploy/configs/[\w.-]+\.ya?ml")


def references(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    return sorted({(path.name, match) for path in DEPLOY_FILES for match in pattern.findall(path.read_text())})


def module_file(module: str, package_file: str = "__main__.py") -> Path | None:
    """The file `python -m module` runs (a package runs its __main__.py; an import path reads its __init__.py)."""
    base = REPO / module.replace(".", "/")
    return next((p for p in (base.with_suffix(".py"), base / package_file) if p.exists()), None)


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def test_the_three_deploy_files_are_there_and_commented() -> None:
    assert [p.relative_to(REPO).as_posix() for p in DEPLOY_FILES] == [
        "ray_cluster.yaml", "deploy/kuberay/rayjob.yaml", "deploy/kuberay/rayservice.yaml",
    ]  # fmt: skip
    for path in DEPLOY_FILES:
        lines = path.read_text().splitlines()
        assert lines[0].startswith("# ") and sum("#" in line for line in lines) >= 10, path.name
        assert MODULE.search(path.read_text()) or IMPORT_PATH.search(path.read_text()), (
            f"{path.name} names no entrypoint"
        )


@pytest.mark.parametrize(("source", "module"), references(MODULE) + [(s, m) for s, (m, _) in references(IMPORT_PATH)])
def test_every_named_entrypoint_module_exists(source: str, module: str) -> None:
    if module_file(module) is None:
        if module in NOT_YET_WRITTEN:
            pytest.skip(f"{NOT_YET_WRITTEN[module]} is not written yet ({source} names {module})")
        pytest.fail(f"{source} names {module}, which has no module file")


@pytest.mark.parametrize(("source", "import_path"), [(s, f"{m}:{a}") for s, (m, a) in references(IMPORT_PATH)])
def test_every_serve_import_path_names_a_defined_object(source: str, import_path: str) -> None:
    module, attribute = import_path.split(":")
    path = module_file(module, "__init__.py")
    if path is None:
        if module in NOT_YET_WRITTEN:
            pytest.skip(f"{NOT_YET_WRITTEN[module]} is not written yet ({source} names {import_path})")
        pytest.fail(f"{source} names {import_path}, whose module has no file")
    defined = rf"^{attribute}\s*[:=]|^(def|class) {attribute}\b|^from \S+ import .*\b{attribute}\b"
    assert re.search(defined, path.read_text(), re.MULTILINE), f"{path} defines no {attribute}"


@pytest.mark.parametrize(("source", "config"), references(RUN_CONFIG))
def test_every_named_run_config_exists_and_validates(source: str, config: str) -> None:
    path = REPO / config
    assert path.exists(), f"{source} names {config}, which does not exist"
    RunConfig.from_yaml(path)


def test_the_cluster_launcher_config_passes_rays_own_validation() -> None:
    # Ray's `ray up` runs exactly these two steps (private API: there is no public validator).
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(REPO / "ray_cluster.yaml")
    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["provider"]["type"] == "local" and config["provider"]["head_ip"]
    assert config["max_workers"] == len(config["provider"]["worker_ips"])
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c and ".venv/bin/ray start" in c for c in starts)
    assert "--head" in starts[0] and "--address=$RAY_HEAD_IP:6379" in starts[1]
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


def check_ray_cluster_spec(spec: dict[str, Any]) -> None:
    """What KubeRay >= 1.5.1 needs for a token-auth Ray cluster with GPU workers."""
    assert spec["rayVersion"] == version("ray")  # the image's Ray must match the one we test against
    assert spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    containers = [head["template"]["spec"]["containers"][0]]
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
        containers.append(container)
    assert len({c["image"] for c in containers}) == 1 and all(c["workingDir"] == "/app" for c in containers)


def check_pod_storage(spec: dict[str, Any], model_path: str, head_keeps_runs: bool = True) -> None:
    """Every pod gets what a cluster run needs (pods share no disk): the storage credentials, a node cache, the
    model under a read-only volume, and every mount backed by a volume of its own pod; a training cluster's head
    also keeps runs/ (`head_keeps_runs`)."""
    pods = [(spec["headGroupSpec"]["template"]["spec"], True)]
    pods += [(group["template"]["spec"], False) for group in spec["workerGroupSpecs"]]
    for pod, head in pods:
        head = head and head_keeps_runs
        (container,) = pod["containers"]
        expected_container, expected_volumes = pod_storage(head)
        assert {key: container.get(key) for key in expected_container} == expected_container  # = plan --emit ray's
        assert pod["volumes"] == expected_volumes
        volumes = {volume["name"] for volume in pod["volumes"]}
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        assert {mount["name"] for mount in mounts.values()} <= volumes
        holding_model = [m for path, m in mounts.items() if Path(model_path).is_relative_to(path)]
        assert len(holding_model) == 1 and holding_model[0]["readOnly"] is True, model_path
        assert {"name": "FIELDKIT_NODE_CACHE", "value": NODE_CACHE} in container["env"] and NODE_CACHE in mounts
        assert ("/app/runs" in mounts) == head


def check_rayjob(job: dict[str, Any]) -> None:
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    entry = re.fullmatch(
        r"python -m services\.train --config (\S+\.yaml) --set (paths\.storage=\S+)", job["spec"]["entrypoint"]
    )
    assert entry, job["spec"]["entrypoint"]
    config = load_config(REPO / entry[1], [entry[2]])  # the run the cluster starts, as the driver reads it
    assert config.paths.storage is not None and "://" in config.paths.storage  # an object store every pod reaches
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    check_ray_cluster_spec(job["spec"]["rayClusterSpec"])
    check_pod_storage(job["spec"]["rayClusterSpec"], config.model.name_or_path)


def test_the_rayjob_manifest_submits_the_driver_on_a_token_auth_cluster() -> None:
    check_rayjob(load(REPO / "deploy" / "kuberay" / "rayjob.yaml"))


def test_the_planner_emits_a_rayjob_of_the_same_shape() -> None:
    catalogue = load_catalogue()
    model, request = PlanRequest.from_run_config(RunConfig.from_yaml(CONFIG_7B), recompute="full")
    for gpu in ("h100", "gb10"):
        result = make_plan(catalogue, model, gpu, request)
        job = rayjob(result, catalogue.gpu(gpu), "deploy/configs/clawgym-grpo-7b.yaml")
        check_rayjob(job)
        worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
        gpus = int(worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
        assert result.best is not None and gpus * worker["replicas"] >= result.best.gpus


def test_the_rayservice_manifest_serves_the_app_on_a_token_auth_cluster() -> None:
    service = load(REPO / "deploy" / "kuberay" / "rayservice.yaml")
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    (application,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    (single_box,) = load(REPO / "deploy" / "serve.yaml")["applications"]
    for key in ("name", "import_path", "route_prefix"):
        assert application[key] == single_box[key], key
    from services.serve.launch import BuildArgs

    args = BuildArgs.model_validate(application["args"])  # what build_app reads
    assert args.config is not None
    config = load_config(REPO / args.config, args.overrides)  # as build_app reads it
    storage = config.paths.storage
    assert storage is not None and "://" in storage  # an object store every pod reaches
    assert [a.path for a in args.adapters] == [f"{storage}/{config.run_name}/best"]  # the run's best, in storage
    check_ray_cluster_spec(service["spec"]["rayClusterConfig"])
    check_pod_storage(service["spec"]["rayClusterConfig"], config.model.name_or_path, head_keeps_runs=False)


def test_both_serve_configs_start_serve_in_the_mode_fieldkit_serve_uses() -> None:
    """deploy/serve.yaml and the RayService give the Serve controller the environment `fieldkit serve` gives it
    (HAProxy in front of each replica's own HTTP server), in a form Serve's own schema accepts."""
    from ray.serve.schema import ServeDeploySchema

    from services.serve.launch import SERVE_ENV

    service = load(REPO / "deploy" / "kuberay" / "rayservice.yaml")
    for config in (load(REPO / "deploy" / "serve.yaml"), yaml.safe_load(service["spec"]["serveConfigV2"])):
        schema = ServeDeploySchema.model_validate(config)
        assert schema.controller_options is not None and schema.controller_options.runtime_env is not None
        assert schema.controller_options.runtime_env["env_vars"] == SERVE_ENV


def leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            found.update(leaves(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def test_the_7b_config_sets_only_non_defaults_each_with_a_comment() -> None:
    text = CONFIG_7B.read_text()
    defaults = leaves(RunConfig().model_dump(mode="json"))
    for dotted, value in leaves(yaml.safe_load(text)).items():
        assert value != defaults[dotted], f"{dotted}: {value!r} is the default; leave it out"
    for line in text.splitlines():
        if re.match(r"\s*\w+:\s*[^#\s]", line):  # a key with a value (section headers have none)
            assert "#" in line, f"no reason given: {line.strip()}"


def test_the_7b_config_holds_what_the_planner_asks_of_a_gb10() -> None:
    cfg = RunConfig.from_yaml(CONFIG_7B)
    assert Path(cfg.model.name_or_path).is_absolute() and cfg.resources.num_gpus == 1
    model, request = PlanRequest.from_run_config(cfg)
    result = make_plan(load_catalogue(), model, "gb10", request)
    co = result.co_residence
    assert result.best is not None and co is not None and co.fits
    assert cfg.resources.engine_gpu_fraction >= co.engine_gpu_fraction
    assert cfg.resources.learner_gpu_fraction >= co.learner_gpu_fraction
