"""Runs a run script the way a user does and reads the run record it wrote.

Example:
    >>> from bench import scripts
    >>> scripts.ROOT.endswith("main") or bool(scripts.ROOT)
    True
"""

from __future__ import annotations

import json
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_recorded(cmd: list[str], label: str, save_dir: str) -> tuple[dict, float]:
    """Runs ``cmd`` from the repository root; returns ``(run record, wall seconds)``.

    Args:
        cmd: The command line (e.g. ``[".../run_local.sh", "nets/x_run.py", ...]``) whose
            ``--save_path`` is ``<save_dir>/model.keras``.
        label: Names the run in the error raised when it fails.
        save_dir: Where the run writes ``model.train.record.json``.

    Raises:
        RuntimeError: The command failed; the message holds the ends of its output.

    Example:
        >>> record, wall = run_recorded(cmd, "tf-2", tmp)  # doctest: +SKIP
    """
    print(f"[bench] {label}: {' '.join(cmd)}", flush=True)
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(
            f"{label} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    with open(os.path.join(save_dir, "model.train.record.json")) as f:
        return json.load(f), wall
