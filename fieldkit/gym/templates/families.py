"""Task families: move/rename, copy, delete, mkdir, write, sed edits, grep-and-collect, counts, restructure.

Each family takes a workspace and the persona's concrete choices and returns a Draft whose expected results are
computed from the seeded content itself (the lines a grep finds, the number wc counts), so the assertions cannot
drift from the workspace. The first assertion of every family fails on the untouched seed: a task the do-nothing
agent passes is a bug the generator refuses.
"""

from __future__ import annotations

import fnmatch
import shlex
from collections.abc import Sequence
from pathlib import PurePosixPath

from fieldkit.gym.task import (
    Assertion,
    FileContentsContain,
    FileContentsMatchRegex,
    FileExists,
    FileNotExists,
    FileUnchanged,
)
from fieldkit.gym.templates.base import Draft, Workspace, absent, listing, q, sed_expression

MAX_ASSERTIONS = 6


def _parent_missing(ws: Workspace, path: str) -> str | None:
    """The parent directory of `path` when no seeded file lives under it (the agent must create it)."""
    parent = PurePosixPath(path).parent.as_posix()
    if parent == ".":
        return None
    return None if any(p.startswith(parent + "/") for p in ws.files) else parent


def _mkdir_for(ws: Workspace, *paths: str) -> list[str]:
    missing = sorted({d for p in paths if (d := _parent_missing(ws, p))})
    return [q("mkdir", "-p", *missing)] if missing else []


def rename(ws: Workspace, src: str, dst: str, why: str = "") -> Draft:
    """Rename (move) a file or a whole directory."""
    inside = ws.under(src)
    if src not in ws.files and not inside:
        raise ValueError(f"nothing to rename at {src}")
    checks: list[Assertion] = [FileExists(path=dst), FileNotExists(path=src)]
    if inside:  # a directory: its files must arrive with it
        checks.append(FileExists(path=dst + inside[0].removeprefix(src)))
    elif ws.files[src].kind == "text":
        checks.append(FileContentsContain(path=dst, must_contain=[ws.marker(src)]))
    return Draft(
        intent=f"Rename `{src}{'/' if inside else ''}` to `{dst}{'/' if inside else ''}`{why}.",
        commands=[*_mkdir_for(ws, dst), q("mv", src, dst)],
        assertions=checks,
        skills=["file.move"],
        writes={src, dst, *inside},
    )


def copy(ws: Workspace, src: str, dst: str, why: str = "") -> Draft:
    checks: list[Assertion] = [FileExists(path=dst), FileUnchanged(path=src)]
    if ws.files[src].kind == "text":
        checks.insert(1, FileContentsContain(path=dst, must_contain=[ws.marker(src)]))
    return Draft(
        intent=f"Make a copy of `{src}` at `{dst}`{why}, leaving the original as it is.",
        commands=[*_mkdir_for(ws, dst), q("cp", src, dst)],
        assertions=checks,
        skills=["file.copy"],
        reads={src},
        writes={dst},
    )


def delete(ws: Workspace, doomed: Sequence[str], keep: str, why: str = "", pattern: str | None = None) -> Draft:
    """Remove files, named one by one or by a shell glob that matches exactly them; `keep` must survive untouched."""
    if pattern is not None:
        depth = pattern.count("/")
        matched = [p for p in ws.files if p.count("/") == depth and fnmatch.fnmatchcase(p, pattern)]
        if sorted(matched) != sorted(doomed):
            raise ValueError(f"glob {pattern!r} matches {sorted(matched)}, not {sorted(doomed)}")
    checks: list[Assertion] = [FileNotExists(path=p) for p in doomed[:4]]
    checks += [FileUnchanged(path=keep), FileExists(path=keep)]
    what = f"every file matching `{pattern}`" if pattern else listing(doomed)
    return Draft(
        intent=f"Delete {what}{why}. Keep `{keep}`.",
        commands=[f"rm -f {pattern}" if pattern else q("rm", "-f", *doomed)],
        assertions=checks[:MAX_ASSERTIONS],
        skills=["file.delete"],
        reads={keep},
        writes=set(doomed),
    )


def touch(ws: Workspace, paths: Sequence[str], why: str = "") -> Draft:
    """Create empty files (an `__init__.py`, a `.gitkeep`)."""
    checks: list[Assertion] = [FileExists(path=p) for p in paths[:MAX_ASSERTIONS]]
    if len(paths) == 1:  # one file: also check it is empty (a second assertion)
        checks.append(FileContentsMatchRegex(path=paths[0], regex=r"\A\s*\Z"))
    return Draft(
        intent=f"Create the empty file{'s' if len(paths) > 1 else ''} {listing(paths)}{why}.",
        commands=[*_mkdir_for(ws, *paths), q("touch", *paths)],
        assertions=checks,
        skills=["file.write"],
        writes=set(paths),
    )


def delete_tree(ws: Workspace, directory: str, keep: str, why: str = "") -> Draft:
    return Draft(
        intent=f"Remove the directory `{directory}` and everything in it{why}. Keep `{keep}`.",
        commands=[q("rm", "-rf", directory)],
        assertions=[FileNotExists(path=directory), FileUnchanged(path=keep), FileExists(path=keep)],
        skills=["shell.rm"],
        reads={keep},
        writes={directory, *ws.under(directory)},
    )


def edit(ws: Workspace, path: str, old: str, new: str, why: str = "", every: bool = False) -> Draft:
    """`sed -i` one literal substitution; `old` must occur in the file and must not be a part of `new`."""
    text = ws.content(path)
    if old not in text or old in new or new in text:
        raise ValueError(f"{path}: edit {old!r} -> {new!r} is not checkable")
    untouched = next(line.strip() for line in ws.lines(path) if old not in line and len(line.strip()) >= 4)
    return Draft(
        intent=f"In `{path}`, replace {'every ' if every else ''}`{old}` with `{new}`{why}.",
        commands=[q("sed", "-i", sed_expression(old, new, every), path)],
        assertions=[
            FileContentsContain(path=path, must_contain=[new, untouched]),
            absent(path, old),
        ],
        skills=["shell.sed"],
        writes={path},
    )


def grep_lines(ws: Workspace, needle: str, files: Sequence[str], out: str, why: str = "") -> Draft:
    """Collect every line containing `needle` from `files` into `out` (named by a glob when they are all the
    files of one suffix in one directory)."""
    hits = [line for f in files for line in ws.lines(f) if needle in line]
    _need(hits, f"{needle!r} in {list(files)}")
    misses = [line.strip() for f in files for line in ws.lines(f) if needle not in line and len(line.strip()) >= 8]
    miss = next(m for m in misses if not any(m in h for h in hits))
    directory, suffix = PurePosixPath(files[0]).parent.as_posix(), PurePosixPath(files[0]).suffix
    if len(files) > 2 and suffix and sorted(files) == ws.under(directory, suffix):
        where, sources = f"the `*{suffix}` files in `{directory}/`", f"{q(directory)}/*{suffix}"
    else:
        where, sources = listing(files), q(*files)
    return Draft(
        intent=f"Collect every line containing `{needle}` from {where} into `{out}`{why}.",
        commands=[*_mkdir_for(ws, out), f"grep -hF {q(needle)} {sources} > {q(out)}"],
        assertions=[FileContentsContain(path=out, must_contain=_spread(hits, 3)), absent(out, miss)],
        skills=["shell.grep", "file.write"],
        reads=set(files),
        writes={out},
    )


def grep_files(ws: Workspace, needle: str, directory: str, out: str, why: str = "") -> Draft:
    """List (one per line) the files under `directory` that contain `needle`."""
    files = ws.under(directory)
    hits = [f for f in files if ws.files[f].kind == "text" and needle in ws.content(f)]
    _need(hits, f"{needle!r} under {directory}")
    misses = [f for f in files if f not in hits and not any(f in h for h in hits)]
    checks: list[Assertion] = [FileContentsContain(path=out, must_contain=hits[:4])]
    if misses:
        checks.append(absent(out, misses[0]))
    checks.append(FileExists(path=out))
    return Draft(
        intent=f"Write the paths of the files under `{directory}/` that contain `{needle}` into `{out}`, one per "
        f"line{why}.",
        commands=[*_mkdir_for(ws, out), f"grep -rlF {q(needle, directory)} > {q(out)}"],
        assertions=checks,
        skills=["shell.grep", "file.write"],
        reads=set(files),
        writes={out},
    )


def count_lines(ws: Workspace, path: str, out: str, why: str = "") -> Draft:
    n = ws.content(path).count("\n")
    return Draft(
        intent=f"Count the lines of `{path}` and write the number to `{out}`{why}.",
        commands=[*_mkdir_for(ws, out), f"wc -l < {q(path)} > {q(out)}"],
        assertions=[_number(out, n), FileUnchanged(path=path)],
        skills=["shell.wc", "file.write"],
        reads={path},
        writes={out},
    )


def count_matches(ws: Workspace, needle: str, path: str, out: str, why: str = "") -> Draft:
    n = sum(needle in line for line in ws.lines(path))
    _need(range(n), f"{needle!r} in {path}")  # grep -c exits 1 on no match
    return Draft(
        intent=f"Count the lines of `{path}` that contain `{needle}` and write the number to `{out}`{why}.",
        commands=[*_mkdir_for(ws, out), f"grep -cF {q(needle, path)} > {q(out)}"],
        assertions=[_number(out, n), FileUnchanged(path=path)],
        skills=["shell.grep", "shell.wc", "file.write"],
        reads={path},
        writes={out},
    )


def extract(ws: Workspace, path: str, n: int, out: str, end: str = "tail", why: str = "") -> Draft:
    lines = ws.lines(path)
    kept, dropped = (lines[-n:], lines[:-n]) if end == "tail" else (lines[:n], lines[n:])
    dropped_marker = next(d.strip() for d in (dropped[::-1] if end == "tail" else dropped) if len(d.strip()) >= 8)
    word = "last" if end == "tail" else "first"
    return Draft(
        intent=f"Save the {word} {n} lines of `{path}` to `{out}`{why}.",
        commands=[*_mkdir_for(ws, out), f"{end} -n {n} {q(path)} > {q(out)}"],
        assertions=[
            FileContentsContain(path=out, must_contain=_spread([k.strip() for k in kept if k.strip()], 2)),
            absent(out, dropped_marker),
            FileUnchanged(path=path),
        ],
        skills=[f"shell.{end}", "file.write"],
        reads={path},
        writes={out},
    )


def write(ws: Workspace, path: str, lines: Sequence[str], why: str = "") -> Draft:
    shown = ", ".join(f"`{line}`" for line in lines)
    return Draft(
        intent=f"Create `{path}` with {len(lines)} lines{why}, one per line, in this order: {shown}.",
        commands=[*_mkdir_for(ws, path), f"printf '%s\\n' {q(*lines)} > {q(path)}"],
        assertions=[
            FileContentsContain(path=path, must_contain=[x for x in lines if x.strip()][:4]),
            FileExists(path=path),
        ],
        skills=["file.write"],
        writes={path},
    )


def append(ws: Workspace, path: str, line: str, why: str = "") -> Draft:
    return Draft(
        intent=f"Append the line `{line}` to the end of `{path}`{why}.",
        commands=[f"echo {q(line)} >> {q(path)}"],
        assertions=[
            FileContentsContain(path=path, must_contain=[line]),
            FileContentsContain(path=path, must_contain=[ws.marker(path)]),
        ],
        skills=["file.write"],
        writes={path},
    )


def file_away(ws: Workspace, files: Sequence[str], dest: str, why: str = "") -> Draft:
    """Move files into a directory (created when missing), keeping their names."""
    moved = [f"{dest}/{PurePosixPath(f).name}" for f in files]
    checks: list[Assertion] = [FileExists(path=m) for m in moved[:3]]
    checks += [FileNotExists(path=f) for f in files[:2]]
    commands = [q("mkdir", "-p", dest)] if _parent_missing(ws, moved[0]) else []
    return Draft(
        intent=f"Move {listing(files)} into `{dest}/`{why}.",
        commands=[*commands, q("mv", *files, dest + "/")],
        assertions=checks[:MAX_ASSERTIONS],
        skills=["shell.mkdir", "file.move"] if commands else ["file.move"],
        writes={*files, *moved},
    )


def make_dirs(ws: Workspace, directories: Sequence[str], why: str = "") -> Draft:
    return Draft(
        intent=f"Create the director{'ies' if len(directories) > 1 else 'y'} {listing(directories)}{why}.",
        commands=[q("mkdir", "-p", *directories)],
        assertions=[FileExists(path=d) for d in directories[:MAX_ASSERTIONS]],
        skills=["shell.mkdir"],
        writes=set(directories),
    )


def find_list(ws: Workspace, suffix: str, out: str, why: str = "") -> Draft:
    """List every file ending in `suffix`, anywhere in the workspace, into `out`."""
    hits = sorted(p for p in ws.files if p.endswith(suffix))
    _need(hits, f"*{suffix} files")
    return Draft(
        intent=f"Find every `*{suffix}` file in the workspace and write their paths to `{out}`, one per line{why}.",
        commands=[*_mkdir_for(ws, out), f"find . -name {q('*' + suffix)} > {q(out)}"],
        assertions=[FileContentsContain(path=out, must_contain=hits[:4]), FileExists(path=out)],
        skills=["shell.find", "file.write"],
        reads=set(hits),
        writes={out},
    )


def composite(lead: str, parts: Sequence[Draft]) -> Draft:
    """Several drafts as one task, in order; assertions taken round-robin from the parts (at most six, so at most
    six parts: every part is checked by at least its first assertion)."""
    if not 2 <= len(parts) <= MAX_ASSERTIONS:
        raise ValueError(f"a composite needs 2-{MAX_ASSERTIONS} parts, got {len(parts)}")
    for i, a in enumerate(parts):
        for b in parts[i + 1 :]:
            clash = (a.writes & (b.writes | b.reads)) | (b.writes & a.reads)
            if clash:
                raise ValueError(f"composite parts clash on {sorted(clash)}")
    checks: list[Assertion] = []
    for depth in range(max(len(p.assertions) for p in parts)):
        for part in parts:
            if depth < len(part.assertions) and part.assertions[depth] not in checks:
                checks.append(part.assertions[depth])
    steps = " ".join(f"({i}) {p.intent}" for i, p in enumerate(parts, 1))
    commands: list[str] = []
    made: set[str] = set()  # directories an earlier `mkdir -p` of the composite already created
    for command in (c for p in parts for c in p.commands):
        if command.startswith("mkdir -p "):
            wanted = shlex.split(command)[2:]
            if all(d in made for d in wanted):
                continue
            made.update(str(a) for d in wanted for a in [PurePosixPath(d), *PurePosixPath(d).parents])
        commands.append(command)
    return Draft(
        intent=f"{lead} {steps}",
        commands=commands,
        assertions=checks[:MAX_ASSERTIONS],
        skills=list(dict.fromkeys(s for p in parts for s in p.skills)),
        reads=set().union(*(p.reads for p in parts)),
        writes=set().union(*(p.writes for p in parts)),
    )


def _need(found: Sequence[object], what: str) -> None:
    if not found:
        raise ValueError(f"nothing to find: no {what}")


def _number(path: str, n: int) -> FileContentsMatchRegex:
    """The file starts with the number (so `wc -l < f` and `wc -l f` both pass)."""
    return FileContentsMatchRegex(path=path, regex=rf"\A\s*{n}\b")


def _spread(items: Sequence[str], k: int) -> list[str]:
    """Up to k items spread over the sequence (first, last, middle), deduplicated."""
    unique = list(dict.fromkeys(items))
    if len(unique) <= k:
        return unique
    idx = sorted({round(i * (len(unique) - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]
    return [unique[i] for i in idx]
