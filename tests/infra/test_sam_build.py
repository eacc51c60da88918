"""`sam build` from the working tree into an empty build and cache folder - what a
fresh checkout gets - and what the artefacts hold."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from pathlib import Path

from reservations_dev.template import load_template
from tests.infra.helpers import REPO, RUNTIME_PROVIDED, TEMPLATE, Build, elf_architecture

# Lambda's limit on a function plus all its layers, unzipped.
LAMBDA_UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024
PYC_UNCHECKED_HASH = 0b01  # PEP 552 flags: hash-based, check_source off


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def so_architectures(site: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for library in site.rglob("*.so*"):
        arch = elf_architecture(library)
        if arch is not None:
            found.setdefault(arch, set()).add(str(library.relative_to(site)))
    return found


def test_build_produces_every_function_and_the_layer(sam_build: Build) -> None:
    functions = [
        name for name, r in load_template(TEMPLATE)["Resources"].items() if r["Type"] == "AWS::Serverless::Function"
    ]
    assert "Build Succeeded" in sam_build.output
    for name in functions:
        assert (sam_build.function_dir(name) / "handler.py").is_file(), name
    assert sam_build.layer_site.is_dir()
    built = load_template(sam_build.template)["Resources"]
    assert built["SharedLayer"]["Properties"]["ContentUri"] == "SharedLayer"
    assert {built[name]["Properties"]["CodeUri"] for name in functions} == set(functions)


# The docs function also ships both initializers, what its requirements.txt installs and
# ReDoc's bundle (functions/docs/Makefile: the pinned npm tarball, sha512 checked).
DOCS_FILES = {
    "handler.py",
    "openapi.json",
    "swagger-initializer.js",
    "redoc-initializer.js",
    "requirements.txt",
    "redoc",
}
REDOC_FILES = {"redoc.standalone.js", "redoc.standalone.js.LICENSE.txt", "LICENSE", "VERSION"}


def _installed_by_pip(folder: Path) -> set[str]:
    """Top-level names the wheels unpacked into ``folder`` brought (their RECORD files)."""
    names: set[str] = set()
    for record in folder.glob("*.dist-info/RECORD"):
        names |= {line.split(",", 1)[0].split("/", 1)[0] for line in record.read_text().splitlines() if line}
    return names


def test_functions_ship_only_their_code(sam_build: Build) -> None:
    for folder in sam_build.build_dir.iterdir():
        if folder.is_dir() and folder.name != "SharedLayer":
            shipped = {p.name for p in folder.iterdir()}
            if folder.name == "DocsFunction":
                assert {"swagger_ui", "swagger_ui_py-25.7.1.dist-info"} <= shipped
                shipped -= _installed_by_pip(folder) | {"bin"}
            expected = DOCS_FILES if folder.name == "DocsFunction" else {"handler.py"}
            assert shipped <= expected and "handler.py" in shipped, (folder.name, shipped)
    redoc = sam_build.function_dir("DocsFunction") / "redoc"
    assert {p.name for p in redoc.iterdir()} == REDOC_FILES
    recipe = (REPO / "functions" / "docs" / "Makefile").read_text()
    pinned = [re.search(rf"^{name} := (\S+)$", recipe, re.MULTILINE) for name in ("REDOC_VERSION", "REDOC_INTEGRITY")]
    assert (redoc / "VERSION").read_text().split() == [m[1] for m in pinned if m]
    document = sam_build.function_dir("DocsFunction") / "openapi.json"
    assert not document.is_symlink()
    assert document.read_bytes() == (REPO / "openapi.json").read_bytes()


def test_layer_holds_the_reservations_package_from_shared(sam_build: Build) -> None:
    package = sam_build.layer_site / "reservations"
    source = REPO / "shared" / "reservations"
    built = {p.relative_to(package) for p in package.rglob("*.py")}
    expected = {p.relative_to(source) for p in source.rglob("*.py")}
    assert built == expected
    assert (package / "migrations" / "script.py.mako").is_file()
    assert (package / "migrations" / "versions").is_dir()


# Dev-only code lives in shared/reservations_dev (and before that lived in
# reservations/local); none of it, nor what only it needs, may reach the layer.
DEV_ONLY_MODULES = ("gateway", "embedded_postgres", "databases", "harness")
DEV_ONLY_PACKAGES = ("pgserver", "uvicorn")


def test_layer_holds_no_dev_only_code(sam_build: Build) -> None:
    site = sam_build.layer_site
    package = site / "reservations"
    assert not (site / "reservations_dev").exists()
    assert not (package / "local").exists()
    # At the top of the layer and anywhere in the package (third-party packages may
    # well have a module of one of these names deep inside).
    candidates = [*site.iterdir(), *package.rglob("*")]
    found = [p for p in candidates if p.stem in DEV_ONLY_MODULES and (p.suffix == ".py" or p.is_dir())]
    assert found == [], [str(p.relative_to(site)) for p in found]
    for name in DEV_ONLY_PACKAGES:
        assert not _in_layer(sam_build, name), name
        assert list(site.glob(f"{name}-*.dist-info")) == [], name
    assert "scratch_database" not in _defined_names((package / "migrations" / "__init__.py").read_text())


def _defined_names(source: str) -> set[str]:
    """Every name a module binds: defs, classes, assignments and imports, nested included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


def test_layer_is_precompiled_for_python312_with_unchecked_hash_pycs(sam_build: Build) -> None:
    magic = importlib.util.MAGIC_NUMBER  # this suite runs on 3.12, the runtime's version
    sources = list(sam_build.layer_site.rglob("*.py"))
    assert len(sources) > 500
    missing, stale = [], []
    for source in sources:
        pyc = Path(importlib.util.cache_from_source(str(source)))
        if not pyc.is_file():
            missing.append(str(source.relative_to(sam_build.layer_site)))
            continue
        header = pyc.read_bytes()[:16]
        if header[:4] != magic or int.from_bytes(header[4:8], "little") != PYC_UNCHECKED_HASH:
            stale.append(str(pyc.relative_to(sam_build.layer_site)))
    assert not missing, f"{len(missing)} modules without bytecode, e.g. {missing[:5]}"
    assert not stale, f"{len(stale)} .pyc not unchecked-hash for 3.12, e.g. {stale[:5]}"


def test_layer_leaves_out_what_the_runtime_provides(sam_build: Build) -> None:
    assert [name for name in RUNTIME_PROVIDED if _in_layer(sam_build, name)] == []


def _in_layer(build: Build, name: str) -> bool:
    return (build.layer_site / name).exists() or (build.layer_site / f"{name}.py").exists()


def test_layer_wheels_are_for_the_target_architecture(sam_build: Build, other_layer_build: Build) -> None:
    for build in (sam_build, other_layer_build):
        architectures = so_architectures(build.layer_site)
        assert set(architectures) == {build.architecture}, {k: sorted(v)[:3] for k, v in architectures.items()}
        # pydantic-core, argon2 and the cffi backend are compiled: they must be there.
        names = " ".join(architectures[build.architecture])
        for compiled in ("pydantic_core", "_argon2_cffi_bindings", "_cffi_backend"):
            assert compiled in names, (build.architecture, compiled)
    # Same packages, same versions, whatever the architecture.
    dist_infos = [sorted(p.name for p in b.layer_site.glob("*.dist-info")) for b in (sam_build, other_layer_build)]
    assert dist_infos[0] == dist_infos[1]


def test_layer_and_function_fit_lambdas_unzipped_limit(sam_build: Build) -> None:
    layer = folder_size(sam_build.layer_site)
    largest_function = max(
        folder_size(p) for p in sam_build.build_dir.iterdir() if p.is_dir() and p.name != "SharedLayer"
    )
    assert layer + largest_function < LAMBDA_UNZIPPED_LIMIT_BYTES * 0.6, f"layer is {layer / 2**20:.0f} MiB"


def test_sam_build_cache_keys_cover_what_the_recipes_copy_in() -> None:
    # `sam build --cached` hashes a resource's CodeUri/ContentUri folder, following
    # symlinks. The layer recipe copies shared/reservations and the docs function ships
    # openapi.json, both from outside those folders: the symlinks put them inside the
    # hash, so changing either rebuilds instead of deploying a stale cached copy.
    layer_link = REPO / "layers" / "shared" / "reservations"
    assert layer_link.is_symlink() and layer_link.resolve() == (REPO / "shared" / "reservations").resolve()
    docs_link = REPO / "functions" / "docs" / "openapi.json"
    assert docs_link.is_symlink() and docs_link.resolve() == (REPO / "openapi.json").resolve()
    walked = os.walk(REPO / "layers" / "shared", followlinks=True)
    hashed = {Path(folder, name).resolve() for folder, _, files in walked for name in files}
    assert (REPO / "shared" / "reservations" / "migrations" / "env.py").resolve() in hashed
