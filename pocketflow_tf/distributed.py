"""Data-parallel training backends: one process, ``tf.distribute`` workers, Horovod ranks.

A :class:`Backend` is what a learner asks about the workers it runs in: which one it is,
how to build its share of the training data, how to wrap the optimiser so gradients are
averaged (or exchanged quantized, :mod:`pocketflow_tf.ecq`), how to make every worker
start from the chief's weights, and how to hand a Python object from the chief to all
workers in memory (collectives, never files). The launcher
(:mod:`pocketflow_tf.launcher`) starts the worker processes; each one picks its backend
with :func:`from_environment` before TensorFlow runs its first operation.

Conventions, the same on every backend (PocketFlow's and Horovod's):

* ``TrainConfig.batch_size`` is the batch of one worker; the global batch is
  ``batch_size * size`` and the peak learning rate is scaled by ``size`` (linear scaling,
  Goyal et al. 2017), so an epoch is still one pass over the data in fewer steps;
* every worker takes an equal share of each epoch (a short last batch is dropped, since
  all workers must run the same number of steps);
* the chief (rank 0) alone writes checkpoints, exports and records.

Example:
    >>> from pocketflow_tf import distributed
    >>> backend = distributed.from_environment({})
    >>> backend.name, backend.rank, backend.size, backend.is_chief
    ('single', 0, 1, True)
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np

from pocketflow_tf import ecq, errors, training
from pocketflow_tf.compat import keras, tf


class Backend:
    """One process training alone (the default); the base of the multi-worker backends.

    Example:
        >>> b = Backend()
        >>> b.scale_config(training.TrainConfig(learning_rate=0.1)).learning_rate
        0.1
        >>> b.broadcast_object({"acc": 0.9})
        {'acc': 0.9}
    """

    name = "single"
    #: Whether the trained model must be built inside :meth:`scope` (tf.distribute).
    uses_strategy_scope = False

    def __init__(self):
        self.rank = 0
        self.size = 1
        self.codec: ecq.GradientCodec | None = None
        #: Gradient values exchanged per step (set when a learner compiles its model).
        self.exchanged_values = 0

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """Backend facts for run records.

        Example:
            >>> Backend().describe()["workers"]
            1
        """
        out: dict[str, Any] = {"backend": self.name, "workers": self.size, "rank": self.rank}
        if self.size > 1 and self.exchanged_values:
            # Gradient bytes one worker sends per step: float32 values, or ECQ's payload.
            out["float_bytes_per_step"] = ecq.payload_bytes(self.exchanged_values, None)
            out["bytes_per_step"] = (
                self.codec.bytes_per_step if self.codec else out["float_bytes_per_step"]
            )
        if self.codec is not None:
            out["ecq"] = {
                "bits": self.codec.config.bits,
                "bucket_size": self.codec.config.bucket_size,
                "alpha": self.codec.config.alpha,
                "beta": self.codec.config.beta,
                "bytes_per_step": self.codec.bytes_per_step,
                "float_bytes_per_step": self.codec.float_bytes_per_step,
            }
        return out

    # -- model and data ------------------------------------------------------------------
    def scope(self) -> contextlib.AbstractContextManager:
        """Context in which the trained model, its optimiser and its metrics are built."""
        return contextlib.nullcontext()

    def scale_config(self, config: training.TrainConfig) -> training.TrainConfig:
        """The config with the learning rate scaled to the global batch."""
        if self.size == 1:
            return config
        return config.replace(learning_rate=config.learning_rate * self.size)

    def train_dataset(
        self, x: np.ndarray, y: np.ndarray, config: training.TrainConfig
    ) -> tuple[tf.data.Dataset, int]:
        """This worker's training pipeline over arrays and its steps per epoch.

        Example:
            >>> import numpy as np
            >>> ds, steps = Backend().train_dataset(
            ...     np.zeros((10, 2, 2, 1), "float32"), np.zeros(10, "int64"),
            ...     training.TrainConfig(batch_size=4))
            >>> steps
            3
        """
        ds = training.make_dataset(
            x,
            y,
            config.batch_size,
            training=True,
            augmentation=config.augmentation,
            seed=config.seed,
        )
        return ds, int(np.ceil(len(x) / config.batch_size))

    def distribute_dataset(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """A user-given batched dataset made this worker's share (identity here)."""
        return dataset

    def presharded_dataset(self, dataset: tf.data.Dataset) -> Any:
        """A dataset that already is this worker's share at this worker's batch size (a
        :class:`pocketflow_tf.shards.Shard`'s), made what ``fit`` takes (identity here)."""
        return dataset

    def worker_steps(self, batches: int) -> int:
        """Steps per epoch of this worker over a user-given dataset of ``batches``."""
        return batches

    def wrap_optimizer(
        self, optimizer: keras.optimizers.Optimizer, ecq_config: ecq.ECQConfig | None = None
    ) -> keras.optimizers.Optimizer:
        """The optimiser that averages gradients over the workers (as given here)."""
        if ecq_config is not None:
            raise errors.InvalidArgumentError(
                "ecq", ecq_config, "None with one worker (there is no gradient exchange)"
            )
        return optimizer

    def callbacks(self) -> list[keras.callbacks.Callback]:
        """Callbacks the backend needs during ``fit`` (none here)."""
        return []

    def backup_callback(self, path: str) -> keras.callbacks.Callback:
        """The per-epoch backup that makes a killed run resumable.

        It is kept when training ends (Keras would delete it): a kill while the result is
        saved or exported then costs no epoch; :meth:`Learner.release_backups
        <pocketflow_tf.learner.Learner.release_backups>` removes it.
        """
        return keras.callbacks.BackupAndRestore(path, delete_checkpoint=False)

    # -- communication -------------------------------------------------------------------
    def broadcast_object(self, obj: Any) -> Any:
        """``obj`` of the chief, returned on every worker (pickled, sent in memory)."""
        return obj

    def broadcast_weights(self, model: keras.Model) -> None:
        """Makes every worker's ``model`` weights the chief's."""
        if self.size > 1:
            model.set_weights(self.broadcast_object(model.get_weights()))

    def gather(self, tensor: tf.Tensor) -> tf.Tensor:
        """All workers' ``tensor`` concatenated on axis 0 (inside a training step)."""
        return tensor

    def barrier(self) -> None:
        """Returns once every worker has reached it."""
        if self.size > 1:
            self.broadcast_object(None)


class StrategyBackend(Backend):
    """Replicas of a ``tf.distribute`` strategy: the trained model lives in its scope.

    Keras cuts each global batch (``batch_size * size``) into replica batches and
    all-reduces the gradients inside the optimiser, or exchanges them quantized when
    ECQ-SGD is on (an all-gather in the replica context).
    """

    uses_strategy_scope = True

    def __init__(self, strategy: tf.distribute.Strategy, rank: int, size: int):
        super().__init__()
        self.strategy, self.rank, self.size = strategy, rank, size

    def scope(self):
        return self.strategy.scope()

    def train_dataset(self, x, y, config):
        # Every worker must produce the same sequence of global batches (Keras keeps each
        # worker's part), which the seeded shuffle and augmentation guarantee.
        global_batch = config.batch_size * self.size
        ds = training.make_dataset(
            x,
            y,
            global_batch,
            training=True,
            augmentation=config.augmentation,
            seed=config.seed,
            drop_remainder=True,
        )
        return self.distribute_dataset(ds), max(1, len(x) // global_batch)

    def distribute_dataset(self, dataset):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        return dataset.with_options(options)

    def presharded_dataset(self, dataset):
        # The function form hands each worker's own dataset to its replica as it is, batch
        # for batch: no auto-sharding, and no rebatching of a global batch.
        return self.strategy.distribute_datasets_from_function(lambda _: dataset)

    def wrap_optimizer(self, optimizer, ecq_config=None):
        if ecq_config is None:
            return optimizer  # the strategy all-reduces inside the optimiser
        # Keras divides each replica's loss by the number of replicas under a strategy:
        # the replicas' gradients add up to the global batch's (what the all-reduce does).
        self.codec = ecq.GradientCodec(ecq_config, self.size, average=False)
        return ecq.wrap_optimizer(optimizer, self.codec, self.gather)

    def gather(self, tensor):
        return tf.distribute.get_replica_context().all_gather(tensor, axis=0)


class MirroredBackend(StrategyBackend):
    """Several devices of one process (``tf.distribute.MirroredStrategy``), e.g. GPUs.

    Args:
        devices: Device names (default: every GPU TensorFlow sees).

    Example:
        >>> MirroredBackend.name
        'mirrored'
    """

    name = "mirrored"

    def __init__(self, devices: list[str] | None = None):
        strategy = tf.distribute.MirroredStrategy(devices)
        super().__init__(strategy, 0, strategy.num_replicas_in_sync)


class TFBackend(StrategyBackend):
    """``tf.distribute.MultiWorkerMirroredStrategy`` workers described by ``TF_CONFIG``.

    Must be created before TensorFlow runs any operation in the process (collective ops
    are configured at start-up). Each worker runs one replica; Keras splits each global
    batch between them (``AutoShardPolicy.DATA``: every worker reads the same seeded
    order and keeps its part).

    Example:
        >>> TFBackend.name
        'tf'
    """

    name = "tf"

    def __init__(self, tf_config: Mapping[str, Any]):
        workers = tf_config.get("cluster", {}).get("worker", [])
        task = tf_config.get("task", {})
        if len(workers) < 2 or task.get("type") != "worker":
            raise errors.InvalidArgumentError(
                "TF_CONFIG",
                json.dumps(dict(tf_config)),
                "a cluster of >= 2 workers and a task of type 'worker'",
            )
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        super().__init__(strategy, int(task.get("index", 0)), len(workers))
        self._reduce = None

    def _all_reduce_sum(self, array: np.ndarray) -> np.ndarray:
        if self._reduce is None:

            def step(value):
                ctx = tf.distribute.get_replica_context()
                # identity: placed on the replica's device, which the collective needs.
                return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(value))

            # In a tf.function: run eagerly, the strategy warns of its overhead each call.
            self._reduce = tf.function(
                lambda value: self.strategy.run(step, args=(value,)), reduce_retracing=True
            )
        out = self._reduce(tf.constant(array))
        return self.strategy.experimental_local_results(out)[0].numpy()

    def broadcast_object(self, obj):
        # A broadcast as a sum in which only the chief's term is not zero: collectives
        # carry numbers, so the pickle travels as int32 words.
        payload = pickle.dumps(obj) if self.is_chief else b""
        n = int(self._all_reduce_sum(np.array([len(payload)], np.int64))[0])
        words = np.zeros(-(-n // 4), np.int32)
        if self.is_chief:
            words.view(np.uint8)[:n] = np.frombuffer(payload, np.uint8)
        summed = self._all_reduce_sum(words)
        return pickle.loads(summed.view(np.uint8)[:n].tobytes())


class HorovodBackend(Backend):
    """Horovod ranks (``horovodrun --gloo``); Horovod builds only against TF <= 2.15.

    Every rank reads its own shard of the data at the per-worker batch; gradients are
    averaged with Horovod's all-reduce (or exchanged quantized, ECQ-SGD, through its
    all-gather) in the optimiser's aggregation step; the chief's weights are broadcast
    before training; BatchNorm statistics and the logged metrics are averaged over the
    ranks at each epoch end, so every rank ends with the same model.

    Only ``horovod.tensorflow`` is used, not ``horovod.tensorflow.keras``: the latter
    imports the standalone ``keras`` 2.15 package, whose layer classes then replace
    tf-keras's when TFMOT rebuilds a model from its config (quantization-aware training
    fails with "Layer ... supplied to wrapper is not a supported layer type").

    Example:
        >>> HorovodBackend.name
        'horovod'
    """

    name = "horovod"

    def __init__(self):
        super().__init__()
        try:
            import horovod.tensorflow as hvd
        except ImportError as exc:  # pragma: no cover - depends on the installed stack
            raise errors.InvalidArgumentError(
                "backend",
                "horovod",
                "a stack with Horovod installed (TensorFlow <= 2.15: tools/horovod_lane.sh "
                f"prepares one); importing it failed: {exc}",
            ) from exc
        self.hvd = hvd
        hvd.init()
        self.rank, self.size = hvd.rank(), hvd.size()

    def train_dataset(self, x, y, config):
        ds = training.make_dataset(
            x,
            y,
            config.batch_size,
            training=True,
            augmentation=config.augmentation,
            seed=config.seed,
            drop_remainder=True,
            shard=(self.rank, self.size),
        )
        return ds, max(1, (len(x) // self.size) // config.batch_size)

    def distribute_dataset(self, dataset):
        return dataset.shard(self.size, self.rank)

    def worker_steps(self, batches):
        return batches // self.size  # each rank reads every size-th batch

    def wrap_optimizer(self, optimizer, ecq_config=None):
        if ecq_config is not None:
            self.codec = ecq.GradientCodec(ecq_config, self.size)
            return ecq.wrap_optimizer(optimizer, self.codec, self.gather)

        def mean(grads, variables):
            return self.hvd.grouped_allreduce(list(grads), op=self.hvd.Average)

        return ecq.with_aggregation(optimizer, mean, "Horovod")

    def gather(self, tensor):
        return self.hvd.allgather(tensor)

    def callbacks(self):
        return [_AverageOverRanks(self.hvd)]

    def backup_callback(self, path):
        if self.is_chief:
            return keras.callbacks.BackupAndRestore(path, delete_checkpoint=False)
        return _RestoreOnly(path)

    def broadcast_object(self, obj):
        return self.hvd.broadcast_object(obj, root_rank=0)


class _AverageOverRanks(keras.callbacks.Callback):
    """At each epoch end: the mean over ranks of every non-trainable float variable
    (BatchNorm moving statistics, which each rank updates from its own shard) and of
    the logged metrics (so the chief reports the whole data set's loss)."""

    def __init__(self, hvd):
        super().__init__()
        self.hvd = hvd

    def on_epoch_end(self, epoch, logs=None):
        for var in self.model.non_trainable_variables:
            if var.dtype.is_floating:
                var.assign(self.hvd.allreduce(var.read_value(), op=self.hvd.Average))
        if logs:
            keys = sorted(k for k, v in logs.items() if isinstance(v, float | np.floating))
            values = self.hvd.allreduce(
                tf.constant([float(logs[k]) for k in keys], tf.float64), op=self.hvd.Average
            )
            logs.update(zip(keys, values.numpy().tolist(), strict=True))


class _RestoreOnly(keras.callbacks.BackupAndRestore):
    """Reads the chief's backup when training starts and never writes (Horovod ranks
    share one folder, and only the chief may write to it)."""

    def on_train_batch_end(self, batch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


def from_environment(environ: Mapping[str, str] | None = None) -> Backend:
    """The backend the launcher started this process for.

    ``HOROVOD_RANK`` (set by ``horovodrun``) selects Horovod; a ``TF_CONFIG`` naming two
    or more workers selects ``tf.distribute``; otherwise a process that sees several GPUs
    mirrors the model on all of them, and one without trains alone.

    Args:
        environ: The environment to read (default ``os.environ``).

    Example:
        >>> from_environment({"TF_CONFIG": "not json"})
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `TF_CONFIG`: 'not json'. Accepted: a JSON cluster description (as written by pocketflow_tf.launcher).
    """
    env = os.environ if environ is None else environ
    if "HOROVOD_RANK" in env:
        return HorovodBackend()
    raw = env.get("TF_CONFIG")
    if raw:
        try:
            tf_config = json.loads(raw)
        except json.JSONDecodeError:
            raise errors.InvalidArgumentError(
                "TF_CONFIG",
                raw,
                "a JSON cluster description (as written by pocketflow_tf.launcher)",
            ) from None
        if len(tf_config.get("cluster", {}).get("worker", [])) > 1:
            return TFBackend(tf_config)
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return MirroredBackend()
    return Backend()


__all__ = [
    "Backend",
    "HorovodBackend",
    "MirroredBackend",
    "StrategyBackend",
    "TFBackend",
    "from_environment",
]
