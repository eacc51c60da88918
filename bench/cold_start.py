"""Cold start of every function, measured the way Lambda pays for it.

Each sample is a fresh ``python3.12`` process that imports the handler from the
``sam build`` artefacts - ``PYTHONPATH=<function>:<layer>/python:<runtime>``, the order
of /var/task, /opt/python and /var/runtime - with ``PYTHONDONTWRITEBYTECODE=1``, as on
Lambda's read-only file system, so nothing a run compiles is reused by the next. Timed:
``import handler`` (the init phase's share that the code controls).

Variants: the build as it is (the layer's bytecode precompiled, unchecked-hash .pyc),
and a copy with every .pyc and __pycache__ removed (what a plain ``sam build`` ships).
The floor is a bare FastAPI + Mangum hello-world built by the same layer recipe
(layers/shared/Makefile with only fastapi and mangum, precompiled the same way).
Goal: each function within 1.5x of the floor.

Also reported: the built layer's size against Lambda's 250 MB unzipped limit.

    .venv/bin/python bench/cold_start.py        # BENCH_RUNS=9 for more samples
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / ".aws-sam" / "bench"
FUNCTIONS = (
    "AuthFunction",
    "ProvidersFunction",
    "AppointmentsFunction",
    "CacheSyncFunction",
    "MigrateFunction",
    "DocsFunction",
)
FLOOR = "floor: FastAPI + Mangum hello-world"
GOAL_RATIO = 1.5
LAMBDA_UNZIPPED_LIMIT = 262_144_000  # "250 MB": function + all layers, unzipped
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
IMPORT_HANDLER = "import time; t = time.perf_counter(); import handler; print(time.perf_counter() - t)"
FLOOR_HANDLER = '''"""A bare FastAPI + Mangum function: the cold-start floor."""

from fastapi import FastAPI
from mangum import Mangum

app = FastAPI()


@app.get("/hello")
def hello() -> dict[str, str]:
    return {"message": "hello"}


handler = Mangum(app, lifespan="off")
'''
# Settings every handler validates at import; nothing is contacted.
FUNCTION_ENV = {
    "APP_ENV": "aws",
    "JWT_SECRET_KEY": "bench-secret-that-is-long-enough-0123456789abcdef",
    "DATABASE_TLS": "false",
    "POWERTOOLS_SERVICE_NAME": "reservations",
    "POWERTOOLS_METRICS_NAMESPACE": "ReservationsBench",
    "POWERTOOLS_TRACE_DISABLED": "1",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _architecture() -> str:
    return "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"


def _python312() -> str:
    found = subprocess.run(
        ["sh", str(REPO / "scripts" / "find-python312.sh")], capture_output=True, text=True, check=True
    )
    return found.stdout.strip()


def _run(command: list[str], **kwargs: object) -> None:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-4000:]}")


def build_application(arch: str) -> Path:
    """`make build` for this machine's architecture, cached across bench runs."""
    build = WORK / f"build-{arch}"
    cache = WORK / f"cache-{arch}"
    _run(["make", "--no-print-directory", "build", f"ARCH={arch}", f"BUILD_DIR={build}", f"CACHE_DIR={cache}"])
    return build


def build_floor(arch: str, python: str) -> tuple[Path, Path]:
    """The hello-world function and a layer of fastapi + mangum, by the layer recipe."""
    root = WORK / f"floor-{arch}"
    pinned = [
        line
        for line in (REPO / "layers" / "shared" / "requirements.txt").read_text().splitlines()
        if line.split("==")[0].strip().lower() in ("fastapi", "mangum")
    ]
    requirements = "\n".join(pinned) + "\n"
    stamp = root / "requirements.txt"
    if not (stamp.exists() and stamp.read_text() == requirements and (root / "layer" / "python").is_dir()):
        shutil.rmtree(root, ignore_errors=True)
        (root / "function").mkdir(parents=True)
        stamp.write_text(requirements)
        (root / "function" / "handler.py").write_text(FLOOR_HANDLER)
        env = {**os.environ, "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        _run(
            [
                "make",
                "--no-print-directory",
                "-f",
                str(REPO / "layers" / "shared" / "Makefile"),
                "build-SharedLayer",
                f"ARTIFACTS_DIR={root / 'layer'}",
                f"REQUIREMENTS={stamp}",
                "WITH_SHARED_CODE=no",
                f"LAYER_ARCHITECTURE={arch}",
            ],
            env=env,
        )
    return root / "function", root / "layer" / "python"


def strip_bytecode(source: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def runtime_dir() -> Path:
    """A stand-in for /var/runtime: boto3 & co, linked from this environment."""
    folder = WORK / "var-runtime"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name in RUNTIME_PROVIDED:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"{name} is missing: run the bench with the project's venv")
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (folder / source.name).symlink_to(source)
    return folder


def import_seconds(python: str, function: Path, layer: Path, runtime: Path) -> float:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": tempfile.gettempdir(),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.pathsep.join([str(function), str(layer), str(runtime)]),
        "LAMBDA_TASK_ROOT": str(function),
        **FUNCTION_ENV,
    }
    result = subprocess.run(
        [python, "-S", "-P", "-c", IMPORT_HANDLER],
        cwd=function,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"importing {function.name}'s handler failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def import_breakdown(python: str, function: Path, layer: Path, runtime: Path) -> list[tuple[str, float]]:
    """Self time per top-level package of one cold import (python -X importtime)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.pathsep.join([str(function), str(layer), str(runtime)]),
        **FUNCTION_ENV,
    }
    result = subprocess.run(
        [python, "-S", "-P", "-X", "importtime", "-c", "import handler"],
        cwd=function,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    totals: dict[str, float] = {}
    for line in result.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[0].strip().isdigit():
            package = parts[2].strip().split(".")[0]
            totals[package] = totals.get(package, 0.0) + int(parts[0]) / 1000
    return sorted(totals.items(), key=lambda item: -item[1])


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def zipped_bytes(folder: Path) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "layer.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zipped.write(path, path.relative_to(folder.parent))
        return archive.stat().st_size


def _mb(size: int) -> float:
    return round(size / 1_000_000, 1)


def run() -> list[dict]:
    runs = int(os.environ.get("BENCH_RUNS", "5"))
    arch = _architecture()
    python = _python312()
    build = build_application(arch)
    floor_function, floor_layer = build_floor(arch, python)
    runtime = runtime_dir()

    source_only = WORK / f"source-only-{arch}"
    layer_without = strip_bytecode(build / "SharedLayer" / "python", source_only / "layer" / "python")
    floor_without = strip_bytecode(floor_layer, source_only / "floor-layer" / "python")

    targets: dict[str, dict[str, tuple[Path, Path]]] = {
        FLOOR: {"precompiled": (floor_function, floor_layer), "source": (floor_function, floor_without)},
    }
    for name in FUNCTIONS:
        function = build / name
        targets[name] = {
            "precompiled": (function, build / "SharedLayer" / "python"),
            "source": (function, layer_without),
        }

    samples: dict[tuple[str, str], list[float]] = {(t, v): [] for t in targets for v in ("precompiled", "source")}
    # One discarded round warms the page cache; then rounds interleave targets so drift
    # on a shared machine spreads over all of them alike.
    for round_number in range(runs + 1):
        for target, variants in targets.items():
            for variant, (function, layer) in variants.items():
                seconds = import_seconds(python, function, layer, runtime)
                if round_number:
                    samples[(target, variant)].append(seconds)

    def median_ms(target: str, variant: str) -> float:
        return statistics.median(samples[(target, variant)]) * 1000

    floor_ms = median_ms(FLOOR, "precompiled")
    rows = []
    for target in targets:
        precompiled, source = median_ms(target, "precompiled"), median_ms(target, "source")
        ratio = precompiled / floor_ms
        rows.append(
            [
                target,
                round(precompiled),
                round(min(samples[(target, "precompiled")]) * 1000),
                round(source),
                f"{source / precompiled:.1f}x",
                f"{ratio:.2f}x",
                "floor" if target == FLOOR else ("yes" if ratio <= GOAL_RATIO else "no"),
            ]
        )
    cold_start = {
        "title": f"Cold start: `import handler` from the sam build artefacts (python3.12, {arch})",
        "columns": [
            "function",
            "precompiled median ms",
            "precompiled min ms",
            "source-only median ms",
            "bytecode speed-up",
            "vs floor",
            f"within {GOAL_RATIO}x",
        ],
        "rows": rows,
        "notes": (
            f"{runs} fresh processes per cell (medians; one warm-up round discarded), PYTHONDONTWRITEBYTECODE=1, "
            "PYTHONPATH=function:layer:runtime as on Lambda, python3.12 -S. 'source-only' is the same build with "
            "every .pyc removed (a plain sam build). The floor is FastAPI+Mangum alone, built by the same layer "
            "recipe; the functions add Powertools (logger, metrics, X-Ray tracer), pydantic-settings, SQLAlchemy "
            "and the domain package. Interpreter start-up itself is not included."
        ),
    }

    profiled = "AuthFunction"
    breakdown = import_breakdown(python, build / profiled, build / "SharedLayer" / "python", runtime)
    floor_packages = dict(import_breakdown(python, floor_function, floor_layer, runtime))
    where = {
        "title": f"Where {profiled}'s import time goes (self time per top-level package, -X importtime)",
        "columns": ["package", "ms", "in the floor too"],
        "rows": [[name, round(ms, 1), "yes" if name in floor_packages else "no"] for name, ms in breakdown[:12]],
        "notes": (
            "One precompiled cold import; -X importtime adds its own overhead, so read shares, not absolutes. "
            "aws_xray_sdk comes with Powertools' Tracer: at import its recorder builds two botocore X-Ray clients "
            "(botocore, urllib3, dateutil and six in this table are theirs), even with POWERTOOLS_TRACE_DISABLED."
        ),
    }

    layer_dir = build / "SharedLayer" / "python"
    layer_size = folder_bytes(layer_dir)
    largest = max(FUNCTIONS, key=lambda name: folder_bytes(build / name))
    function_size = folder_bytes(build / largest)
    sizes = {
        "title": "Deployment size against Lambda's limits",
        "columns": ["artefact", "unzipped MB", "zipped MB", "share of the 250 MB unzipped limit"],
        "rows": [
            ["SharedLayer", _mb(layer_size), _mb(zipped_bytes(layer_dir)), f"{layer_size / LAMBDA_UNZIPPED_LIMIT:.0%}"],
            [f"largest function ({largest})", _mb(function_size), "-", f"{function_size / LAMBDA_UNZIPPED_LIMIT:.1%}"],
            [
                "function + layer",
                _mb(layer_size + function_size),
                "-",
                f"{(layer_size + function_size) / LAMBDA_UNZIPPED_LIMIT:.0%}",
            ],
        ],
        "notes": (
            f"{arch} build. The layer leaves out what the runtime ships (boto3, botocore, s3transfer, jmespath, "
            "dateutil, six, urllib3) and carries the precompiled bytecode (about a third of its size)."
        ),
    }
    return [cold_start, where, sizes]


def _print(tables: list[dict]) -> None:
    for table in tables:
        print(f"\n## {table['title']}\n")
        widths = [max(len(str(c)), *(len(str(r[i])) for r in table["rows"])) for i, c in enumerate(table["columns"])]
        print(" | ".join(str(c).ljust(w) for c, w in zip(table["columns"], widths, strict=True)))
        print("-|-".join("-" * w for w in widths))
        for row in table["rows"]:
            print(" | ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
        print(f"\n{table['notes']}")


if __name__ == "__main__":
    sys.exit(_print(run()))
