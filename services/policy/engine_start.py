"""Why the engine did not start, said once and plainly: predicted before vLLM starts where the failure is certain,
diagnosed from vLLM's own log where it is not.

vLLM reports most start failures as "Engine core initialization failed. See root cause above" or EngineDeadError,
the root cause being in another process's log. In a Ray actor those processes write to the actor's own log files
(its stdout and stderr are files there), so the first exception line written since the start is the cause we name.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

from fieldkit.machine import ALLOW_HINT, Cpu, bf16_lora_allowed, bf16_lora_problem, read_cpu, read_memory

LOG_TAIL_BYTES = 4 << 20  # read at most this much of each log file written since the start
# A Python exception line, after vLLM's "(Worker pid=..) ERROR .. [file.py:12] " prefix: "SafetensorError: ..."
EXCEPTION_LINE = re.compile(r"(?:^|\] )((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception)): (.+)$")
# Lines that only echo the failure we are explaining, never its cause
ECHOES = ("cancelled", "EngineCore encountered an issue", "Engine core initialization failed", "See root cause above")
MEMORY_WORDS = re.compile(r"out of memory|cannot allocate memory|MemoryError|not enough (?:memory|KV cache)", re.I)
WORKER_DIED = re.compile(r"died unexpectedly \(exit code: (-?\d+|None)\)")  # vLLM's executor, when a worker dies
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")  # what vLLM's default loader looks for


class EngineStartError(RuntimeError):
    """The engine did not start; the message names the cause and the fix. Not retried: starting again fails again."""


def check_model_dir(model_dir: str) -> None:
    """Raise EngineStartError when `model_dir` cannot be a model vLLM loads: no such directory (and not a hub name
    in the cache), no config.json, one that does not parse, or no weight files."""
    path = Path(model_dir)
    if path.exists() and not path.is_dir():
        raise EngineStartError(f"model {model_dir} is a file: set model.name_or_path to a model directory")
    if not path.exists():
        cached = _hub_snapshot(model_dir)
        if cached is None:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            if _hub_name(model_dir) and not offline:
                return  # a hub name vLLM may download
            cache = " and is not in the Hugging Face cache (HF_HUB_OFFLINE=1: runs download nothing)" if offline else ""
            raise EngineStartError(
                f"model {model_dir} does not exist{cache}: set model.name_or_path to a model directory (config.json "
                "and weights)"
            )
        path = cached
    config = path / "config.json"
    try:
        text = config.read_text()
    except FileNotFoundError:
        raise EngineStartError(
            f"model dir {path} has no config.json, so it is not a Hugging Face model directory (save_pretrained writes "
            "one): set model.name_or_path to a directory holding config.json and the weights"
        ) from None
    except OSError as exc:
        why = f"cannot read config.json ({exc.strerror}): fix its permissions"
        raise EngineStartError(f"model dir {path}: {why}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EngineStartError(
            f"model dir {path}: config.json is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): "
            "restore it from where the model came from, or rebuild the model"
        ) from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise EngineStartError(f"model dir {path}: config.json has no model_type: not a transformers model config")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise EngineStartError(
            f"model dir {path} holds no weights ({', '.join(WEIGHT_PATTERNS)}): copy them in, or rebuild the model"
        )


def check_cpu_dtype(dtype: str) -> None:
    """Refuse what would kill the CPU engine's worker at its first generate (bfloat16 + LoRA on an AMX CPU)."""
    problem = bf16_lora_problem(dtype, read_cpu())
    if problem is not None and not bf16_lora_allowed():
        raise EngineStartError(f"the vLLM engine was not started: {problem}; {ALLOW_HINT}")


class StartLog:
    """This process's stdout and stderr files from now on (a Ray actor's log files, which vLLM's engine and worker
    processes inherit); empty when they are a terminal or a pipe."""

    def __init__(self) -> None:
        self._files: list[tuple[Path, int]] = []
        for fd in (1, 2):
            try:
                path = Path(os.readlink(f"/proc/self/fd/{fd}"))
                if path.is_file() and path not in self.paths:  # a captured actor has both on one file
                    self._files.append((path, path.stat().st_size))
            except OSError:
                continue

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self._files]

    def text(self) -> str:
        parts = []
        for path, offset in self._files:
            try:
                with path.open("rb") as handle:
                    handle.seek(max(offset, path.stat().st_size - LOG_TAIL_BYTES))
                    parts.append(handle.read().decode(errors="replace"))
            except OSError:
                continue
        return "\n".join(parts)

    def root_cause(self) -> str | None:
        """The first exception a process wrote since the start that is not an echo of the failure itself."""
        for line in self.text().splitlines():
            found = EXCEPTION_LINE.search(line.strip())
            if found and not any(echo in found.group(2) for echo in ECHOES):
                return f"{found.group(1)}: {_short(found.group(2))}"
        return None

    def worker_death(self) -> str | None:
        """How a vLLM worker died, as vLLM's executor logged it: "SIGILL", "exit code 1", "" (it did not say), or
        None when no worker died."""
        found = WORKER_DIED.search(self.text())
        if found is None:
            return None
        code = found.group(1)
        if code.startswith("-") and code[1:].isdigit():
            return _signal_name(int(code[1:]))
        return f"exit code {code}" if code.isdigit() else ""


def start_failure(exc: Exception, *, model_dir: str, dtype: str, on_gpu: bool, log: StartLog) -> EngineStartError:
    """The one error for an engine that raised `exc` while starting or at its warm-up generate."""
    cpu = read_cpu()
    where = "GPU" if on_gpu else f"CPU {cpu.model} {'/'.join(cpu.isa)}"
    head = f"the vLLM engine did not start (model {model_dir}, dtype {dtype}, LoRA on, {where})"
    said = f"{type(exc).__name__}: {_short(str(exc))}"
    cause = log.root_cause()
    death = log.worker_death()
    if cause is not None:
        message = f"{head}: {cause} (vLLM raised {said})"
    elif death is not None or type(exc).__name__ == "EngineDeadError":
        how = "died without a Python error, so a signal killed it"
        if death:
            how = f"was killed by {death}" if death.startswith(("SIG", "signal")) else f"ended with {death}"
        message = f"{head}: a vLLM worker process {how} ({said}). {_signal_hint(death, dtype, on_gpu, cpu)}"
    else:
        message = f"{head}: {said}"
    if MEMORY_WORDS.search(f"{cause} {said}"):
        message += f". {_memory_hint(on_gpu)}"
    if log.paths:
        message += f" (vLLM's log: {', '.join(map(str, log.paths))})"
    return EngineStartError(message)


def _signal_hint(death: str | None, dtype: str, on_gpu: bool, cpu: Cpu) -> str:
    problem = None if on_gpu else bf16_lora_problem(dtype, cpu)
    if death in (None, "", "SIGILL") and problem is not None:
        return f"That is the known crash: {problem}"
    if death == "SIGILL":
        return "SIGILL: the vLLM build uses an instruction this CPU lacks; install the build made for this CPU"
    if death == "SIGKILL":
        return f"SIGKILL is what the kernel's OOM killer sends (`dmesg` says): {_memory_hint(on_gpu)}"
    if death and death.startswith("exit code"):
        return "Its own log says why"
    return f"If the kernel's OOM killer sent it (`dmesg` says): {_memory_hint(on_gpu)}"


def _memory_hint(on_gpu: bool) -> str:
    if on_gpu:
        return "raise resources.engine_gpu_fraction, or lower model.max_model_len or lora.max_loras"
    _, available = read_memory()
    now = f"{available / 2**30:.1f} GiB available now" if available is not None else "available memory unknown"
    space = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "unset (vLLM takes 4+ GiB)")
    return (
        f"memory: lower VLLM_CPU_KVCACHE_SPACE (GiB of KV cache, now {space}) or model.max_model_len, "
        f"or free memory ({now})"
    )


def _hub_name(name: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+|[\w.-]+", name)) and not name.startswith(".")


def _hub_snapshot(name: str) -> Path | None:
    """The cached snapshot directory of hub model `name`, or None."""
    if not _hub_name(name):
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."
