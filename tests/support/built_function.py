"""Runs one function of a `sam build` output the way Lambda does, isolated from this repository.

Not imported by the tests: tests/test_deployment.py runs it as a script with a bare interpreter,

    python3.12 -S -P tests/support/built_function.py < request.json

and PYTHONPATH=<build>/<Function>:<build>/SharedLayer/python, so that only the built code and the
built layer can be imported (-S: no site-packages; -P: not this script's directory). It uses the
standard library only until it imports `app`.

stdin is a JSON object:
    events          payload 2.0 events, sent in order to app.handler
    import_modules  modules to import after the events (must come from the build)
    result_path     where to write the result (stdout belongs to the function's logs)

The result, JSON: each response, the origin of key modules, sys.path, whether cohere was imported
or can be found, every module loaded at the end (and those marked absent: None in sys.modules),
the import time of `app` and the peak resident memory of the process.
"""

import base64
import importlib
import importlib.util
import json
import resource
import sys
import time
import uuid
from typing import Any


class LambdaContext:
    """What Lambda passes as `context` (what Powertools and Mangum read of it)."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = (
            f"arn:aws:lambda:eu-west-1:123456789012:function:{function_name}"
        )
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "2026/01/01/[$LATEST]built-function-test"

    def get_remaining_time_in_millis(self) -> int:
        return 28_000


def module_origin(name: str) -> str | None:
    module = sys.modules.get(name)
    return getattr(module, "__file__", None) if module else None


def main() -> None:
    request = json.load(sys.stdin)
    started = time.perf_counter()
    app = importlib.import_module("app")
    import_seconds = time.perf_counter() - started

    responses = []
    for event in request["events"]:
        handled = time.perf_counter()
        result: dict[str, Any] = app.handler(event, LambdaContext("built-function-test"))
        body = result.get("body") or ""
        if result.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        responses.append(
            {
                "status": result["statusCode"],
                "headers": {k.lower(): v for k, v in (result.get("headers") or {}).items()},
                "body": body,
                "seconds": round(time.perf_counter() - handled, 4),
            }
        )
    cohere_imported_by_requests = "cohere" in sys.modules
    cohere_findable = importlib.util.find_spec("cohere") is not None

    for name in request.get("import_modules", []):
        importlib.import_module(name)

    names = ["app", "todo_backend", "fastapi", "pydantic", "pydantic_core", "sqlalchemy", "pg8000"]
    names += request.get("import_modules", [])
    result_data = {
        "responses": responses,
        "origins": {name: module_origin(name) for name in names},
        "sys_path": sys.path,
        "no_site": "site" not in sys.modules,
        "cohere_imported_by_requests": cohere_imported_by_requests,
        "cohere_findable": cohere_findable,
        "modules": sorted(sys.modules),
        "blocked_modules": sorted(name for name, module in sys.modules.items() if module is None),
        "import_seconds": round(import_seconds, 3),
        "peak_rss_mb": peak_rss_mb(),
    }
    with open(request["result_path"], "w", encoding="utf-8") as output:
        json.dump(result_data, output)


def peak_rss_mb() -> float:
    """This process's own peak RSS. ru_maxrss keeps the parent's high-water mark across fork and
    exec (a large pytest parent would show through); /proc's VmHWM starts anew with exec."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


if __name__ == "__main__":
    main()
