#!/usr/bin/env python3
"""`make audit`: pip-audit of every lock, saying plainly when no audit could be made.

    audit.py LOCK...        (run by `make audit` with .tools/audit's python)

pip-audit reads each lock without installing anything (``--disable-pip --require-hashes``)
and asks a vulnerability service about every pinned version: PyPI's JSON API first (its
default, `/pypi/<name>/<version>/json`), then OSV. The hashes are checked for presence
only: pip checks them when it installs. A package the
service cannot answer for is only *skipped* - pip-audit still exits 0 and says "No known
vulnerabilities found" - and a mirror or proxy that serves packages but not PyPI's
per-release JSON makes every package skipped. So here a service counts only when it
audited every package of every lock; otherwise the next one is tried.

Exit status:
  0  every package of every lock audited, no known vulnerability;
  1  known vulnerabilities (listed, with the versions that fix them), or pip-audit failed
     on a lock for a reason other than the network (an entry without a hash, say);
  2  no service could be reached or could audit everything: one line says so
     ("pip-audit: vulnerability service unreachable; audit not run"), then why.
     Not 0: an audit that did not run must not read as a clean one.

AUDIT_SERVICES (default "pypi osv") chooses the services and their order, AUDIT_TIMEOUT
(seconds, default 15) pip-audit's socket timeout, PIP_AUDIT the command (default: this
python's ``-m pip_audit``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field

UNREACHABLE = "pip-audit: vulnerability service unreachable; audit not run"
NETWORK_ERRORS = (
    "ConnectionError",
    "NameResolutionError",
    "MaxRetryError",
    "Max retries exceeded",
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "SSLError",
    "ProxyError",
    "ServiceError",
    "ConnectionRefused",
    "Temporary failure in name resolution",
)


class ServiceFailed(Exception):
    """The service could not audit a lock: the next service is tried."""


class AuditFailed(Exception):
    """pip-audit failed on a lock for a reason that is not the service: reported, exit 1."""


@dataclass
class LockResult:
    lock: str
    audited: int = 0
    vulnerabilities: list[str] = field(default_factory=list)


def pip_audit_command() -> list[str]:
    configured = os.environ.get("PIP_AUDIT")
    return shlex.split(configured) if configured else [sys.executable, "-m", "pip_audit"]


def audit_lock(lock: str, service: str) -> LockResult:
    command = [
        *pip_audit_command(),
        "--requirement",
        lock,
        "--require-hashes",
        "--disable-pip",
        "--vulnerability-service",
        service,
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--timeout",
        os.environ.get("AUDIT_TIMEOUT", "15"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    try:
        report = json.loads(result.stdout)
        dependencies = report["dependencies"]
    except (ValueError, KeyError, TypeError):
        errors = result.stderr.strip().splitlines()
        last = errors[-1] if errors else f"exit status {result.returncode}, no output"
        if any(marker in result.stderr for marker in NETWORK_ERRORS):
            raise ServiceFailed(f"cannot reach it ({last[:300]})") from None
        raise AuditFailed(f"pip-audit failed on {lock}: {last[:500]}") from None
    skipped = [d for d in dependencies if d.get("skip_reason")]
    if skipped:
        raise ServiceFailed(
            f"{len(skipped)} of {len(dependencies)} packages of {lock} not audited (first: {skipped[0]['skip_reason']})"
        )
    found = LockResult(lock, audited=len(dependencies))
    for dependency in dependencies:
        for vulnerability in dependency.get("vulns", []):
            aliases = ", ".join(vulnerability.get("aliases", []))
            fixed = ", ".join(vulnerability.get("fix_versions", [])) or "no fixed version yet"
            found.vulnerabilities.append(
                f"{dependency['name']}=={dependency['version']}: {vulnerability['id']}"
                f"{f' ({aliases})' if aliases else ''}, fixed in {fixed}"
            )
    return found


def main(locks: list[str]) -> int:
    if not locks:
        print("usage: audit.py LOCK...", file=sys.stderr)
        return 2
    reasons: list[str] = []
    for service in os.environ.get("AUDIT_SERVICES", "pypi osv").split():
        try:
            results = [audit_lock(lock, service) for lock in locks]
        except ServiceFailed as failure:
            reasons.append(f"{service}: {failure}")
            continue
        except AuditFailed as failure:
            print(f"pip-audit ({service}): {failure}", file=sys.stderr)
            return 1
        total = sum(len(r.vulnerabilities) for r in results)
        for r in results:
            state = f"{len(r.vulnerabilities)} known vulnerabilities" if r.vulnerabilities else "no known vulnerability"
            print(f"{r.lock}: {r.audited} packages audited, {state}")
            for line in r.vulnerabilities:
                print(f"  {line}")
        packages = sum(r.audited for r in results)
        print(f"pip-audit ({service}): {packages} packages in {len(results)} locks, {total} known vulnerabilities")
        return 1 if total else 0
    print(UNREACHABLE, file=sys.stderr)
    for reason in reasons:
        print(f"  {reason}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
