"""The Lambda functions whose HTTP routes the local server and the OpenAPI document cover.

One line per function with HTTP routes: its name and the module holding its ASGI `app`. A module
that does not exist yet (a function being written on another branch) is skipped, so adding a
function is adding its line here. Order matters only where two functions' path patterns both
match a path: the earlier function serves it.
"""

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

HTTP_FUNCTIONS: tuple[tuple[str, str], ...] = (
    ("tasks", "functions.tasks.app"),
    ("chat", "functions.chat.app"),
    ("mcp", "functions.mcp.app"),
)


@dataclass(frozen=True)
class HttpFunction:
    name: str
    module: str
    app: Any


def module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package (functions/<name>/ not there)
        return False


def load_http_functions() -> list[HttpFunction]:
    """Every function of HTTP_FUNCTIONS whose module exists, with its app imported."""
    return [
        HttpFunction(name, module, importlib.import_module(module).app)
        for name, module in HTTP_FUNCTIONS
        if module_exists(module)
    ]
