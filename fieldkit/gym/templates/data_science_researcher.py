"""data-science-researcher: notebooks, raw/interim/processed CSVs, a pile of checkpoints after a paper sprint."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from fieldkit.gym.templates import families as f
from fieldkit.gym.templates.base import Draft, Workspace, pick

ROLE = "data-science-researcher"

STUDIES = {
    "churn": ["customer_id", "tenure_months", "monthly_fee", "churned"],
    "air_quality": ["station", "pm25", "no2", "humidity"],
    "sleep": ["participant", "hours", "caffeine_mg", "score"],
    "retail": ["store", "week", "units", "promo"],
}
MODELS = ["xgboost", "logreg", "mlp", "random_forest", "lightgbm"]
STAGES = ["01_eda", "02_cleaning", "03_features", "04_model", "05_figures"]


@dataclass
class World:
    ws: Workspace
    study: str
    raw: str
    train_csv: str
    interim: list[str]
    epochs: list[str]
    epochs_glob: str
    best: str
    notebooks: list[str]
    junk_notebooks: list[str]
    junk_glob: str
    figures: list[str]
    metrics: str
    log: str


def _notebook(title: str, code: list[str]) -> str:
    cells = [{"cell_type": "markdown", "source": [f"# {title}"]}]
    cells += [{"cell_type": "code", "source": [line]} for line in code]
    return json.dumps({"cells": cells, "nbformat": 4, "nbformat_minor": 5}, indent=1) + "\n"


def _csv(rng: random.Random, header: list[str], rows: int) -> str:
    lines = [",".join(header)]
    for i in range(rows):
        lines.append(",".join([f"{header[0][:2]}{1000 + i}", *(str(rng.randint(0, 99)) for _ in header[1:])]))
    return "\n".join(lines) + "\n"


def build(rng: random.Random) -> World:
    ws = Workspace()
    study = rng.choice(sorted(STUDIES))
    header = STUDIES[study]
    raw = ws.text(f"data/raw/{study}_2023.csv", _csv(rng, header, rng.randint(18, 40)))
    interim = [ws.text(f"data/interim/{study}_{tag}.csv", _csv(rng, header, 6)) for tag in ("clean_v1", "clean_v2")]
    interim.append(ws.text("data/interim/merged_tmp.csv", _csv(rng, header, 5)))
    train_csv = ws.text("data/processed/train.csv", _csv(rng, header, rng.randint(12, 30)))
    ws.text("data/processed/test.csv", _csv(rng, header, rng.randint(5, 10)))
    stages = sorted({*pick(rng, STAGES, rng.randint(2, 4)), "04_model"})
    model = rng.choice(MODELS)
    notebooks = []
    for stage in stages:
        code = ["import pandas as pd", f"df = pd.read_csv('../{raw}')"]
        if "model" in stage:
            code += ["import torch", f"model = build_{model}()"]
        if "figures" in stage or "eda" in stage:
            code.append("import matplotlib.pyplot as plt")
        notebooks.append(ws.text(f"notebooks/{stage}.ipynb", _notebook(stage[3:].title(), code)))
    junk_prefix = rng.choice(["Untitled", "scratch", "tmp", "test"])
    junk_notebooks = [
        ws.text(f"notebooks/{junk_prefix}{n}.ipynb", _notebook("scratch", [f"df.head({n or 5})"]))
        for n in ("", "1", "2")[: rng.randint(2, 3)]
    ]
    ws.text("notebooks/.ipynb_checkpoints/01_eda-checkpoint.ipynb", _notebook("Eda", ["import pandas as pd"]))
    n_epochs = rng.randint(4, 8)
    name, glob, every = rng.choice([("epoch_{:02d}.pt", "epoch_*.pt", 1), ("step_{:05d}.ckpt", "step_*.ckpt", 500)])
    epochs = [ws.stub("checkpoints/" + name.format(e * every), 48_000 + e) for e in range(1, n_epochs + 1)]
    best = ws.stub(f"checkpoints/best_{model}.pt", 48_000)
    figures = [
        ws.stub(f"figures/fig{i}_{name}.png", rng.randint(9000, 30000))
        for i, name in enumerate(pick(rng, ["roc", "calibration", "ablation", "shap", "learning_curve"], 3), 1)
    ]
    rows = ["run,model,seed,auc,f1"]
    for run in range(1, rng.randint(5, 9)):
        rows.append(
            f"r{run:02d},{rng.choice(MODELS)},{rng.randint(0, 4)},0.{rng.randint(600, 949)},0.{rng.randint(500, 899)}"
        )
    metrics = ws.text("results/metrics.csv", "\n".join(rows) + "\n")
    log = []
    for epoch in range(1, n_epochs + 1):
        log.append(f"epoch {epoch} train_loss {rng.uniform(0.2, 0.9):.3f} val_loss {rng.uniform(0.3, 1.0):.3f}")
        if rng.random() < 0.4 or epoch == 2:
            log.append(f"WARNING epoch {epoch}: learning rate reduced to {rng.choice(['1e-4', '5e-5', '1e-5'])}")
    log.append(f"saved best checkpoint to checkpoints/best_{model}.pt")
    log_path = ws.text("logs/train.log", "\n".join(log) + "\n")
    ws.text("README.md", f"# {study.replace('_', ' ').title()} study\n\nStatus: submitted\nModel: {model}\n")
    ws.text("requirements.txt", "pandas==2.2.2\nscikit-learn==1.5.0\nmatplotlib==3.9.0\n")
    return World(
        ws,
        study,
        raw,
        train_csv,
        interim,
        epochs,
        "checkpoints/" + glob,
        best,
        notebooks,
        junk_notebooks,
        f"notebooks/{junk_prefix}*.ipynb",
        figures,
        metrics,
        log_path,
    )


def drop_scratch_notebooks(w: World, rng: random.Random) -> Draft:
    return f.delete(w.ws, w.junk_notebooks, rng.choice(w.notebooks), " (scratch notebooks)", pattern=w.junk_glob)


def prune_checkpoints(w: World, rng: random.Random) -> Draft:
    return f.delete(w.ws, w.epochs, w.best, " (intermediate checkpoints)", pattern=w.epochs_glob)


def count_rows(w: World, rng: random.Random) -> Draft:
    source = rng.choice([w.train_csv, w.raw])
    return f.count_lines(w.ws, source, "results/row_count.txt", " (header included) for the data statement")


def archive_interim(w: World, rng: random.Random) -> Draft:
    if rng.random() < 0.5:
        return f.file_away(w.ws, w.interim[:2], "data/archive", " so only the final data stays in interim")
    return f.rename(w.ws, w.notebooks[-1], w.notebooks[-1].replace("notebooks/", "notebooks/final_"))


def inspect_results(w: World, rng: random.Random) -> Draft:
    choice = rng.randrange(3)
    if choice == 0:
        return f.extract(w.ws, w.raw, 6, "data/sample.csv", "head", " as a sample for the appendix")
    if choice == 1:
        return f.grep_lines(w.ws, "WARNING", [w.log], "results/warnings.txt")
    return f.grep_files(w.ws, "import torch", "notebooks", "results/torch_notebooks.txt")


def post_submission_cleanup(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "The paper is submitted; prune the project:",
        [
            f.delete(w.ws, w.epochs, w.best, pattern=w.epochs_glob),
            f.delete_tree(w.ws, "notebooks/.ipynb_checkpoints", w.notebooks[0]),
            f.file_away(w.ws, w.interim, "data/archive"),
        ],
    )


def release_results(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "Prepare the results for the camera-ready version:",
        [
            f.copy(w.ws, w.metrics, "paper/tables/metrics.csv"),
            f.edit(w.ws, "README.md", "Status: submitted", "Status: accepted"),
            f.count_lines(w.ws, w.train_csv, "paper/tables/train_rows.txt"),
            f.delete(w.ws, w.junk_notebooks, w.notebooks[0], pattern=w.junk_glob),
        ],
    )


def summarise_training(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "Summarise the training run for my co-authors:",
        [
            f.extract(w.ws, w.log, 3, "summary/last_epochs.txt", "tail"),
            f.count_matches(w.ws, "WARNING", w.log, "summary/warning_count.txt"),
            f.find_list(w.ws, ".png", "summary/figures.txt"),
            f.write(w.ws, "summary/README.md", ["# Training summary", f"study: {w.study}"]),
        ],
    )


def reorganise_for_submission(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "Reorganise the project the way the journal's artifact review wants it:",
        [
            f.file_away(w.ws, w.figures, "paper/figures"),
            f.file_away(w.ws, w.interim, "data/archive"),
            f.delete(w.ws, w.epochs, w.best, pattern=w.epochs_glob),
            f.delete(w.ws, w.junk_notebooks, w.notebooks[0], pattern=w.junk_glob),
            f.rename(w.ws, w.metrics, "paper/tables/metrics.csv"),
            f.make_dirs(w.ws, ["artifact/code", "artifact/data"]),
        ],
    )


def package_artifact(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "Package the reproducibility artifact:",
        [
            f.copy(w.ws, w.train_csv, "artifact/data/train.csv"),
            f.copy(w.ws, "requirements.txt", "artifact/requirements.txt"),
            f.rename(w.ws, w.best, f"artifact/models/{w.best.split('/')[-1]}"),
            f.delete_tree(w.ws, "notebooks/.ipynb_checkpoints", w.notebooks[0]),
            f.extract(w.ws, w.raw, 6, "artifact/data/raw_sample.csv", "head"),
            f.write(w.ws, "artifact/README.md", ["# Artifact", f"Study: {w.study}", "Run: see results/metrics.csv"]),
        ],
    )


RECIPES = (
    drop_scratch_notebooks,
    prune_checkpoints,
    count_rows,
    archive_interim,
    inspect_results,
    post_submission_cleanup,
    release_results,
    summarise_training,
    reorganise_for_submission,
    package_artifact,
)
