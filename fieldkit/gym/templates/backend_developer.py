"""backend-developer: a flat Python service being refactored into packages, with tests and bytecode litter."""

from __future__ import annotations

import random
from dataclasses import dataclass

from fieldkit.gym.templates import families as f
from fieldkit.gym.templates.base import Draft, Workspace, pick

ROLE = "backend-developer"

SERVICES = ["billing", "inventory", "notifications", "ledger", "shipping", "accounts"]
RESOURCES = ["users", "orders", "invoices", "products", "payments", "webhooks"]
HELPERS = ["utils", "helpers", "common", "misc"]


@dataclass
class World:
    ws: Workspace
    service: str
    routes: list[str]  # app/routes_<resource>.py, to move into app/routes/
    resources: list[str]
    helper: str  # app/<utils>.py
    main: str
    pycache: list[str]
    tests: list[str]


def _route(resource: str, helper: str, rng: random.Random) -> str:
    singular = resource.rstrip("s")
    lines = [
        "from fastapi import APIRouter",
        f"from app.{helper} import paginate",
        "from app.db import get_session",
        "",
        f'router = APIRouter(prefix="/{resource}")',
        "",
        "",
        '@router.get("/")',
        f"def list_{resource}(page: int = 1):",
        f"    return paginate(get_session().query_{resource}(), page)",
        "",
        "",
        f'@router.get("/{{{singular}_id}}")',
        f"def get_{singular}({singular}_id: int):",
        f"    return get_session().get_{singular}({singular}_id)",
    ]
    if rng.random() < 0.5:
        lines += ["", "", f"# TODO: rate-limit {resource} listing"]
    return "\n".join(lines) + "\n"


def build(rng: random.Random) -> World:
    ws = Workspace()
    service = rng.choice(SERVICES)
    helper = rng.choice(HELPERS)
    resources = pick(rng, RESOURCES, rng.randint(2, 4))
    routes = [ws.text(f"app/routes_{r}.py", _route(r, helper, rng)) for r in resources]
    imports = [f"from app.routes_{r} import router as {r}_router" for r in resources]
    mounts = [f"app.include_router({r}_router)" for r in resources]
    main = ws.text(
        "app/main.py",
        "\n".join(["from fastapi import FastAPI", "", *imports, "", f'app = FastAPI(title="{service}")', *mounts])
        + "\n",
    )
    ws.text(
        f"app/{helper}.py", "def paginate(items, page, size=50):\n    return items[(page - 1) * size : page * size]\n"
    )
    ws.text("app/db.py", f'DATABASE_URL = "postgresql://localhost/{service}"\n\n\ndef get_session():\n    ...\n')
    ws.text("app/settings.py", f'SERVICE_NAME = "{service}"\nDEBUG = True\nLOG_LEVEL = "debug"\n')
    tests = [
        ws.text(
            f"tests/test_{r}.py",
            f'from app.routes_{r} import router\n\n\ndef test_prefix():\n    assert router.prefix == "/{r}"\n',
        )
        for r in resources
    ]
    pycache = [ws.stub(f"app/__pycache__/{m}.cpython-311.pyc", rng.randint(800, 3000)) for m in ("main", helper)]
    pycache.append(ws.stub(f"tests/__pycache__/test_{resources[0]}.cpython-311.pyc", 1200))
    ws.text("requirements.txt", f"fastapi=={rng.choice(['0.110.0', '0.111.1', '0.112.2'])}\nuvicorn==0.30.1\n")
    ws.text(".env.example", f"DATABASE_URL=postgresql://localhost/{service}\nSECRET_KEY=change-me\n")
    ws.text("README.md", f"# {service} service\n\nRun: `uvicorn app.main:app --reload`\n")
    return World(ws, service, routes, resources, f"app/{helper}.py", main, pycache, tests)


def make_package(w: World, rng: random.Random) -> Draft:
    path = rng.choice(["app/__init__.py", "tests/__init__.py", "app/routes/__init__.py", "tests/api/__init__.py"])
    return f.touch(w.ws, [path], " so the directory is a regular package")


def move_route(w: World, rng: random.Random) -> Draft:
    i = rng.randrange(len(w.routes))
    return f.rename(w.ws, w.routes[i], f"app/routes/{w.resources[i]}.py", " (routes get their own package)")


def update_import(w: World, rng: random.Random) -> Draft:
    r = rng.choice(w.resources)
    return f.edit(w.ws, w.main, f"from app.routes_{r} import", f"from app.routes.{r} import", " after the move")


def find_usages(w: World, rng: random.Random) -> Draft:
    choice = rng.randrange(3)
    if choice == 0:
        return f.grep_files(w.ws, f"from app.{w.helper.split('/')[-1][:-3]} import", "app", "refactor/helper_users.txt")
    if choice == 1:
        return f.count_matches(w.ws, "def ", rng.choice(w.routes), "refactor/endpoint_count.txt")
    return f.grep_lines(w.ws, "include_router", [w.main], "refactor/mounted.txt")


def clear_bytecode(w: World, rng: random.Random) -> Draft:
    if rng.random() < 0.5:
        return f.delete_tree(w.ws, "app/__pycache__", rng.choice([w.main, "app/db.py", w.helper]), " (stale bytecode)")
    if rng.random() < 0.5:
        return f.edit(w.ws, "app/settings.py", "DEBUG = True", "DEBUG = False", " before the deploy")
    return f.edit(w.ws, "app/settings.py", 'LOG_LEVEL = "debug"', 'LOG_LEVEL = "info"', " for production")


def routes_package(w: World, rng: random.Random) -> Draft:
    moves = [f.rename(w.ws, src, f"app/routes/{r}.py") for src, r in zip(w.routes[:2], w.resources, strict=False)]
    return f.composite(
        "Start the routes package:",
        [*moves, f.touch(w.ws, ["app/routes/__init__.py"]), f.delete_tree(w.ws, "app/__pycache__", "app/db.py")],
    )


def rename_helper(w: World, rng: random.Random) -> Draft:
    module = w.helper.split("/")[-1][:-3]
    return f.composite(
        f"Rename the `{w.helper}` module to `app/pagination.py` and fix what depends on it:",
        [
            f.rename(w.ws, w.helper, "app/pagination.py"),
            f.edit(w.ws, w.routes[0], f"from app.{module} import", "from app.pagination import"),
            f.count_matches(w.ws, "def ", w.routes[-1], "refactor/endpoints.txt"),
            f.append(w.ws, "README.md", "- helpers live in app/pagination.py"),
        ],
    )


def harden_settings(w: World, rng: random.Random) -> Draft:
    base = rng.choice(["settings_dev", "settings_local", "settings_base"])
    secret = rng.choice(["set-in-vault", "from-secrets-manager", "injected-at-deploy"])
    level = rng.choice(["info", "warning", "error"])
    return f.composite(
        "Harden the settings for production:",
        [
            f.copy(w.ws, "app/settings.py", f"app/{base}.py"),
            f.edit(w.ws, ".env.example", "SECRET_KEY=change-me", f"SECRET_KEY={secret}"),
            f.write(
                w.ws, "app/settings_prod.py", [f"from app.{base} import *", "DEBUG = False", f'LOG_LEVEL = "{level}"']
            ),
            f.delete_tree(w.ws, "tests/__pycache__", "README.md"),
        ],
    )


def full_refactor(w: World, rng: random.Random) -> Draft:
    moves = [f.rename(w.ws, src, f"app/routes/{r}.py") for src, r in zip(w.routes, w.resources, strict=True)]
    parts = [
        *moves[:3],
        f.touch(w.ws, ["app/__init__.py", "app/routes/__init__.py"]),
        f.delete_tree(w.ws, "app/__pycache__", "app/db.py"),
        f.file_away(w.ws, w.tests, "tests/api"),
    ]
    if len(moves) < 3:
        r = w.resources[0]
        parts.append(f.edit(w.ws, w.main, f"from app.routes_{r} import", f"from app.routes.{r} import"))
    return f.composite("Refactor the service into packages:", parts)


def split_service(w: World, rng: random.Random) -> Draft:
    r = rng.choice(w.resources)
    route = f"app/routes_{r}.py"
    return f.composite(
        f"Split the {r} routes into their own package:",
        [
            f.rename(w.ws, route, f"app/{r}/routes.py"),
            f.touch(w.ws, [f"app/{r}/__init__.py"]),
            f.rename(w.ws, f"tests/test_{r}.py", f"tests/{r}/test_routes.py"),
            f.edit(w.ws, w.main, f"from app.routes_{r} import", f"from app.{r}.routes import"),
            f.delete_tree(w.ws, "app/__pycache__", "app/db.py"),
            f.write(w.ws, f"app/{r}/README.md", [f"# {r}", f"Endpoints under /{r}"]),
        ],
    )


RECIPES = (
    make_package,
    move_route,
    update_import,
    find_usages,
    clear_bytecode,
    routes_package,
    rename_helper,
    harden_settings,
    full_refactor,
    split_service,
)
