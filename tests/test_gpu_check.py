"""bench/gpu_check.sh, the lent GPU machine's check, run here on its --tiny path (the tiny model's shape, on CPU): the
same script and code end to end, with Ray, vLLM, TRL, typer and rich made unimportable, as on that machine's
image (rich has a plain-text fallback). Nothing here needs a GPU; the GPU figures come from running the script there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ABSENT_ON_THE_IMAGE = ["ray", "vllm", "trl", "typer", "rich"]


@pytest.mark.slow
def test_the_tiny_path_runs_end_to_end_without_ray_or_vllm(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        textwrap.dedent(
            f"""
            import importlib.util
            import sys

            ABSENT = {ABSENT_ON_THE_IMAGE!r}

            class Absent:
                def find_spec(self, name, path=None, target=None):
                    if name.split(".")[0] in ABSENT:
                        raise ModuleNotFoundError(f"No module named {{name!r}} (absent on the GPU image)")
                    return None

            sys.meta_path.insert(0, Absent())
            real_find_spec = importlib.util.find_spec

            def find_spec(name, package=None):  # availability probes (transformers') see the package as absent
                return None if name.split(".")[0] in ABSENT else real_find_spec(name, package)

            importlib.util.find_spec = find_spec
            """
        )
    )
    figures_path = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(blocker)}
    done = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--tiny", "--json", str(figures_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ray           absent" in done.stdout and "rich          absent" in done.stdout
    assert "GPU check:" in done.stdout  # the plain-text table
    figures = json.loads(figures_path.read_text())
    assert figures["params"] == figures["catalogue_params"]  # the built model has exactly the catalogue's shape
    assert figures["probe_passed"] == 1.0  # the engine serves the adapter the learner published
    assert figures["loss_finite"] == 1.0
    assert figures["base_tokens_per_s"] > 0 and figures["lora_tokens_per_s"] > 0
    assert figures["predicted_peak_gb"] > 0 and figures["micro_batch"] >= 1
