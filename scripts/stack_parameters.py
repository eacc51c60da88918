"""Print the outputs of a deployed data stack as `sam deploy --parameter-overrides` pairs.

    sam deploy --config-env dev --parameter-overrides \
        "$(.venv/bin/python scripts/stack_parameters.py reservations-data-dev) Stage=dev"

infra/data-stack.yaml names its outputs after template.yaml's parameters, so every
output that is a parameter of template.yaml becomes `Name=value`; the others are left
out. Needs AWS credentials for the stack's account and region (the usual boto3 chain).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def template_parameters(template: Path) -> set[str]:
    from reservations_dev.template import load_template

    return set((load_template(template).get("Parameters") or {}).keys())


def overrides(outputs: dict[str, str], parameters: set[str]) -> str:
    return " ".join(f"{key}={shlex.quote(value)}" for key, value in sorted(outputs.items()) if key in parameters)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stack_name", help="name of the deployed infra/data-stack.yaml stack")
    parser.add_argument("--region", default=None)
    parser.add_argument("--template", type=Path, default=REPO / "template.yaml")
    args = parser.parse_args(argv)

    import boto3

    stacks = boto3.client("cloudformation", region_name=args.region).describe_stacks(StackName=args.stack_name)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks["Stacks"][0].get("Outputs", [])}
    print(overrides(outputs, template_parameters(args.template)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
