"""devops-engineer: a monorepo's Dockerfiles, GitHub Actions workflows, compose file and deploy scripts."""

from __future__ import annotations

import random
from dataclasses import dataclass

from fieldkit.gym.templates import families as f
from fieldkit.gym.templates.base import Draft, Workspace, pick

ROLE = "devops-engineer"

SERVICES = ["api", "worker", "web", "scheduler", "gateway", "billing"]
PYTHONS = ["3.9", "3.10", "3.11"]
WORKFLOWS = {
    "CI.yaml": "ci.yml",
    "Deploy-Prod.yaml": "deploy-prod.yml",
    "lint_check.yml": "lint.yml",
    "Nightly-Build.yaml": "nightly.yml",
    "release_TAG.yml": "release.yml",
}


@dataclass
class World:
    ws: Workspace
    services: list[str]
    dockerfiles: list[str]  # services/<svc>/Dockerfile
    stray_dockerfiles: list[str]  # Dockerfile.<svc> at the top level
    python: str
    workflows: list[str]  # .github/workflows/<odd name>
    workflow_names: list[str]  # their normalised names
    old_workflows: list[str]
    deploy_log: str


def _dockerfile(python: str, svc: str) -> str:
    return (
        f"FROM python:{python}-slim\nWORKDIR /srv/{svc}\nCOPY requirements.txt .\n"
        f"RUN pip install --no-cache-dir -r requirements.txt\nCOPY . .\nUSER 1000\n"
        f'CMD ["python", "-m", "{svc}"]\n'
    )


def _workflow(name: str, runner: str, rng: random.Random) -> str:
    return (
        f"name: {name}\non:\n  push:\n    branches: [main]\njobs:\n  build:\n    runs-on: {runner}\n"
        f"    steps:\n      - uses: actions/checkout@v{rng.choice([3, 4])}\n      - run: make {name.lower()}\n"
    )


def build(rng: random.Random) -> World:
    ws = Workspace()
    python = rng.choice(PYTHONS)
    services = pick(rng, SERVICES, rng.randint(3, 4))
    dockerfiles = [ws.text(f"services/{s}/Dockerfile", _dockerfile(python, s)) for s in services[:-1]]
    for s in services:
        ws.text(f"services/{s}/requirements.txt", f"requests==2.32.3\n{s}-client==1.{rng.randint(0, 9)}.0\n")
    stray = [ws.text(f"Dockerfile.{services[-1]}", _dockerfile(python, services[-1]))]
    stray.append(ws.text("Dockerfile.old", _dockerfile("3.8", "legacy")))
    odd = pick(rng, list(WORKFLOWS), 3)
    runners = ["ubuntu-latest"] + [rng.choice(["ubuntu-22.04", "ubuntu-latest"]) for _ in odd[1:]]
    workflows = [
        ws.text(f".github/workflows/{w}", _workflow(WORKFLOWS[w].split(".")[0], runner, rng))
        for w, runner in zip(odd, runners, strict=True)
    ]
    old_workflows = [
        ws.text(f".github/workflows/{n}", _workflow(n.split(".")[0], "ubuntu-20.04", rng))
        for n in pick(rng, ["old-ci.yml", "tmp-test.yml", "backup-deploy.yml", "experimental.yml", "copy-of-ci.yml"], 2)
    ]
    compose = ["services:"] + [f"  {s}:\n    build: ./services/{s}\n    restart: always" for s in services]
    ws.text("docker-compose.yml", "\n".join(compose) + "\n")
    log = []
    for i in range(rng.randint(10, 16)):
        svc = rng.choice(services)
        status = rng.choice(["OK", "OK", "OK", "FAILED", "ROLLED_BACK"])
        log.append(f"2024-06-{i + 1:02d}T12:{rng.randint(0, 59):02d} deploy {svc} {status}")
    log[rng.randrange(len(log))] = f"2024-06-30T23:59 deploy {services[0]} FAILED"
    deploy_log = ws.text("logs/deploy.log", "\n".join(log) + "\n")
    ws.text(
        "scripts/deploy.sh", f"#!/bin/sh\nset -eu\nfor svc in {' '.join(services)}; do\n  echo deploying $svc\ndone\n"
    )
    ws.text("Makefile", "build:\n\tdocker compose build\n\nup:\n\tdocker compose up -d\n")
    ws.text("README.md", "# Platform monorepo\n\nCI lives in .github/workflows.\n")
    names = [WORKFLOWS[w] for w in odd]
    return World(ws, services, dockerfiles, stray, python, workflows, names, old_workflows, deploy_log)


def normalise_workflow_name(w: World, rng: random.Random) -> Draft:
    i = rng.randrange(len(w.workflows))
    return f.rename(w.ws, w.workflows[i], f".github/workflows/{w.workflow_names[i]}", " (lower-case, .yml)")


def bump_base_image(w: World, rng: random.Random) -> Draft:
    dockerfile = rng.choice(w.dockerfiles)
    return f.edit(w.ws, dockerfile, f"FROM python:{w.python}-slim", "FROM python:3.12-slim", " (security patch)")


def drop_old_workflows(w: World, rng: random.Random) -> Draft:
    keep = rng.choice(w.workflows)
    return f.delete(w.ws, w.old_workflows, keep, " (they no longer run)")


def failed_deploys(w: World, rng: random.Random) -> Draft:
    choice = rng.randrange(3)
    out = rng.choice(["reports", "postmortem", "ops-review"])
    if choice == 0:
        return f.grep_lines(w.ws, "FAILED", [w.deploy_log], f"{out}/failed_deploys.txt", " for the postmortem")
    if choice == 1:
        return f.count_matches(w.ws, "FAILED", w.deploy_log, f"{out}/failed_count.txt")
    return f.grep_files(w.ws, "runs-on: ubuntu-latest", ".github/workflows", f"{out}/unpinned_runners.txt")


def home_for_dockerfile(w: World, rng: random.Random) -> Draft:
    svc = w.services[-1]
    if rng.random() < 0.5:
        return f.rename(w.ws, f"Dockerfile.{svc}", f"services/{svc}/Dockerfile", " next to its service")
    return f.find_list(w.ws, "Dockerfile", "reports/dockerfiles.txt", " for the image audit")


def consolidate_dockerfiles(w: World, rng: random.Random) -> Draft:
    svc = w.services[-1]
    return f.composite(
        "Consolidate the Dockerfiles:",
        [
            f.rename(w.ws, f"Dockerfile.{svc}", f"services/{svc}/Dockerfile"),
            f.delete(w.ws, ["Dockerfile.old"], "docker-compose.yml"),
            f.edit(w.ws, w.dockerfiles[0], f"FROM python:{w.python}-slim", "FROM python:3.12-slim"),
            f.write(w.ws, "docker/README.md", ["# Images", "One Dockerfile per service, in services/<name>/"]),
        ],
    )


def tidy_workflows(w: World, rng: random.Random) -> Draft:
    i, j = pick(rng, range(len(w.workflows)), 2)
    return f.composite(
        "Tidy the GitHub Actions workflows:",
        [
            f.rename(w.ws, w.workflows[i], f".github/workflows/{w.workflow_names[i]}"),
            f.rename(w.ws, w.workflows[j], f".github/workflows/{w.workflow_names[j]}"),
            f.delete(w.ws, w.old_workflows, "Makefile"),
            f.append(w.ws, "README.md", "Workflow files use lower-case names ending in .yml."),
        ],
    )


def incident_prep(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "Collect the material for the deploy incident review:",
        [
            f.grep_lines(w.ws, "FAILED", [w.deploy_log], "incident/failed.txt"),
            f.extract(w.ws, w.deploy_log, 5, "incident/last_deploys.txt", "tail"),
            f.copy(w.ws, "docker-compose.yml", "incident/docker-compose.yml"),
            f.write(w.ws, "incident/README.md", ["# Deploy incident", f"services: {', '.join(w.services)}"]),
        ],
    )


def monorepo_layout(w: World, rng: random.Random) -> Draft:
    svc = w.services[-1]
    return f.composite(
        "Move the repo to the new layout:",
        [
            f.rename(w.ws, f"Dockerfile.{svc}", f"services/{svc}/Dockerfile"),
            f.file_away(w.ws, ["Dockerfile.old"], "archive/docker"),
            f.rename(w.ws, "scripts/deploy.sh", "ops/deploy.sh"),
            f.delete(w.ws, w.old_workflows, "Makefile"),
            f.rename(w.ws, w.deploy_log, "ops/logs/deploy.log"),
            f.make_dirs(w.ws, ["ops/terraform", "ops/k8s"]),
        ],
    )


def ci_overhaul(w: World, rng: random.Random) -> Draft:
    parts = [f.rename(w.ws, src, f"ci/{dst}") for src, dst in zip(w.workflows, w.workflow_names, strict=True)]
    return f.composite(
        "Stage a CI overhaul in a separate folder:",
        [
            *parts,
            f.delete(w.ws, w.old_workflows, "docker-compose.yml"),
            f.edit(w.ws, w.dockerfiles[-1], f"FROM python:{w.python}-slim", "FROM python:3.12-slim"),
            f.write(w.ws, "ci/docs/README.md", ["# CI", "Workflows move back to .github/workflows after review"]),
        ],
    )


RECIPES = (
    normalise_workflow_name,
    bump_base_image,
    drop_old_workflows,
    failed_deploys,
    home_for_dockerfile,
    consolidate_dockerfiles,
    tidy_workflows,
    incident_prep,
    monorepo_layout,
    ci_overhaul,
)
