"""A run killed with SIGKILL after training (during the save or the export) retrains nothing.

Each case runs the real run script twice in child processes on a small Fashion-MNIST subset:
the first child replaces ``atomic_io.atomic_path`` (in its own memory only, the library has no
test hook) with a wrapper that kills the process with SIGKILL once the target output's
temporary file is written and before it is renamed; the second child is the same command,
unpatched.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pocketflow_tf import atomic_io, model_io

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_fmnist = pytest.mark.skipif(not os.path.exists(FMNIST), reason="dataset-fashion-mnist")

#: The child: argv[1] names the output whose atomic write is killed ("-" for none), the rest
#: are the run script's flags.
CHILD = textwrap.dedent(
    """
    import contextlib, os, signal, sys

    from pocketflow_tf import atomic_io

    kill_at = sys.argv.pop(1)
    real_atomic_path = atomic_io.atomic_path

    @contextlib.contextmanager
    def atomic_path(path, suffix=""):
        with real_atomic_path(path, suffix) as tmp:
            yield tmp
            if os.path.basename(os.fspath(path)) == kill_at:
                # Written to the temporary file, not yet renamed: the worst moment.
                print("KILLING during the write of", path, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    atomic_io.atomic_path = atomic_path

    from pocketflow_tf.app import cli

    cli.main("convnet_at_fmnist")
    """
)


def _run(tmp_path, kill_at: str) -> subprocess.CompletedProcess:
    flags = [
        "--nb_train_samples=512",
        "--nb_epochs_rat=0.14",  # 2 of the recipe's 15 epochs
        "--export_modes=float",
        "--num_verify=200",
        "--latency_runs=10",
        "--verbose=2",  # Keras prints one "Epoch i/n" line per epoch trained
        f"--save_path={tmp_path / 'm' / 'model.keras'}",
        f"--log_dir={tmp_path / 'logs'}",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-c", CHILD, kill_at, *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _epoch_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("Epoch ")]


def _hidden(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


@needs_fmnist
@pytest.mark.parametrize("kill_at", ["model.keras", "model.float.tflite"], ids=["save", "export"])
def test_rerun_after_kill_trains_no_epoch(tmp_path, kill_at):
    out_dir = tmp_path / "m"
    killed = _run(tmp_path, kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "KILLING" in killed.stdout
    assert _epoch_lines(killed.stdout) == ["Epoch 1/2", "Epoch 2/2"], killed.stdout[-3000:]
    # The kill left what a real one leaves: the backups and the temporary file of the write.
    assert os.listdir(out_dir / "model.keras.ckpt" / "backup")
    leftover = _hidden(out_dir)
    assert len(leftover) == 1 and leftover[0].startswith(f".{kill_at}."), leftover
    assert not os.path.exists(out_dir / kill_at)
    trained = None
    if kill_at != "model.keras":  # the save had finished: keep the trained weights to compare
        trained = model_io.load_model(out_dir / "model.keras").get_weights()

    rerun = _run(tmp_path, "-")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _epoch_lines(rerun.stdout) == [], rerun.stdout[-3000:]
    with open(out_dir / "model.train.record.json") as f:
        rec = json.load(f)
    assert rec["metrics"]["epochs"] == 2 and rec["metrics"]["epochs_run"] == 0
    assert all(not v for v in rec["sections"].get("history", {}).values())
    for name in ("model.keras", "model.float.tflite", "model.float.tflite.sha256"):
        assert os.path.exists(out_dir / name), name
    art = rec["artifacts"]["tflite_float"]
    assert atomic_io.sha256_file(art["path"]) == art["sha256"]
    if trained is not None:
        restored = model_io.load_model(out_dir / "model.keras").get_weights()
        for a, b in zip(trained, restored, strict=True):
            np.testing.assert_array_equal(a, b)
    # The model saved is the one trained before the kill: its accuracy on the test split is
    # the validation accuracy the killed run printed after its last epoch.
    val_acc = float(re.findall(r"val_acc: ([0-9.]+)", killed.stdout)[-1])
    assert rec["metrics"]["test_acc"] == pytest.approx(val_acc, abs=2e-4)
    # The backups are spent once everything is written, and the killed write's temporary
    # file was removed by the rerun's write of the same output.
    assert not os.path.exists(out_dir / "model.keras.ckpt")
    assert _hidden(out_dir) == []


def test_stale_temp_files_are_removed_but_not_a_live_writers(tmp_path):
    target = tmp_path / "model.keras"
    host = atomic_io._HOST
    # A writer that was killed: its pid is gone (a pid this large is never handed out).
    dead = tmp_path / f".model.keras.{host}-4999999.abcd_123.keras"
    # A writer of this host that is alive (this process's parent) and one of another host.
    live = tmp_path / f".model.keras.{host}-{os.getppid()}.zyxw9876.keras"
    foreign = tmp_path / ".model.keras.otherhost-12.qwertyui.keras"
    # Not this output's pattern: another output, another suffix, a user's hidden file.
    others = [
        tmp_path / f".model.keras3.keras.{host}-4999999.abcd_123.keras",
        tmp_path / f".model.keras.{host}-4999999.abcd_123.tmp",
        tmp_path / ".model.keras.notes",
    ]
    for p in [dead, live, foreign, *others]:
        p.write_bytes(b"x")
    os.makedirs(tmp_path / f".model.keras.{host}-4999998.folder12.keras")  # a SavedModel-like
    atomic_io.write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(_hidden(tmp_path)) == sorted(p.name for p in [live, foreign, *others])
    # A foreign host's file is only removed once it is older than any write takes.
    old = os.path.getmtime(foreign) - atomic_io.FOREIGN_TEMP_MAX_AGE_S - 60
    os.utime(foreign, (old, old))
    assert atomic_io.remove_stale_temps(target) == [str(foreign)]
