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

from pocketflow_tf import atomic_io, cli_errors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Exit statuses of an ``auto`` run that leave a record to read: success, and a missed
#: target (``cli_errors.EXIT_TARGET_NOT_MET``: a result, not a failure).
AUTO_STATUSES = (0, cli_errors.EXIT_TARGET_NOT_MET)


def run_recorded(
    cmd: list[str],
    label: str,
    save_dir: str,
    *,
    accept: tuple[int, ...] = (0,),
    log_path: str | None = None,
) -> tuple[dict, float]:
    """Runs ``cmd`` from the repository root; returns ``(run record, wall seconds)``.

    Args:
        cmd: The command line (e.g. ``[".../run_local.sh", "nets/x_run.py", ...]``) whose
            ``--save_path`` is ``<save_dir>/model.keras``.
        label: Names the run in the error raised when it fails.
        save_dir: Where the run writes ``model.train.record.json``.
        accept: Exit statuses that still leave a record to read (``auto`` exits with
            ``EXIT_TARGET_NOT_MET`` when its target was missed: a result, not a failure).
        log_path: Where to keep the run's output (progress-bar lines dropped), whatever its
            status; ``None`` keeps nothing.

    Raises:
        RuntimeError: The command failed; the message holds the ends of its output.

    Example:
        >>> record, wall = run_recorded(cmd, "tf-2", tmp)  # doctest: +SKIP
    """
    print(f"[bench] {label}: {' '.join(cmd)}", flush=True)
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - start
    if log_path is not None:
        text = "\n".join(
            line
            for line in (proc.stdout + "\n" + proc.stderr).splitlines()
            if "Calibration:" not in line and not line.startswith(("I0000", "W0000"))
        )
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        atomic_io.write_text(log_path, text + "\n")
    if proc.returncode not in accept:
        raise RuntimeError(
            f"{label} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    with open(os.path.join(save_dir, "model.train.record.json")) as f:
        return json.load(f), wall
