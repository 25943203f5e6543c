"""Size and depth bounds on what the model sends and what is sent back to it."""

import json
from typing import Any

# A tool result sent to the model (and stored) is at most this many bytes of JSON.
RESULT_MAX_BYTES = 8 * 1024
# Tool arguments larger or deeper than this are refused (a tool error) and not stored as sent.
ARGUMENTS_MAX_BYTES = 8 * 1024
ARGUMENTS_MAX_DEPTH = 8
TOOL_NAME_MAX = 100


def json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "replace"))


def depth(value: Any) -> int:
    """How deeply lists and objects nest (a scalar is 0); iterative, so any depth is safe."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        node, level = pending.pop()
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        pending.extend((child, level + 1) for child in children)
    return deepest


def arguments_problem(raw: str, parsed: Any) -> str | None:
    """Why these arguments are refused before any tool sees them, or None."""
    if len(raw.encode("utf-8", "replace")) > ARGUMENTS_MAX_BYTES:
        return f"arguments larger than {ARGUMENTS_MAX_BYTES} bytes"
    if parsed is not None and depth(parsed) > ARGUMENTS_MAX_DEPTH:
        return f"arguments nested deeper than {ARGUMENTS_MAX_DEPTH} levels"
    return None


def bounded_result(result: dict[str, Any]) -> dict[str, Any]:
    """The result in at most RESULT_MAX_BYTES: lists are cut short (`"truncated": true`)."""
    if json_size(result) <= RESULT_MAX_BYTES:
        return result
    lists = [key for key, value in result.items() if isinstance(value, list)]
    if lists:
        key = max(lists, key=lambda name: json_size(result[name]))
        items = result[key]
        low, high = 0, len(items)
        # The longest prefix that fits.
        while low < high:
            middle = (low + high + 1) // 2
            if json_size({**result, key: items[:middle], "truncated": True}) <= RESULT_MAX_BYTES:
                low = middle
            else:
                high = middle - 1
        shortened = {**result, key: items[:low], "truncated": True}
        if json_size(shortened) <= RESULT_MAX_BYTES:
            return shortened
    return {"error": f"the result was larger than {RESULT_MAX_BYTES} bytes", "truncated": True}
