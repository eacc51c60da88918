"""Run a function's handler the way the Lambda Python runtime does, from built artefacts.

Started by tests/infra in a fresh ``python3.12 -S -P`` process (no site-packages, no
script folder on sys.path) with ``PYTHONPATH=<function dir>:<layer>/python:<runtime dir>``
- the order of /var/task, /opt/python and /var/runtime on Lambda - so only the built
function, the built layer, what the Lambda runtime itself ships (boto3 & co) and the
standard library can be imported.

stdin: {"handler": "handler.handler", "function_name": ..., "timeout": 10, "events": [...]}
stdout: any output of the handler, then one line ``RESULT <json>`` with the import
time, each event's result (or error) and the modules loaded from anywhere else.
"""

import importlib
import json
import os
import sys
import sysconfig
import time
import traceback
import uuid

MARKER = "RESULT "


class LambdaContext:
    def __init__(self, function_name: str, timeout: float, memory: int) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.memory_limit_in_mb = memory
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "2026/11/24/[$LATEST]0123456789abcdef"
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def foreign_modules() -> list[str]:
    """Modules whose file lies outside PYTHONPATH's folders and the standard library."""
    roots = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    roots += [os.path.abspath(sysconfig.get_paths()[key]) for key in ("stdlib", "platstdlib")]
    outside = []
    driver = sys.modules.get("__main__")
    for name, module in list(sys.modules.items()):
        # This driver is __main__; importing multiprocessing (boto3 does) aliases it as __mp_main__.
        path = getattr(module, "__file__", None) if module is not driver else None
        if path and not any(os.path.abspath(path).startswith(root + os.sep) for root in roots):
            outside.append(f"{name} ({path})")
    return sorted(outside)


def main() -> None:
    request = json.load(sys.stdin)
    module_name, attribute = request["handler"].rsplit(".", 1)
    started = time.perf_counter()
    handler = getattr(importlib.import_module(module_name), attribute)
    init_seconds = time.perf_counter() - started
    results = []
    for event in request["events"]:
        context = LambdaContext(request["function_name"], request.get("timeout", 10), request.get("memory", 512))
        try:
            # Lambda serialises the result to JSON: a result that only works in-process fails here too.
            results.append({"ok": json.loads(json.dumps(handler(event, context)))})
        except Exception as error:
            results.append({"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()})
    outcome = {"init_seconds": init_seconds, "results": results, "foreign_modules": foreign_modules()}
    sys.stdout.write("\n" + MARKER + json.dumps(outcome) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
