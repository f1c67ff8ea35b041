"""The capability planner: how much memory a fine-tuning run needs, and the fewest GPUs of a kind that hold it.

    catalog       hardware and model catalogues (package data + the user's files), HF config.json input
    architecture  a model's shape: parameter counts, LoRA parameters, linear modules, hybrid Mamba blocks
    request       what is asked: method, sequence shapes, recompute, kernels, rollout engine, margins
    memory        the named memory terms (weights, LoRA, gradients, optimizer, activations, KV cache, engine)
    layouts       DP/ZeRO/FSDP, TP and PP layouts, engine placement, the exact fewest-GPU search
    planner       the plan: terms, best layout, alternatives, other GPUs, co-residence, by how much it misses
    ray_layout    the plan as placement groups, RunConfig resources and a KubeRay RayJob

Pure Python: no torch, no Ray. `fieldkit plan` is the command.
"""

from fieldkit.capabilities.catalog import Catalogue, load_catalogue
from fieldkit.capabilities.errors import PlanInputError
from fieldkit.capabilities.planner import Plan, make_plan
from fieldkit.capabilities.request import PlanRequest

__all__ = ["Catalogue", "Plan", "PlanInputError", "PlanRequest", "load_catalogue", "make_plan"]
