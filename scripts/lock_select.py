#!/usr/bin/env python3
"""Check a hashed lock against the requirement files it was compiled from, and select from it.

    lock_select.py LOCK REQUIREMENTS... --output FILE   # the lock's entries REQUIREMENTS need
    lock_select.py LOCK REQUIREMENTS... --check         # only the check

The locks are written by `make lock` (uv pip compile --generate-hashes); the human-edited
requirement files stay the source. Before anything is installed from a lock this checks
that it still answers them: every requirement (``-r`` includes followed) must be in the
lock, at the very version when it is pinned with ``==``, and every entry of the lock must
be pinned with ``==`` and carry at least one sha256. A requirement added or bumped without
`make lock` thus stops the build with a message, instead of being silently left out.

The selection is the lock's entries reachable from REQUIREMENTS through the lock's own
``# via`` annotations (the whole lock for the file it was compiled from; fastapi and
mangum alone for bench/cold_start.py's floor), written in pip's requirements format with
their hashes, for ``pip install --require-hashes`` (which also checks that it is closed).

Standard library only: it runs before any venv exists, on the build's python3.12.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})\b")


def canonical(name: str) -> str:
    """PEP 503's normalized name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Entry:
    name: str
    version: str | None
    requirement: str  # `name==version` and its marker, as the lock writes it
    hashes: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)  # canonical names of the packages that need it


@dataclass
class Requirement:
    name: str
    specifier: str
    source: str  # file:line, for messages


def _logical_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) with backslash continuations joined; comments kept."""
    lines: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + raw))
        pending = ""
    if pending:
        lines.append((start, pending))
    return lines


def read_requirements(path: Path, seen: set[Path] | None = None) -> list[Requirement]:
    """The requirements of a pip requirements file, ``-r``/``--requirement`` followed."""
    seen = set() if seen is None else seen
    path = path.resolve()
    if path in seen:
        return []
    seen.add(path)
    found: list[Requirement] = []
    for number, line in _logical_lines(path):
        text = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not text:
            continue
        include = re.match(r"^(?:-r|--requirement)(?:\s+|=)(\S+)", text)
        if include:
            found += read_requirements(path.parent / include[1], seen)
            continue
        if text.startswith("-"):  # -c, --index-url, --hash... : nothing to check
            continue
        match = NAME.match(text.split(" --", 1)[0])
        if not match:
            raise SystemExit(f"{path}:{number}: cannot read requirement {text!r}")
        found.append(Requirement(canonical(match[1]), match[3].replace(" ", ""), f"{path.name}:{number}"))
    return found


def read_lock(path: Path) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    current: Entry | None = None
    in_via = False
    for number, line in _logical_lines(path):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comment = stripped.lstrip("#").strip()
            if current is None:
                continue
            if comment.startswith("via"):
                in_via = True
                comment = comment[3:].strip()
            elif not in_via or not line.startswith("    #   "):
                in_via = False
                continue
            for parent in (p.strip() for p in comment.split(",")):
                if parent and not parent.startswith("-"):  # `-r file` / `-c file`: a root, not a package
                    current.via.add(canonical(parent))
            continue
        in_via = False
        if line[0].isspace():
            raise SystemExit(f"{path}:{number}: unexpected indented line {stripped!r}")
        requirement = stripped.split(" --", 1)[0].strip()
        match = NAME.match(requirement)
        if not match:
            raise SystemExit(f"{path}:{number}: cannot read locked requirement {requirement!r}")
        version = match[3][2:] if match[3].startswith("==") and "," not in match[3] else None
        current = Entry(canonical(match[1]), version, requirement, HASH.findall(line))
        entries[current.name] = current
    return entries


def problems(lock_path: Path, lock: dict[str, Entry], requirements: list[Requirement]) -> list[str]:
    found: list[str] = []
    for entry in lock.values():
        if entry.version is None or "*" in entry.version:
            found.append(f"{lock_path.name}: {entry.requirement!r} is not pinned with ==")
        if not entry.hashes:
            found.append(f"{lock_path.name}: {entry.requirement!r} has no --hash=sha256:")
    for requirement in requirements:
        locked = lock.get(requirement.name)
        if locked is None:
            found.append(f"{requirement.source}: {requirement.name}{requirement.specifier} is not in {lock_path.name}")
            continue
        pinned = requirement.specifier[2:] if requirement.specifier.startswith("==") else None
        if pinned and "," not in pinned and locked.version and locked.version.lower() != pinned.lower():
            found.append(
                f"{requirement.source}: {requirement.name}=={pinned}, "
                f"but {lock_path.name} has {requirement.name}=={locked.version}"
            )
    return found


def select(lock: dict[str, Entry], roots: set[str]) -> list[Entry]:
    """The entries reachable from roots through the `# via` annotations, in the lock's order."""
    needed_by: dict[str, set[str]] = {}
    for entry in lock.values():
        for parent in entry.via:
            needed_by.setdefault(parent, set()).add(entry.name)
    wanted, todo = set(), [name for name in roots if name in lock]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo += sorted(needed_by.get(name, ()))
    return [entry for entry in lock.values() if entry.name in wanted]


def render(entries: list[Entry], lock_path: Path, sources: list[Path]) -> str:
    out = [f"# {lock_path.name}, the entries {', '.join(p.name for p in sources)} needs (scripts/lock_select.py)"]
    for entry in entries:
        out.append(" \\\n".join([entry.requirement, *(f"    --hash=sha256:{h}" for h in entry.hashes)]))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("requirements", type=Path, nargs="+")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--output", "-o", type=Path, help="write the selected entries here")
    action.add_argument("--check", action="store_true", help="only check the lock against the requirements")
    args = parser.parse_args(argv)

    for path in (args.lock, *args.requirements):
        if not path.is_file():
            print(f"lock_select: {path} does not exist (run `make lock`)", file=sys.stderr)
            return 2
    lock = read_lock(args.lock)
    requirements = [r for path in args.requirements for r in read_requirements(path)]
    found = problems(args.lock, lock, requirements)
    if found:
        print(f"{args.lock} does not match {', '.join(map(str, args.requirements))}:", file=sys.stderr)
        for problem in found:
            print(f"  {problem}", file=sys.stderr)
        print("Run `make lock` at the repository root and commit the updated lock files.", file=sys.stderr)
        return 1
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        entries = select(lock, {r.name for r in requirements})
        args.output.write_text(render(entries, args.lock, args.requirements), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
