"""academic-author: a LaTeX paper with section sources, bib files, figures and the build artifacts to strip."""

from __future__ import annotations

import random
from dataclasses import dataclass

from fieldkit.gym.templates import families as f
from fieldkit.gym.templates.base import Draft, Workspace, pick

ROLE = "academic-author"

VENUES = ["neurips", "icml", "acl", "chi", "sigmod", "osdi"]
TOPICS = ["sparse attention", "federated learning", "program repair", "graph sampling", "query optimisation"]
SECTIONS = ["introduction", "related", "method", "experiments", "discussion", "conclusion"]
SURNAMES = ["vaswani", "lecun", "hinton", "bengio", "liskov", "lamport", "knuth", "hopper", "ng", "li"]
ARTIFACTS = ["aux", "log", "out", "bbl", "blg", "toc", "fls", "fdb_latexmk", "synctex.gz"]


@dataclass
class World:
    ws: Workspace
    venue: str
    sections: list[str]  # sections/<name>.tex
    artifacts: list[str]  # main.<ext> build outputs
    figures: list[str]  # figures/*.pdf
    stray_figures: list[str]  # plots dropped at the top level
    bib: str
    old_bib: str
    cited: list[str]  # bib keys


def _bib_entry(key: str, rng: random.Random) -> str:
    return (
        f"@inproceedings{{{key},\n  title = {{On {rng.choice(TOPICS).title()}}},\n"
        f"  author = {{{key[:-4].title()}, A.}},\n  year = {{{key[-4:]}}}\n}}\n"
    )


def build(rng: random.Random) -> World:
    ws = Workspace()
    venue = rng.choice(VENUES)
    keys = [f"{name}{rng.randint(1995, 2024)}" for name in pick(rng, SURNAMES, rng.randint(4, 7))]
    bib = ws.text("refs.bib", "\n".join(_bib_entry(k, rng) for k in keys))
    old_bib = ws.text("refs_old.bib", _bib_entry(keys[0], rng))
    names = [s for s in SECTIONS if s in ("introduction", "method", "experiments") or rng.random() < 0.5]
    sections = []
    for name in names:
        cites = ",".join(rng.sample(keys, 2))
        body = [f"\\section{{{name.title()}}}", f"\\label{{sec:{name}}}", f"We build on prior work~\\cite{{{cites}}}."]
        if rng.random() < 0.5 or name == "experiments":
            body.append(f"% TODO: tighten the {name} before the deadline")
        sections.append(ws.text(f"sections/{name}.tex", "\n".join(body) + "\n"))
    inputs = "\n".join(f"\\input{{sections/{n}}}" for n in names)
    ws.text(
        "main.tex",
        f"\\documentclass[review]{{{venue}}}\n\\usepackage{{graphicx}}\n\\title{{{rng.choice(TOPICS).title()}}}\n"
        f"\\begin{{document}}\n\\maketitle\n{inputs}\n\\bibliography{{refs}}\n\\end{{document}}\n",
    )
    figures = [
        ws.stub(f"figures/{n}.pdf", rng.randint(20_000, 200_000))
        for n in pick(rng, ["overview", "architecture", "ablation", "scaling", "latency", "qualitative"], 3)
    ]
    stray_figures = [
        ws.stub(f"plot_{n}.png", rng.randint(30_000, 90_000)) for n in pick(rng, ["loss", "acc", "hist", "roc"], 2)
    ]
    artifacts = [ws.stub(f"main.{ext}", rng.randint(200, 9000)) for ext in pick(rng, ARTIFACTS, rng.randint(3, 5))]
    ws.stub("main.pdf", 480_000)
    ws.text("notes/reviewer_comments.txt", "R1: clarify the ablation\nR2: missing related work on baselines\n")
    return World(ws, venue, sections, artifacts, figures, stray_figures, bib, old_bib, keys)


def strip_build_artifacts(w: World, rng: random.Random) -> Draft:
    return f.delete(w.ws, w.artifacts, "main.tex", " (LaTeX build artifacts must not go into the submission)")


def camera_ready(w: World, rng: random.Random) -> Draft:
    mode = rng.choice(["final", "camera", "accepted", "preprint"])
    return f.edit(w.ws, "main.tex", "\\documentclass[review]", f"\\documentclass[{mode}]", " for the camera-ready")


def file_stray_plots(w: World, rng: random.Random) -> Draft:
    if rng.random() < 0.5:
        return f.file_away(w.ws, w.stray_figures, "figures", " with the other figures")
    return f.delete(w.ws, [w.old_bib], w.bib, " (superseded)")


def count_references(w: World, rng: random.Random) -> Draft:
    choice = rng.randrange(3)
    if choice == 0:
        return f.count_matches(w.ws, "@inproceedings", w.bib, "stats/n_references.txt")
    if choice == 1:
        return f.grep_lines(w.ws, "TODO", w.sections, "todo.txt", " so I can work through them")
    cited = [k for k in w.cited if any(k in w.ws.content(s) for s in w.sections)]
    return f.grep_files(w.ws, rng.choice(cited), "sections", "stats/cites.txt", " (where is this paper cited?)")


def rename_section(w: World, rng: random.Random) -> Draft:
    section = rng.choice(w.sections)
    number = w.sections.index(section) + 1
    return f.rename(w.ws, section, section.replace("sections/", f"sections/{number:02d}_"), " to keep them ordered")


def submission_cleanup(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "Strip the paper directory for submission:",
        [
            f.delete(w.ws, w.artifacts, "main.pdf"),
            f.delete(w.ws, [w.old_bib], w.bib),
            f.file_away(w.ws, w.stray_figures, "figures"),
            f.edit(w.ws, "main.tex", "\\documentclass[review]", "\\documentclass[final]"),
        ],
    )


def response_letter(w: World, rng: random.Random) -> Draft:
    folder = rng.choice(["rebuttal", "response", f"{w.venue}_rebuttal"])
    return f.composite(
        "Start the rebuttal:",
        [
            f.copy(w.ws, "notes/reviewer_comments.txt", f"{folder}/comments.txt"),
            f.write(w.ws, f"{folder}/response.tex", ["\\section*{Response to reviewers}", "We thank the reviewers."]),
            f.grep_lines(w.ws, "TODO", w.sections, f"{folder}/open_todos.txt"),
            f.count_matches(w.ws, "@inproceedings", w.bib, f"{folder}/n_refs.txt"),
        ],
    )


def arxiv_bundle(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "Prepare an arXiv bundle next to the sources:",
        [
            f.copy(w.ws, "main.tex", "arxiv/main.tex"),
            f.copy(w.ws, w.bib, "arxiv/refs.bib"),
            f.delete(w.ws, w.artifacts, "main.pdf"),
            f.make_dirs(w.ws, ["arxiv/figures", "arxiv/sections"]),
        ],
    )


def reorganise_sources(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "Reorganise the sources before the deadline:",
        [
            f.file_away(w.ws, w.stray_figures, "figures/raw"),
            f.rename(w.ws, w.bib, "bib/refs.bib"),
            f.file_away(w.ws, [w.old_bib], "bib/archive"),
            f.delete(w.ws, w.artifacts, "main.tex"),
            f.rename(w.ws, "notes/reviewer_comments.txt", "reviews/round1.txt"),
            f.make_dirs(w.ws, ["build", "supplementary"]),
        ],
    )


def full_submission(w: World, rng: random.Random) -> Draft:
    return f.composite(
        "Build the submission folder:",
        [
            f.copy(w.ws, "main.tex", "submission/main.tex"),
            f.copy(w.ws, w.bib, "submission/refs.bib"),
            f.file_away(w.ws, w.figures, "submission/figures"),
            f.delete(w.ws, w.artifacts, "main.pdf"),
            f.file_away(w.ws, w.stray_figures, "unused"),
            f.write(w.ws, "submission/README.txt", [f"Submission to {w.venue.upper()}", "Compile with pdflatex"]),
        ],
    )


RECIPES = (
    strip_build_artifacts,
    camera_ready,
    file_stray_plots,
    count_references,
    rename_section,
    submission_cleanup,
    response_letter,
    arxiv_bundle,
    reorganise_sources,
    full_submission,
)
