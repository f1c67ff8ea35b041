#!/usr/bin/env bash
# The GPU path on a lent H100/H200 machine, in under 8 minutes: the hf engine and the learner code on a random-weight
# Qwen2.5-7B built on the machine (bench/gpu_check.py says what is measured). That machine's image has torch (CUDA),
# transformers, peft, safetensors and tokenizers, but no vLLM or Ray, and no package registry; this path needs
# neither. It does need pydantic, which the image lacks: carry its wheels in .whl/ (made here with --fetch-wheels,
# on a machine with PyPI) and they are installed to a temp dir before the imports are checked.
#
#   bench/gpu_check.sh --fetch-wheels        # here, once: pydantic and its needs as wheels in .whl/ (~3 MB)
#   bench/gpu_check.sh [--json PATH] [...]   # there, from the repository root, with .whl/ carried along
#   bench/gpu_check.sh --tiny                # anywhere: the same code on the tiny model's shape, on CPU
#
# Nothing here is needed by a test; tests/test_gpu_check.py runs the --tiny path of the Python part.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
LIMIT_S=${GPU_CHECK_LIMIT_S:-460}  # the Python part; the import checks before it take seconds

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  # the versions this checkout's venv runs; wheels for the image's Python (3.12), x86-64 Linux
  PIP=${PIP:-.venv/bin/pip}
  mkdir -p "$WHEELS"
  for name in pydantic pydantic_core annotated_types typing_inspection typing_extensions; do
    version=$("$PIP" show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
    [[ -n "$version" ]] || { echo "$name is not installed in this venv; run make setup first" >&2; exit 2; }
    "$PIP" download -q --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$WHEELS" "$name==$version"
  done
  ls -1 "$WHEELS"
  exit 0
fi

if ! "$PY" -c "import pydantic" 2>/dev/null; then
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "pydantic is not installed: installing the carried wheels from $WHEELS/ into /tmp/fieldkit-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fieldkit-site \
      "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/fieldkit-site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "pydantic is not installed and no wheels are in $WHEELS/: run 'bench/gpu_check.sh --fetch-wheels' on a" \
      "machine with PyPI and carry $WHEELS/ along" >&2
  fi
fi

# What this path imports, and what it can do without: a missing required module stops here, with all of them named.
"$PY" - "$@" <<'EOF'
import importlib
import sys

REQUIRED = ["torch", "transformers", "peft", "safetensors", "tokenizers", "pydantic", "yaml", "numpy", "jinja2"]
OPTIONAL = {
    "rich": "the table prints as plain text",
    "typer": "not needed: no CLI here",
    "httpx": "not needed: no HTTP here",
    "ray": "not needed: no actors here",
    "vllm": "not needed: the hf engine serves",
}
missing = []
for name in REQUIRED + list(OPTIONAL):
    try:
        module = importlib.import_module(name)
        print(f"  {name:<13} {getattr(module, '__version__', '?')}")
    except ImportError as exc:
        if name in OPTIONAL:
            print(f"  {name:<13} absent ({OPTIONAL[name]})")
        else:
            print(f"  {name:<13} MISSING, required: {exc}")
            missing.append(name)
if missing:
    sys.exit(f"cannot run the GPU check without: {', '.join(missing)}")
import torch
if torch.cuda.is_available():
    free, total = torch.cuda.mem_get_info()
    print(f"  device        {torch.cuda.get_device_name()}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
elif "--tiny" not in sys.argv:
    print("  device        none: torch sees no CUDA device (use --tiny for the CPU path)")
EOF

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
status=0
timeout --kill-after=10 "$LIMIT_S" "$PY" -m bench.gpu_check "$@" || status=$?
if [[ $status -eq 124 || $status -eq 137 ]]; then
  echo "the GPU check ran past its ${LIMIT_S} s limit and was stopped" >&2
fi
exit "$status"
