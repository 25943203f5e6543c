"""Where local development keeps its state (git-ignored)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ROOT / ".local"
PGDATA = LOCAL / "pgdata"
DEV_SECRET_FILE = LOCAL / "dev-auth-secret"
SHARED_PYTHON = ROOT / "layers" / "shared" / "python"
