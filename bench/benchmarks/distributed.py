"""Benchmark ``distributed``: one worker vs two on the convnet / Fashion-MNIST recipe.

Each configuration is the real command line, ``./run_local.sh -n N --backend B
nets/convnet_at_fmnist_run.py`` with the same number of epochs (trained from scratch on
the full 60k training images, no export), and reads the run record it writes:

* ``acc``: test accuracy after the epochs; ``curve_val_acc`` / ``curve_loss``: per epoch;
* ``samples_per_s``: training images per second over all workers (validation excluded);
  on a 2-core machine two workers share the same two cores, so expect little gain;
* ``bytes_per_step``: gradient bytes one worker sends per step (float32 all-reduce, or
  the packed codes and scales of ECQ-SGD); ``exchange_ratio``: float32 bytes / sent bytes;
* ``lo_bytes_per_step``: what the loopback interface actually carried during the run
  (``/proc/net/dev``, all workers, both directions, every protocol overhead and the
  validation passes included) per training step; run the benchmark on an otherwise idle
  machine, since other loopback traffic counts too.

Configurations: ``1`` (one process), ``<backend>-2`` (two workers, float32 exchange),
``<backend>-2-ecq<bits>`` (two workers, ECQ-SGD) and ``<backend>-hosts2`` (optionally
``-ecq<bits>``): two loopback "hosts", 127.0.0.1 and 127.0.0.2, one worker each, started by
``./run_cluster.sh --hosts 127.0.0.1:1,127.0.0.2:1`` -- the multi-host path (per-host
``TF_CONFIG`` / Gloo rendezvous across addresses), on one machine. Horovod runs in the TF 2.15
lane (``tools/horovod_lane.sh``, prepared on first use).

Environment: ``PFTF_DIST_CONFIGS`` (default ``1,tf-2,tf-2-ecq4,horovod-2,horovod-2-ecq4``),
``PFTF_DIST_EPOCHS`` (default 3).

Example:
    >>> from bench.benchmarks import distributed
    >>> distributed.parse_config("tf-2-ecq4"), distributed.parse_config("1")
    (('tf', 2, 4), ('single', 1, 0))
    >>> distributed.parse_config("horovod-hosts2"), distributed.loopback_hosts(2)
    (('horovod', 2, 0), '127.0.0.1:1,127.0.0.2:1')
"""

from __future__ import annotations

import json
import os
import tempfile

from bench import results_io, scripts
from pocketflow_tf import errors
from pocketflow_tf.nets import recipe

COMMAND = "python -m bench.run distributed"
DEFAULT_CONFIGS = "1,tf-2,tf-2-ecq4,horovod-2,horovod-2-ecq4"
ROOT = scripts.ROOT


def parse_config(config: str) -> tuple[str, int, int]:
    """``"tf-2-ecq4"`` -> ``("tf", 2, 4)``: backend, workers, ECQ bits (0: float32).

    Example:
        >>> parse_config("tf-two")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `PFTF_DIST_CONFIGS`: 'tf-two'. Accepted: 1, <tf|horovod>-<workers> or <tf|horovod>-<workers>-ecq<bits>, e.g. tf-2-ecq4, or <tf|horovod>-hosts<n>[-ecq<bits>] for n loopback hosts, e.g. tf-hosts2.
    """
    if config == "1":
        return "single", 1, 0
    parts = config.split("-")
    if len(parts) > 1 and parts[1].startswith("hosts"):
        parts[1] = parts[1][len("hosts") :]
    ok = len(parts) in (2, 3) and parts[0] in ("tf", "horovod") and parts[1].isdigit()
    ok = ok and int(parts[1]) >= 1
    if ok and len(parts) == 3:
        ok = parts[2].startswith("ecq") and parts[2][3:].isdigit()
    if not ok:
        raise errors.InvalidArgumentError(
            "PFTF_DIST_CONFIGS",
            config,
            "1, <tf|horovod>-<workers> or <tf|horovod>-<workers>-ecq<bits>, e.g. tf-2-ecq4, "
            "or <tf|horovod>-hosts<n>[-ecq<bits>] for n loopback hosts, e.g. tf-hosts2",
        )
    bits = int(parts[2][3:]) if len(parts) == 3 else 0
    return parts[0], int(parts[1]), bits


def is_hosts(config: str) -> bool:
    """Whether ``config`` runs one worker on each of several loopback "hosts".

    Example:
        >>> is_hosts("tf-hosts2-ecq4"), is_hosts("tf-2")
        (True, False)
    """
    parts = config.split("-")
    return len(parts) > 1 and parts[1].startswith("hosts")


def loopback_hosts(n: int) -> str:
    """The ``--hosts`` value of ``n`` loopback "hosts" with one worker each (Linux routes all
    of 127/8 to ``lo``, so each address is a distinct host to the launchers).

    Example:
        >>> loopback_hosts(3)
        '127.0.0.1:1,127.0.0.2:1,127.0.0.3:1'
    """
    return ",".join(f"127.0.0.{i + 1}:1" for i in range(n))


def loopback_bytes() -> int | None:
    """Bytes received so far on the loopback interface (``None`` where unreadable).

    Example:
        >>> isinstance(loopback_bytes(), (int, type(None)))
        True
    """
    try:
        with open("/proc/net/dev") as f:
            for line in f:
                name, _, counters = line.partition(":")
                if name.strip() == "lo":
                    return int(counters.split()[0])
    except OSError:
        return None
    return None


def _command(
    backend: str, workers: int, bits: int, epochs: int, save: str, hosts: bool = False
) -> list[str]:
    full = recipe.get_recipe("convnet_at_fmnist").train.epochs
    if hosts:
        cmd = [os.path.join(ROOT, "run_cluster.sh"), "--hosts", loopback_hosts(workers)]
        cmd += ["--backend", backend]
    else:
        cmd = [os.path.join(ROOT, "run_local.sh")]
        if workers > 1:
            cmd += ["-n", str(workers), "--backend", backend]
    cmd += [
        "nets/convnet_at_fmnist_run.py",
        f"--nb_epochs_rat={epochs / full:.6f}",
        "--export_modes=",
        f"--save_path={save}",
        f"--log_dir={os.path.join(os.path.dirname(save), 'logs')}",
    ]
    if bits:
        cmd.append(f"--ecq_bits={bits}")
    return cmd


def run() -> list[dict]:
    """Runs every configuration; one record each.

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    epochs = int(os.environ.get("PFTF_DIST_EPOCHS", "3"))
    configs = [c for c in os.environ.get("PFTF_DIST_CONFIGS", DEFAULT_CONFIGS).split(",") if c]
    parsed = [parse_config(c) for c in configs]  # bad names fail before any training
    recs = []
    for config, (backend, workers, bits) in zip(configs, parsed, strict=True):
        with tempfile.TemporaryDirectory(prefix="pftf-dist-") as tmp:
            save = os.path.join(tmp, "model.keras")
            cmd = _command(backend, workers, bits, epochs, save, hosts=is_hosts(config))
            lo_start = loopback_bytes()
            record, wall = scripts.run_recorded(cmd, f"distributed {config}", tmp)
            lo_end = loopback_bytes()
        metrics, sections = record["metrics"], record["sections"]
        dist = sections.get("distributed", {})
        history = sections.get("history", {})
        batch = sections["learner"]["train"]["batch_size"]
        # Steps per epoch on the 60k Fashion-MNIST training images (the short last batch is
        # dropped with several workers, and counted with one).
        per_epoch = 60000 // (batch * workers) if workers > 1 else -(-60000 // batch)
        steps = metrics["epochs"] * per_epoch
        lo = None if lo_start is None or lo_end is None else (lo_end - lo_start) / steps
        rec = results_io.make_record(
            model="convnet",
            dataset="fmnist",
            method=f"workers-{config}",
            setting=f"epochs={epochs}",
            acc=round(metrics["test_acc"], 4),
            wall_s=round(wall, 1),
            command=f"PFTF_DIST_CONFIGS={config} PFTF_DIST_EPOCHS={epochs} {COMMAND}",
            backend=backend,
            workers=workers,
            hosts=workers if is_hosts(config) else 1,
            ecq_bits=bits,
            samples_per_s=metrics.get("train_samples_per_s"),
            bytes_per_step=dist.get("bytes_per_step"),
            float_bytes_per_step=dist.get("float_bytes_per_step"),
            exchange_ratio=(
                round(dist["float_bytes_per_step"] / dist["bytes_per_step"], 2)
                if dist.get("bytes_per_step")
                else None
            ),
            lo_bytes_per_step=None if lo is None or workers == 1 else round(lo),
            steps=steps,
            curve_val_acc=[round(v, 4) for v in history.get("val_acc", [])],
            curve_loss=[round(v, 4) for v in history.get("loss", [])],
            epochs=epochs,
        )
        print(f"[bench] {json.dumps(rec)}", flush=True)
        recs.append(rec)
    return recs
