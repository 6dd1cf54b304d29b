"""One worker of the multi-worker tests; started N times by the launcher, never by pytest.

Usage: ``python tests/dist_worker.py OUT_DIR SCENARIO``

* ``learners``: on real Fashion-MNIST (1024 training images), trains a small seeded
  convnet for one epoch with float and with 8-bit ECQ-SGD exchange, then with
  ``full-prec``, ``full-prec`` with ECQ-SGD (4 bits), ``weight-sparse``,
  ``uniform`` (QAT) and ``channel`` (L1 channel pruning, chosen on the chief), each for a
  few epochs;
* ``shards``: each worker reads only its shard of the image folder ``OUT_DIR/images``
  (:func:`pocketflow_tf.shards.image_folder_shard`) and trains ``full-prec`` on it for
  two epochs, recording its files and the images it decoded;
* ``resume``: ``full-prec`` for 4 epochs with per-epoch backups in ``OUT_DIR/ckpt``; when
  ``OUT_DIR/kill-me`` exists, worker 1 deletes it and kills itself with SIGKILL as the
  third epoch starts; ``resume-apart``: the same with a backup folder per worker
  (``OUT_DIR/ckpt-rank<r>``), as on hosts that share no folder.

Each worker writes ``OUT_DIR/<name>.rank<r>.npz`` (final weights, loss curve, backend
facts) so the test can compare the ranks: :func:`launch` and :func:`load` are the tests'
side of it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time

import numpy as np

from pocketflow_tf import datasets, distributed, ecq, launcher, training
from pocketflow_tf.compat import keras


def launch(backend: str, out_dir, scenario: str, grace_s: float = 15.0, hosts: str | None = None):
    """Runs ``scenario`` on two workers of ``backend`` (on the ``hosts`` of this machine,
    e.g. ``"127.0.0.1:1,127.0.0.2:1"``, when given): ``(status, output, seconds)``."""
    command = [sys.executable, os.path.abspath(__file__), str(out_dir), scenario]
    start = time.monotonic()
    out = io.StringIO()
    if backend == "tf" and hosts:
        rc = launcher.launch_hosts(command, hosts, grace_s=grace_s, out=out)
    elif backend == "tf":
        rc = launcher.launch_tf(command, 2, grace_s=grace_s, out=out)
    elif hosts:
        rc = launcher.launch_horovod_hosts(command, hosts, out=out)
    else:
        rc = launcher.launch_horovod(command, 2, out=out)
    return rc, out.getvalue(), time.monotonic() - start


def update_gap(out_dir, reference: str, other: str) -> tuple[float, float]:
    """``(|reference - initial|, |other - reference|)`` over the kernels of rank 0's two
    runs (same seed, same initial weights)."""
    import numpy as np

    ref, oth = (np.load(os.path.join(out_dir, f"{n}.rank0.npz")) for n in (reference, other))
    keys = [k for k in ref.files if k.startswith("arr_") and ref[k].ndim > 1]

    def flat(z, names):
        return np.concatenate([z[n].ravel() for n in names])

    start = flat(ref, [k.replace("arr_", "init_") for k in keys])
    a, b = flat(ref, keys), flat(oth, keys)
    return float(np.linalg.norm(a - start)), float(np.linalg.norm(b - a))


def load(out_dir, name: str):
    """``([rank-0 weights, rank-1 weights], rank-0 loss curve, rank-0 backend facts)``."""
    import numpy as np

    ranks = [np.load(os.path.join(out_dir, f"{name}.rank{r}.npz")) for r in (0, 1)]
    weights = [[z[k] for k in z.files if k.startswith("arr_")] for z in ranks]
    return weights, ranks[0]["loss"], json.loads(str(ranks[0]["info"]))


def main(out_dir: str, scenario: str) -> None:
    backend = distributed.from_environment()  # first, before TensorFlow runs anything
    import pocketflow_tf.learners  # noqa: F401  (registers the learners)
    from pocketflow_tf import learner

    data = datasets.load_fashion_mnist().subset(n_train=1024, n_test=256)
    os.makedirs(out_dir, exist_ok=True)

    def build():
        keras.utils.set_random_seed(0)
        inp = keras.Input(data.input_shape)
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inp)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inp, keras.layers.Dense(10)(x))

    def fit(name, learner_name, epochs, callbacks=(), **options):
        cfg = training.TrainConfig(epochs=epochs, batch_size=32, learning_rate=0.05)
        lrn = learner.get_learner_class(learner_name)(cfg, backend=backend, verbose=0, **options)
        model = lrn.fit(
            build(),
            data.x_train,
            data.y_train,
            validation_data=(data.x_test, data.y_test),
            callbacks=list(callbacks),
        )
        np.savez(
            os.path.join(out_dir, f"{name}.rank{backend.rank}.npz"),
            *model.get_weights(),
            **{f"init_{i}": w for i, w in enumerate(build().get_weights())},
            loss=np.array(lrn.history.history["loss"]),
            info=json.dumps({**backend.describe(), "steps_per_epoch": lrn.steps_per_epoch}),
        )
        backend.codec = None  # the next learner starts without the previous codec

    if scenario == "learners":
        # One epoch each of float and 8-bit exchange: nearly the same update (scaling check).
        fit("float-1", "full-prec", 1)
        fit("ecq8-1", "full-prec", 1, ecq=ecq.ECQConfig(bits=8, bucket_size=64))
        fit("full-prec", "full-prec", 3)
        fit("ecq", "full-prec", 3, ecq=ecq.ECQConfig(bits=4, bucket_size=128))
        fit("weight-sparse", "weight-sparse", 2, ws_prune_ratio=0.5)
        fit("uniform", "uniform", 2)
        fit("channel", "channel", 2, cp_uniform_preserve_ratio=0.5, cp_criterion="l1")
    elif scenario in ("resume", "resume-apart"):
        marker = os.path.join(out_dir, "kill-me")

        class KillAtThirdEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == 2 and backend.rank == 1 and os.path.exists(marker):
                    os.remove(marker)
                    os.kill(os.getpid(), signal.SIGKILL)

        fit(
            "resume",
            "full-prec",
            4,
            callbacks=[KillAtThirdEpoch()],
            # resume-apart: each worker's own backup folder, as on hosts sharing none.
            checkpoint_dir=os.path.join(
                out_dir, "ckpt" if scenario == "resume" else f"ckpt-rank{backend.rank}"
            ),
        )
    elif scenario == "shards":
        # Worker r reads only its shard of OUT_DIR/images (written by the test), trains on
        # it, and records which files it was given and which images it decoded.
        import hashlib

        from pocketflow_tf import shards

        part = shards.image_folder_shard(
            os.path.join(out_dir, "images"),
            index=backend.rank,
            count=backend.size,
            image_size=data.input_shape[:2],
            channels=data.input_shape[2],
            input_scale="0..1",
            batch_size=8,
            seed=0,
            stream=None,
        )
        seen = sorted(
            hashlib.sha256(np.round(img * 255).astype(np.uint8).tobytes()).hexdigest()
            for xb, _ in part.dataset
            for img in xb.numpy()
        )
        cfg = training.TrainConfig(epochs=2, batch_size=8, learning_rate=0.05)
        lrn = learner.get_learner_class("full-prec")(cfg, backend=backend, verbose=0)
        model = lrn.fit(build(), part.dataset)
        np.savez(
            os.path.join(out_dir, f"shards.rank{backend.rank}.npz"),
            *model.get_weights(),
            loss=np.array(lrn.history.history["loss"]),
            info=json.dumps(
                {
                    **backend.describe(),
                    "steps_per_epoch": lrn.steps_per_epoch,
                    "shard_steps": part.steps,
                    "files": [os.path.relpath(f, out_dir) for f in part.files],
                    "seen": seen,
                    "tf_config": os.environ.get("TF_CONFIG"),
                    "horovod_hostname": os.environ.get("HOROVOD_HOSTNAME"),
                }
            ),
        )
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
