"""A plan's layout as Ray sees it: placement-group bundles, the RunConfig `resources:` section, and a KubeRay
RayJob that brings up enough GPU nodes and submits the driver (the same shape as deploy/kuberay/rayjob.yaml).

Pods share no disk, so the RayJob gives every pod what a cluster run needs (README: Cluster deploy): run storage
as an object-store URI (`paths.storage`) with its credentials from a Secret, the base models on a read-only volume
at /models, a node-local cache for downloads from storage, and on the head a volume for runs/ (the lineage store
and the driver's logs outlive the cluster)."""

from __future__ import annotations

import math
from typing import Any

from fieldkit.capabilities.catalog import Hardware
from fieldkit.capabilities.planner import Plan

RAY_VERSION = "2.60.0"
CPUS_PER_GPU = 4  # a rollout worker, a grader and sandbox leases per GPU's share of the run
HEAD_RESOURCES = {"cpu": "8", "memory": "32Gi"}
DEFAULT_IMAGE = "fieldkit-mesh:0.1.0"  # an image with this repository installed (see deploy/kuberay/rayjob.yaml)
DEFAULT_STORAGE = "s3://fieldkit-runs"  # paths.storage of a cluster run: a bucket every pod reaches
STORAGE_SECRET = "fieldkit-storage"  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (+ AWS_ENDPOINT_URL_S3 off AWS)
MODELS_CLAIM = "fieldkit-models"  # a ReadOnlyMany volume holding the base model snapshots
RUNS_CLAIM = "fieldkit-runs"  # the head's runs/: lineage.db, run logs, TensorBoard events
NODE_CACHE = "/cache"  # FIELDKIT_NODE_CACHE: each pod's own scratch disk for what it downloads from storage


def pod_storage(head: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """What a pod needs to take part in a cluster run: its container's env/envFrom/volumeMounts, its volumes."""
    mounts = [
        {"name": "models", "mountPath": "/models", "readOnly": True},
        {"name": "node-cache", "mountPath": NODE_CACHE},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "models", "persistentVolumeClaim": {"claimName": MODELS_CLAIM, "readOnly": True}},
        {"name": "node-cache", "emptyDir": {}},
    ]
    if head:
        mounts.append({"name": "runs", "mountPath": "/app/runs"})
        volumes.append({"name": "runs", "persistentVolumeClaim": {"claimName": RUNS_CLAIM}})
    container = {
        "env": [{"name": "FIELDKIT_NODE_CACHE", "value": NODE_CACHE}],
        "envFrom": [{"secretRef": {"name": STORAGE_SECRET}}],
        "volumeMounts": mounts,
    }
    return container, volumes


def placement_groups(plan: Plan, hw: Hardware) -> list[dict[str, Any]]:
    """One group for the learner's GPUs (the engine shares them when colocated), one for a separate engine."""
    layout = plan.best or plan.closest
    assert layout is not None
    bundle = {"GPU": 1, "CPU": CPUS_PER_GPU}
    groups = [
        {
            "name": "learner",
            "strategy": "STRICT_PACK" if layout.learner_gpus <= hw.gpus_per_node else "PACK",
            "bundles": [dict(bundle) for _ in range(layout.learner_gpus)],
        }
    ]
    if layout.engine == "separate":
        groups.append(
            {
                "name": "engine",
                "strategy": "STRICT_PACK",  # one engine's tensor-parallel ranks stay on one node
                "bundles": [dict(bundle) for _ in range(layout.engine_gpus)],
            }
        )
    return groups


def resources_section(plan: Plan) -> dict[str, Any]:
    """The RunConfig `resources:` values this layout implies."""
    layout = plan.best or plan.closest
    assert layout is not None
    section: dict[str, Any] = {"num_gpus": layout.gpus}
    if plan.co_residence:
        section["engine_gpu_fraction"] = plan.co_residence.engine_gpu_fraction
        section["learner_gpu_fraction"] = plan.co_residence.learner_gpu_fraction
    return section


def rayjob(
    plan: Plan, hw: Hardware, run_config: str, image: str = DEFAULT_IMAGE, storage: str = DEFAULT_STORAGE
) -> dict[str, Any]:
    """A KubeRay RayJob: a CPU head, GPU worker pods for the layout, token auth on, run storage and models mounted
    on every pod (`pod_storage`), the driver as entrypoint writing to `storage`."""
    layout = plan.best or plan.closest
    assert layout is not None
    per_pod = min(layout.gpus, hw.gpus_per_node)
    pods = math.ceil(layout.gpus / per_pod)
    container = {"image": image, "workingDir": "/app"}
    head_storage, head_volumes = pod_storage(head=True)
    worker_storage, worker_volumes = pod_storage(head=False)
    worker_limits = {"nvidia.com/gpu": str(per_pod), "cpu": str(per_pod * CPUS_PER_GPU), "memory": f"{per_pod * 64}Gi"}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": f"fieldkit-{plan.model}-{plan.request['method']}".replace(".", "-")},
        "spec": {
            "entrypoint": f"python -m services.train --config {run_config} --set paths.storage={storage}",
            "shutdownAfterJobFinishes": True,
            "rayClusterSpec": {
                "rayVersion": RAY_VERSION,
                "authOptions": {"mode": "token"},
                "headGroupSpec": {
                    "rayStartParams": {"num-gpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "ray-head",
                                    **container,
                                    "resources": {"limits": HEAD_RESOURCES},
                                    **head_storage,
                                }
                            ],
                            "volumes": head_volumes,
                        }
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": f"{hw.name}-workers",
                        "replicas": pods,
                        "minReplicas": pods,
                        "maxReplicas": pods,
                        "rayStartParams": {},
                        "template": {
                            "spec": {
                                "containers": [
                                    {
                                        "name": "ray-worker",
                                        **container,
                                        "resources": {"limits": worker_limits},
                                        **worker_storage,
                                    }
                                ],
                                "volumes": worker_volumes,
                            }
                        },
                    }
                ],
            },
        },
    }
