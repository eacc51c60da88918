"""Supply chain: every pip install is hash-checked against a lock that `make lock` compiles
from the requirement files edited by hand, and the locks agree with those files and with
each other. No network: the files, the recipes and the two scripts are read or run here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.infra.helpers import REPO

LAYER_REQUIREMENTS = REPO / "layers" / "shared" / "requirements.txt"
LAYER_LOCK = REPO / "layers" / "shared" / "requirements.txt.lock"
DEV_LOCK = REPO / "requirements-dev.txt.lock"
DOCS_LOCK = REPO / "requirements-docs.txt.lock"
# Each lock and the requirement files it is compiled from (`make lock`).
LOCKS = {
    LAYER_LOCK: [LAYER_REQUIREMENTS],
    DEV_LOCK: [REPO / "requirements-dev.txt"],
    DOCS_LOCK: [REPO / "functions" / "docs" / "requirements.txt"],
    REPO / "requirements-sam.txt.lock": [REPO / "requirements-sam.txt"],
    REPO / "requirements-uv.txt.lock": [REPO / "requirements-uv.txt"],
    REPO / "requirements-audit.txt.lock": [REPO / "requirements-audit.txt"],
}
MAKEFILES = [REPO / "Makefile", REPO / "layers" / "shared" / "Makefile", REPO / "functions" / "docs" / "Makefile"]
SHA256 = re.compile(r"--hash=sha256:([0-9a-f]+)")


@dataclass
class Locked:
    version: str
    hashes: list[str]


def logical_lines(text: str) -> list[str]:
    """Lines with backslash continuations joined."""
    return re.sub(r"\\\n", " ", text).splitlines()


def lock_problems(text: str) -> list[str]:
    """Every requirement of a lock pinned with == and carrying sha256 hashes; the header names `make lock`."""
    problems = [] if "make lock" in "\n".join(text.splitlines()[:3]) else ["the header does not name `make lock`"]
    entries = [line for line in logical_lines(text) if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        problems.append("no requirement at all")
    for line in entries:
        requirement = line.split(" --", 1)[0].strip()
        specifiers = list(Requirement(requirement).specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            problems.append(f"{requirement!r} is not pinned with ==")
        hashes = SHA256.findall(line)
        if not hashes:
            problems.append(f"{requirement!r} has no --hash=sha256:")
        problems += [f"{requirement!r}: {h!r} is not a sha256" for h in hashes if len(h) != 64]
        if re.search(r"--hash=(?!sha256:)", line):
            problems.append(f"{requirement!r} has a hash other than sha256")
    return problems


def read_lock(path: Path) -> dict[str, Locked]:
    locked: dict[str, Locked] = {}
    for line in logical_lines(path.read_text()):
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line.split(" --", 1)[0].strip())
            (specifier,) = requirement.specifier
            locked[canonicalize_name(requirement.name)] = Locked(specifier.version, SHA256.findall(line))
    return locked


def read_requirements(path: Path) -> list[Requirement]:
    """The requirements of a requirements file, -r includes followed."""
    found: list[Requirement] = []
    for line in logical_lines(path.read_text()):
        text = re.sub(r"(^|\s)#.*$", "", line).strip()
        if text.startswith(("-r ", "--requirement ")):
            found += read_requirements(path.parent / text.split(maxsplit=1)[1])
        elif text and not text.startswith("-"):
            found.append(Requirement(text))
    return found


def roots(lock: Path, source: Path) -> set[str]:
    """Packages the lock says come straight from a requirement file (`# via -r <source>`)."""
    found: set[str] = set()
    current: str | None = None
    relative = source.relative_to(REPO).as_posix()
    for line in lock.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            current = canonicalize_name(Requirement(line.split(" --", 1)[0].rstrip(" \\")).name)
        elif current and re.search(rf"#\s+(via\s+)?-r {re.escape(relative)}$", line):
            found.add(current)
    return found


@pytest.mark.parametrize("lock", list(LOCKS), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_lock_pins_every_package_with_its_hashes(lock: Path) -> None:
    assert lock.is_file(), f"{lock} is missing: run `make lock`"
    assert lock_problems(lock.read_text()) == []


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda t: re.sub(r"^fastapi==", "fastapi>=", t, flags=re.MULTILINE), "not pinned with =="),
        (
            lambda t: re.sub(r"(mangum==[^\n]*) \\\n(\s+--hash=sha256:\w+ \\\n)*\s+--hash=sha256:\w+", r"\1", t),
            "no --hash",
        ),
        (lambda t: t.replace("--hash=sha256:", "--hash=sha256:0", 1), "is not a sha256"),
        (lambda t: t.replace("--hash=sha256:", "--hash=md5:", 1), "other than sha256"),
        (lambda t: t + "limits==5.8.0\n", "no --hash"),
        (lambda t: t.replace("make lock", "pip freeze", 1), "header"),
    ],
    ids=["unpinned", "no-hash", "short-hash", "md5", "appended-line", "header"],
)
def test_the_lock_check_catches_a_broken_line(breakage: Callable[[str], str], expected: str) -> None:
    text = LAYER_LOCK.read_text()
    broken = breakage(text)
    assert broken != text
    assert any(expected in problem for problem in lock_problems(broken)), lock_problems(broken)


@pytest.mark.parametrize(("lock", "sources"), list(LOCKS.items()), ids=lambda v: getattr(v, "name", ""))
def test_every_requirement_is_locked_at_a_version_it_allows(lock: Path, sources: list[Path]) -> None:
    locked = read_lock(lock)
    for source in sources:
        for requirement in read_requirements(source):
            name = canonicalize_name(requirement.name)
            assert name in locked, f"{source.name}: {requirement} is not in {lock.name} (run `make lock`)"
            assert requirement.specifier.contains(Version(locked[name].version), prereleases=True), (
                f"{source.name}: {requirement}, but {lock.name} has {locked[name].version} (run `make lock`)"
            )


def test_layer_lock_holds_exactly_the_direct_dependencies_at_their_pins() -> None:
    direct = read_requirements(LAYER_REQUIREMENTS)
    locked = read_lock(LAYER_LOCK)
    for requirement in direct:
        (specifier,) = requirement.specifier  # the layer's requirements are pinned exactly
        assert specifier.operator == "==", requirement
        assert locked[canonicalize_name(requirement.name)].version == specifier.version, requirement
    # ... and nothing the file no longer asks for is still locked as one of its own.
    assert roots(LAYER_LOCK, LAYER_REQUIREMENTS) == {canonicalize_name(r.name) for r in direct}


def test_dev_lock_pins_every_layer_package_at_the_layer_version() -> None:
    layer, dev = read_lock(LAYER_LOCK), read_lock(DEV_LOCK)
    differing = {name: (v.version, dev[name].version if name in dev else None) for name, v in layer.items()}
    assert {name: pair for name, pair in differing.items() if pair[0] != pair[1]} == {}


def test_docs_function_and_dev_lock_the_same_swagger_ui() -> None:
    assert read_lock(DOCS_LOCK)["swagger-ui-py"] == read_lock(DEV_LOCK)["swagger-ui-py"]
    assert set(read_lock(DOCS_LOCK)) == {"swagger-ui-py"}  # installed with --no-deps


def recipe_lines(makefile: Path) -> list[str]:
    return [line.strip() for line in logical_lines(makefile.read_text()) if line.startswith("\t")]


@pytest.mark.parametrize("makefile", MAKEFILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_pip_install_is_hash_checked(makefile: Path) -> None:
    installs = [line for line in recipe_lines(makefile) if re.search(r"-m pip install\b", line)]
    assert installs, makefile
    for line in installs:
        assert "--require-hashes" in line, line
        assert "--upgrade" not in line, line
        requirement_files = re.findall(r"(?:-r|--requirement)\s+(\S+)", line)
        assert requirement_files, line
        assert all(f.strip('"').endswith((".lock", "$(SELECTED)", "$(DOCS_LOCK)")) for f in requirement_files), line


def test_layer_recipe_installs_from_its_lock_with_require_hashes() -> None:
    recipe = (REPO / "layers" / "shared" / "Makefile").read_text()
    assert re.search(r"^LAYER_LOCK \?= \$\(HERE\)/requirements\.txt\.lock$", recipe, re.MULTILINE)
    lines = recipe_lines(REPO / "layers" / "shared" / "Makefile")
    select = next(i for i, line in enumerate(lines) if "$(LOCK_SELECT)" in line)
    install = next(i for i, line in enumerate(lines) if "-m pip install" in line)
    assert select < install
    assert '"$(LAYER_LOCK)" "$(REQUIREMENTS)" --output "$(SELECTED)"' in lines[select]
    assert '--require-hashes --requirement "$(SELECTED)"' in lines[install]
    assert "--platform $(PLATFORM)" in lines[install] and "--only-binary=:all:" in lines[install]


def test_make_lock_writes_every_lock() -> None:
    # `$(UV_COMPILE) ... -o LOCK`, a recipe line each (the x86_64 check writes to a scratch file).
    outputs = [re.search(r" -o (\S+)$", line) for line in recipe_lines(REPO / "Makefile")]
    written = {REPO / m[1].replace("$(LAYER_LOCK)", "layers/shared/requirements.txt.lock") for m in outputs if m}
    on_disk = {*REPO.glob("*.lock"), *(REPO / "layers" / "shared").glob("*.lock")}
    assert written == set(LOCKS) == on_disk


def lock_select(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(REPO / "scripts" / "lock_select.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def test_a_requirement_added_or_bumped_without_make_lock_stops_the_build(tmp_path: Path) -> None:
    assert lock_select(LAYER_LOCK, LAYER_REQUIREMENTS, "--check").returncode == 0
    stale = tmp_path / "requirements.txt"
    text = LAYER_REQUIREMENTS.read_text()
    stale.write_text(re.sub(r"^fastapi==\S+", "fastapi==0.0.1", text, flags=re.MULTILINE) + "cachetools==6.0.0\n")
    result = lock_select(LAYER_LOCK, stale, "--output", tmp_path / "selected")
    assert result.returncode == 1
    assert "fastapi==0.0.1" in result.stderr and "cachetools==6.0.0 is not in" in result.stderr
    assert "make lock" in result.stderr
    assert not (tmp_path / "selected").exists()


def test_the_layer_recipe_selects_what_its_requirements_need(tmp_path: Path) -> None:
    layer = read_lock(LAYER_LOCK)
    selected = tmp_path / "selected"
    assert lock_select(LAYER_LOCK, LAYER_REQUIREMENTS, "--output", selected).returncode == 0
    assert read_lock(selected) == layer and lock_problems("# make lock\n" + selected.read_text()) == []
    # bench/cold_start.py's floor: fastapi and mangum, and what they need only.
    floor = tmp_path / "floor.txt"
    floor.write_text("".join(f"{n}=={layer[n].version}\n" for n in ("fastapi", "mangum")))
    assert lock_select(LAYER_LOCK, floor, "--output", selected).returncode == 0
    names = set(read_lock(selected))
    assert {"fastapi", "mangum", "starlette", "pydantic", "pydantic-core", "anyio"} <= names
    assert not names & {"sqlalchemy", "redis", "aws-lambda-powertools", "botocore"}


FAKE_PIP_AUDIT = textwrap.dedent(
    """
    import json, os, sys
    service = sys.argv[sys.argv.index("--vulnerability-service") + 1]
    mode = json.loads(os.environ["FAKE_AUDIT"])[service]
    dependency = {"name": "jinja2", "version": "2.10"}
    if mode == "down":
        sys.exit("requests.exceptions.ConnectionError: Max retries exceeded (NameResolutionError)")
    if mode == "broken":
        sys.exit("RequirementSourceError: requirement jinja2==2.10 does not contain a hash")
    if mode == "skip":
        dependency = {"name": "jinja2", "skip_reason": "Dependency not found on PyPI and could not be audited"}
    elif mode == "vuln":
        dependency["vulns"] = [{"id": "PYSEC-2019-217", "fix_versions": ["2.10.1"], "aliases": ["CVE-2019-10906"]}]
    else:
        dependency["vulns"] = []
    print(json.dumps({"dependencies": [dependency], "fixes": []}))
    sys.exit(1 if mode == "vuln" else 0)
    """
)


@pytest.mark.parametrize(
    ("pypi", "osv", "status", "expected"),
    [
        ("clean", "down", 0, "pip-audit (pypi): 1 packages in 1 locks, 0 known vulnerabilities"),
        ("skip", "vuln", 1, "jinja2==2.10: PYSEC-2019-217 (CVE-2019-10906), fixed in 2.10.1"),
        ("down", "clean", 0, "pip-audit (osv)"),
        ("skip", "down", 2, "pip-audit: vulnerability service unreachable; audit not run"),
        ("down", "down", 2, "pip-audit: vulnerability service unreachable; audit not run"),
        ("broken", "clean", 1, "does not contain a hash"),
    ],
)
def test_make_audit_says_when_it_could_not_audit(
    tmp_path: Path, pypi: str, osv: str, status: int, expected: str
) -> None:
    fake = tmp_path / "pip_audit.py"
    fake.write_text(FAKE_PIP_AUDIT)
    env = {
        **os.environ,
        "PIP_AUDIT": f"{sys.executable} {fake}",
        "FAKE_AUDIT": json.dumps({"pypi": pypi, "osv": osv}),
        "AUDIT_SERVICES": "pypi osv",
    }
    command = [sys.executable, str(REPO / "scripts" / "audit.py"), str(DOCS_LOCK)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env, timeout=60)
    assert result.returncode == status, result.stdout + result.stderr
    assert expected in result.stdout + result.stderr
