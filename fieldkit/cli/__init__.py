"""The `fieldkit` command: one small module per command group, registered here.

Each command imports what it needs inside its function, so `fieldkit --help` stays fast and importing this package
loads neither torch nor Ray. This package is the one place in fieldkit allowed to import `sandbox` and `services`
(lazily, inside commands).
"""

from __future__ import annotations

import typer

from fieldkit.cli import (
    config,
    dashboard,
    demo,
    doctor,
    eval,
    gym,
    lineage,
    model,
    plan,
    rag,
    sandbox,
    serve,
    sft,
    train,
)

app = typer.Typer(
    help="fieldkit-mesh: agentic RL fine-tuning with LoRA on one GPU box, scaled out on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(config.app, name="config")
app.add_typer(model.app, name="model")
app.add_typer(lineage.app, name="lineage")
app.add_typer(eval.app, name="eval")
app.add_typer(gym.app, name="gym")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(rag.app, name="rag")
app.command("train")(train.train)
app.command("demo")(demo.demo)
app.command("plan")(plan.plan)
app.command("serve")(serve.serve)
app.command("sft")(sft.sft)
app.command("dashboard")(dashboard.dashboard)
app.command("doctor")(doctor.doctor)
