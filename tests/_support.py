"""Helpers shared by tests (imported as `from _support import ...`)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

__all__ = ["ROOT", "SHARED", "run_cli", "clean_env"]


def clean_env(**extra: str) -> dict:
    """The current environment without FEDCHAIN_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDCHAIN_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_cli(args: list[str], *, env: dict | None = None, cwd=None, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the `fedchain` CLI in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "fedchain.cli.main", *args], env=env or clean_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
