"""Where local development keeps its state (git-ignored). TODO_LOCAL_DIR moves it (the tests of
`make dev` use a directory of their own)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL = Path(os.environ.get("TODO_LOCAL_DIR") or ROOT / ".local")
PGDATA = LOCAL / "pgdata"
DEV_SECRET_FILE = LOCAL / "dev-auth-secret"
SHARED_PYTHON = ROOT / "layers" / "shared" / "python"
