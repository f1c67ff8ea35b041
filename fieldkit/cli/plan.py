"""`fieldkit plan`: how much memory a fine-tuning run needs, and the fewest GPUs of a kind that hold it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fieldkit.cli.console import console, err_console


def plan(
    model: Annotated[
        str | None, typer.Option(help="catalogue name or HF id (qwen2.5-7b, Qwen/Qwen2.5-7B-Instruct)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="a local HF config.json (or its directory) instead of --model")
    ] = None,
    run: Annotated[
        Path | None, typer.Option(help="a RunConfig YAML: model, LoRA, lengths and rollouts from it")
    ] = None,
    gpu: Annotated[
        str, typer.Option(help="catalogue GPU: gb10, h100, h200, b200, a100-80, a100-40, l40s, rtx4090")
    ] = "gb10",
    method: Annotated[str | None, typer.Option(help="full | lora | qlora  [default: lora]")] = None,
    seq: Annotated[int | None, typer.Option(help="tokens per training sequence  [default: 2048]")] = None,
    micro_batch: Annotated[int | None, typer.Option(help="sequences per micro-batch per DP rank  [default: 1]")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank  [default: 16]")] = None,
    rollout_batch: Annotated[int | None, typer.Option(help="sequences in the engine at once; 0 = no engine")] = None,
    rollout_ctx: Annotated[int | None, typer.Option(help="context per rollout sequence  [default: 4096]")] = None,
    recompute: Annotated[str | None, typer.Option(help="none | selective | full  [default: full for qlora]")] = None,
    kernels: Annotated[str | None, typer.Option(help="fused (Megatron/Liger) | eager (HF RMSNorm)")] = None,
    grads: Annotated[str | None, typer.Option(help="persistent | on_demand gradient buffers")] = None,
    engine: Annotated[str | None, typer.Option(help="auto | colocated | separate engine placement")] = None,
    headroom: Annotated[float | None, typer.Option(help="fraction added on top of the peak  [default: 0.3]")] = None,
    max_gpus: Annotated[int | None, typer.Option(help="largest layout considered  [default: 1024]")] = None,
    catalog: Annotated[list[Path] | None, typer.Option(help="extra hardware/model catalogue file (repeatable)")] = None,
    emit: Annotated[str | None, typer.Option(help="'ray': placement groups, resources and a RayJob")] = None,
    storage: Annotated[
        str | None, typer.Option(help="--emit ray: paths.storage of every pod  [default: s3://fieldkit-runs]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable plan")] = False,
) -> None:
    """Memory terms, the layout with the fewest GPUs, alternatives; exit 1 when nothing fits, 2 on bad input."""
    from fieldkit.capabilities.catalog import load_catalogue
    from fieldkit.capabilities.errors import PlanInputError
    from fieldkit.capabilities.planner import make_plan
    from fieldkit.capabilities.request import PlanRequest

    given = {
        "method": method, "seq": seq, "micro_batch": micro_batch, "rank": rank, "rollout_batch": rollout_batch,
        "rollout_ctx": rollout_ctx, "recompute": recompute, "kernels": kernels, "grads": grads, "engine": engine,
        "headroom": headroom, "max_gpus": max_gpus,
    }  # fmt: skip
    options = {name: value for name, value in given.items() if value is not None}
    try:
        if sum(x is not None for x in (model, config, run)) != 1:
            raise PlanInputError("model", "give exactly one of --model NAME, --config PATH and --run PATH")
        if emit not in (None, "ray"):
            raise PlanInputError("emit", f"unknown target {emit!r}; known: ray")
        if run is not None:
            from fieldkit.cli.config import load_config

            name, request = PlanRequest.from_run_config(load_config(run), **options)
        else:
            name, request = str(config or model), PlanRequest.build(**options)
        catalogue = load_catalogue(catalog)
        result = make_plan(catalogue, name, gpu, request)
    except PlanInputError as exc:
        err_console.print(f"[red]plan refused[/red] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    ray = None
    if emit == "ray":
        from fieldkit.capabilities.ray_layout import placement_groups, rayjob, resources_section

        hw = catalogue.gpu(gpu)
        run_config = str(run) if run else f"deploy/configs/{result.model}-{result.request['method']}.yaml"
        ray = {
            "placement_groups": placement_groups(result, hw),
            "resources": resources_section(result),
            "rayjob": rayjob(result, hw, run_config, **({"storage": storage} if storage else {})),
        }
        if not Path(run_config).exists():
            result.notes.append(f"the RayJob submits {run_config}: write it, with the resources section shown")
    if as_json:
        print(json.dumps({**result.model_dump(), "summary": result.summary, **({"ray": ray} if ray else {})}, indent=2))
    else:
        show(result)
        if ray:
            show_ray(ray)
    if result.best is None:
        raise typer.Exit(1)


def show(result: Any) -> None:
    from rich.table import Table

    lora = f", LoRA {result.lora_params / 1e6:.2f}M params" if result.lora_params else ""
    request = result.request
    console.print(
        f"[bold]{result.model}[/bold] ({result.params / 1e9:.2f}B params{lora}), {request['method']} on "
        f"[bold]{result.gpu_label}[/bold] ({request['seq']} tokens x micro-batch {request['micro_batch']})"
    )
    layout = result.best or result.closest
    terms = Table("term", "whole model GB", f"per GPU GB ({layout.label})", "arithmetic", title="memory terms")
    for term in result.terms:
        terms.add_row(term.name, f"{term.total_gb:.2f}", f"{layout.per_gpu_gb.get(term.name, 0):.2f}", term.formula)
    for name in ("framework overhead", "engine framework overhead"):
        if name in layout.per_gpu_gb:
            terms.add_row(name, "", f"{layout.per_gpu_gb[name]:.2f}", "per GPU, per process")
    phases = ", ".join(f"{name} {value:.1f}" for name, value in layout.phases_gb.items())
    terms.add_row(
        "[bold]peak[/bold]", f"{result.learner_total_gb + result.engine_total_gb:.1f}", f"{layout.peak_gb:.1f}", phases
    )
    console.print(terms)
    console.print(("[green]fits[/green] " if result.best else "[red]does not fit[/red] ") + result.summary)
    if result.alternatives:
        table = Table("alternative", "GPUs", "GB needed per GPU (with headroom)", title="alternatives")
        for alt in result.alternatives:
            table.add_row(alt.label, str(alt.gpus), f"{alt.required_gb:.1f}")
        console.print(table)
    others = ", ".join(f"{name} {count if count else '-'}" for name, count in result.other_gpus.items())
    console.print(f"fewest of other GPUs: {others}")
    if result.co_residence:
        co = result.co_residence
        console.print(
            f"co-resident on one GPU: learner {co.learner_gb:.1f} GB + engine {co.engine_gb:.1f} GB = "
            f"{co.total_gb:.1f} GB ({co.required_gb:.1f} with headroom) of {co.capacity_gb:g} GB; "
            f"resources.engine_gpu_fraction {co.engine_gpu_fraction}, learner_gpu_fraction {co.learner_gpu_fraction}"
        )
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)


def show_ray(ray: dict[str, Any]) -> None:
    import yaml

    console.print("[bold]placement groups[/bold]")
    for group in ray["placement_groups"]:
        console.print(f"  {group['name']}: {group['strategy']}, {len(group['bundles'])} x {group['bundles'][0]}")
    console.print("[bold]RunConfig resources[/bold]")
    print(yaml.safe_dump({"resources": ray["resources"]}, sort_keys=False), end="")
    console.print("[bold]RayJob[/bold]")
    print(yaml.safe_dump(ray["rayjob"], sort_keys=False), end="")
