"""Emulates Lambda SnapStart for one function, in a fresh process (run as a script by
tests/test_snapstart.py and benchmarks/bench.py):

    python tests/support/snapstart_probe.py < request.json

stdin: {"module": ..., "events": [payload 2.0 events], "result_path": ..., "hooks": true}. The
function module is imported (init) and the sockets it opened are listed, the runtime's before-
snapshot hooks run in reverse order of registration as Lambda runs them, then the sockets still open
are listed (what the snapshot would hold), the after-restore hooks run in order, and the events are
sent to `module.handler` (HTTP or not). With "hooks": false it is a plain cold start. stdout belongs
to the function (its logs and EMF metrics); the result goes to result_path as JSON. Standard library
only until the import, so that it can run with `python -S` and only a build output on PYTHONPATH.
"""

import importlib
import json
import os
import sys
import time
from typing import Any


class LambdaContext:
    function_name = "snapstart-probe"
    function_version = "1"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:snapstart-probe:1"
    log_group_name = "/aws/lambda/snapstart-probe"
    log_stream_name = "2026/01/01/[1]probe"

    def __init__(self, request_id: str) -> None:
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def open_sockets() -> list[str]:
    """Sockets of this process, but the event loop's own self-pipe (a socketpair that connects
    the process to itself, created when Mangum sets up its loop)."""
    import asyncio

    loop = asyncio.get_event_loop_policy().get_event_loop()
    own = {
        sock.fileno()
        for sock in (getattr(loop, "_ssock", None), getattr(loop, "_csock", None))
        if sock is not None
    }
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:") and int(fd) not in own:
            found.append(f"{fd} -> {target}")
    return found


def main() -> None:
    request = json.load(sys.stdin)
    hooks = request.get("hooks", True)
    started = time.process_time()
    module = importlib.import_module(request["module"])
    init_cpu = time.process_time() - started
    sockets_at_init = open_sockets() if hooks else []

    before: list = []
    after: list = []
    if hooks:
        from snapshot_restore_py import get_after_restore, get_before_snapshot

        before, after = get_before_snapshot(), get_after_restore()
    started = time.process_time()
    warm_up = None
    for function, args, kwargs in reversed(before):
        outcome = function(*args, **kwargs)
        warm_up = getattr(outcome, "sent", warm_up)
    hooks_cpu = time.process_time() - started
    sockets_at_snapshot = open_sockets() if hooks else []
    modules_at_snapshot = sorted(name for name in ("cohere", "httpx") if name in sys.modules)

    started = time.process_time()
    for function, args, kwargs in after:
        function(*args, **kwargs)
    restore_cpu = time.process_time() - started

    responses = []
    for index, event in enumerate(request["events"]):
        cpu, wall = time.process_time(), time.perf_counter()
        response = module.handler(event, LambdaContext(f"probe-{index}"))
        responses.append(
            {
                # A non-HTTP function (the scheduled reminders) returns its own outcome.
                "status": response.get("statusCode"),
                "body": response.get("body") if "statusCode" in response else response,
                "cpu_seconds": time.process_time() - cpu,
                "wall_seconds": time.perf_counter() - wall,
                # Since the process started (interpreter start-up included), and the epoch time.
                "process_cpu_seconds": time.process_time(),
                "answered_at": time.time(),
            }
        )
    result: dict[str, Any] = {
        "init_cpu_seconds": init_cpu,
        "hooks_cpu_seconds": hooks_cpu,
        "restore_cpu_seconds": restore_cpu,
        "hooks_registered": [len(before), len(after)],
        "warm_up_requests": warm_up,
        "sockets_at_init": sockets_at_init,
        "sockets_at_snapshot": sockets_at_snapshot,
        "modules_at_snapshot": modules_at_snapshot,
        "responses": responses,
    }
    with open(request["result_path"], "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main()
