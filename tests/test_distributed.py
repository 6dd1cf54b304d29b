"""Multi-worker training: the ECQ-SGD codec, data sharding, backends, the launcher, and
real two-worker runs (tf.distribute processes on loopback) of several learners."""

import json
import os
import subprocess
import sys

import dist_worker
import numpy as np
import pytest

from pocketflow_tf import distributed, ecq, errors, launcher, learner, training
from pocketflow_tf.app import runner
from pocketflow_tf.compat import keras, tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the codec -----------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_packed_codes_decode_to_exactly_what_the_sender_accounted_for(bits):
    cfg = ecq.ECQConfig(bits=bits, bucket_size=16)
    values = tf.constant(np.random.default_rng(bits).normal(size=(7, 11)).astype("float32"))
    words, scales, sent = ecq.quantize(values, cfg)
    assert words.dtype == tf.int32 and int(words.shape[0]) == -(-77 // (32 // bits))
    assert int(scales.shape[0]) == -(-77 // 16)
    decoded = ecq.dequantize(words, scales, 77, cfg).numpy().reshape(7, 11)
    np.testing.assert_array_equal(decoded, sent.numpy())
    # At most half a quantization step from the input, per bucket.
    step = np.repeat(scales.numpy(), 16)[:77].reshape(7, 11)
    assert np.all(np.abs(decoded - values.numpy()) <= step / 2 + 1e-6)
    # Levels used: 2**bits - 1 at most (the codes fit their bit field).
    assert len(np.unique(np.round(decoded / np.where(step > 0, step, 1)))) <= 2**bits - 1


def test_error_feedback_carries_what_quantization_lost_into_the_next_steps():
    codec = ecq.GradientCodec(ecq.ECQConfig(bits=2, bucket_size=8), num_workers=1)
    var = tf.Variable(tf.zeros((5, 6)))
    codec.build([var])
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(5, 6)).astype("float32") for _ in range(30)]
    sent = [codec.exchange([tf.constant(g)], lambda t: t)[0].numpy() for g in grads]
    error = codec.errors[0].numpy()
    assert np.abs(error).max() > 0.01  # 2-bit codes lose a lot at every step...
    # ...and none of it is dropped: what was sent plus what is still owed is the sum.
    np.testing.assert_allclose(np.sum(sent, 0) + error, np.sum(grads, 0), atol=1e-4)
    # Without the feedback the loss accumulates: plain 2-bit rounding drifts further.
    plain = sum(ecq.quantize(tf.constant(g), codec.config)[2].numpy() for g in grads)
    assert np.abs(plain - np.sum(grads, 0)).max() > 2 * np.abs(error).max()


def test_payload_is_at_least_4x_smaller_than_float32_from_4_bits():
    n = 10_000
    assert ecq.payload_bytes(n, None) == 40_000
    assert ecq.payload_bytes(n, ecq.ECQConfig(bits=4)) == 4 * 1250 + 4 * 20
    for bits in (2, 4):
        assert ecq.payload_bytes(n, None) / ecq.payload_bytes(n, ecq.ECQConfig(bits=bits)) >= 4


@pytest.mark.parametrize(
    "kwargs, name",
    [({"bits": 3}, "ecq_bits"), ({"bucket_size": 1}, "ecq_bucket_size"), ({"beta": 0}, "ecq_beta")],
)
def test_codec_settings_are_checked(kwargs, name):
    with pytest.raises(errors.InvalidArgumentError, match=name):
        ecq.ECQConfig(**kwargs)


def test_wrapped_optimizer_keeps_its_class_and_settings():
    codec = ecq.GradientCodec(ecq.ECQConfig(), num_workers=1)
    opt = ecq.wrap_optimizer(keras.optimizers.SGD(0.3, momentum=0.9), codec, lambda t: t)
    assert isinstance(opt, keras.optimizers.SGD)
    assert opt.get_config()["momentum"] == 0.9
    var = tf.Variable([1.0, -1.0])
    opt.apply_gradients([(tf.constant([0.5, 0.25]), var)])
    assert codec.errors is not None and codec.bytes_per_step == 8


# -- data, backends, launcher --------------------------------------------------------------
def test_shards_are_equal_and_disjoint():
    x = np.arange(11, dtype="float32").reshape(11, 1, 1, 1)
    got = []
    for index in range(2):
        ds = training.make_dataset(x, None, 2, training=True, shard=(index, 2), drop_remainder=True)
        got.append(sorted(float(v) for b in ds for v in b[0].numpy().ravel()))
    assert len(got[0]) == len(got[1]) == 4  # 5 each, then the short batch is dropped
    assert not set(got[0]) & set(got[1])
    with pytest.raises(errors.InvalidArgumentError, match="shard"):
        training.make_dataset(x, None, 2, shard=(2, 2))


def test_backend_comes_from_the_environment():
    assert distributed.from_environment({}).name == "single"
    one = launcher.tf_config([1234], 0)
    assert distributed.from_environment({"TF_CONFIG": one}).name == "single"
    with pytest.raises(errors.InvalidArgumentError, match="TF_CONFIG"):
        distributed.from_environment({"TF_CONFIG": "{"})


def test_learners_refuse_what_they_cannot_do_before_any_work():
    import pocketflow_tf.learners  # noqa: F401

    with pytest.raises(errors.InvalidArgumentError, match="ecq"):
        learner.get_learner_class("full-prec")(ecq=ecq.ECQConfig())
    two = distributed.Backend()
    two.size = 2  # a stand-in: the refusal happens in the constructor, before training
    with pytest.raises(errors.InvalidArgumentError, match="workers.*product-quant"):
        learner.get_learner_class("product-quant")(backend=two)
    with pytest.raises(errors.InvalidArgumentError, match="backend"):
        launcher.resolve_backend("mpi")
    # The run script refuses before it loads any data.
    opts = runner.RunOptions(
        "convnet_at_fmnist",
        learner="product-quant",
        model_path=os.path.join(ROOT, "bench", "artifacts", "convnet_at_fmnist_e15_s0.keras"),
        data_dir="/nonexistent",
        ecq_bits=4,
    )
    with pytest.raises(errors.InvalidArgumentError, match="ecq_bits"):
        runner.run(opts, backend=two)  # a learner training alone exchanges nothing
    with pytest.raises(errors.InvalidArgumentError, match="ecq_bits"):
        runner.run(runner.RunOptions("convnet_at_fmnist", ecq_bits=4, data_dir="/nonexistent"))


@pytest.mark.parametrize(
    "args, message",
    [(["-n", "0"], "invalid value for -n: '0'"), (["--backend", "mpi"], "--backend: 'mpi'")],
)
def test_run_local_checks_its_arguments(args, message):
    proc = subprocess.run(
        [os.path.join(ROOT, "run_local.sh"), *args, "nets/convnet_at_fmnist_run.py"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and message in proc.stderr


MIRRORED_SCRIPT = """
import json, sys
from pocketflow_tf.compat import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np
import pocketflow_tf.learners
from pocketflow_tf import distributed, ecq, learner, training
from pocketflow_tf.compat import keras
backend = distributed.MirroredBackend(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
y = rng.integers(0, 2, 512)
x = (rng.random((512, 8, 8, 1)) * 0.3 + y[:, None, None, None] * 0.5).astype("float32")
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3),
                          keras.layers.Flatten(), keras.layers.Dense(2)])
lrn = learner.get_learner_class("full-prec")(
    training.TrainConfig(epochs=3, batch_size=16, learning_rate=0.05), backend=backend,
    ecq=ecq.ECQConfig(bits=4, bucket_size=64) if sys.argv[1] == "ecq" else None, verbose=0)
out = lrn.fit(model, x, y)
print(json.dumps({"loss": lrn.history.history["loss"], "steps": lrn.steps_per_epoch,
                  "size": backend.size, "in_scope": out.distribute_strategy is backend.strategy,
                  "ecq": backend.describe().get("ecq")}))
"""


@pytest.mark.parametrize("mode", ["float", "ecq"])
def test_mirrored_backend_trains_on_two_devices_of_one_process(mode):
    # Two logical CPU devices stand in for two GPUs: the same MirroredStrategy code path.
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, mode], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["size"] == 2 and got["steps"] == 512 // (16 * 2)
    assert got["loss"][-1] < got["loss"][0]
    assert not got["in_scope"]  # handed back outside the strategy, for plain evaluation
    assert (got["ecq"] is not None) == (mode == "ecq")


# -- real workers --------------------------------------------------------------------------
# These checks run for both backends: here with tf.distribute, and in the Horovod lane
# (tests/test_horovod.py, TF 2.15 stack) with horovodrun.
def check_learners_on_two_workers(backend, out_dir, hosts=None):
    rc, log, _ = dist_worker.launch(backend, out_dir, "learners", hosts=hosts)
    assert rc == 0, log[-3000:]
    if hosts:
        assert "127.0.0.2" in log, log[-3000:]  # the second worker ran on the second host
    for name in ("full-prec", "ecq", "weight-sparse", "uniform", "channel"):
        (w0, w1), loss, info = dist_worker.load(out_dir, name)
        assert info["backend"] == backend and info["workers"] == 2
        assert info["steps_per_epoch"] == 1024 // (32 * 2)  # each worker: half the batches
        for a, b in zip(w0, w1, strict=True):
            np.testing.assert_array_equal(a, b)  # one model, not two
        assert loss[-1] < loss[0], (name, loss)
    _, _, info = dist_worker.load(out_dir, "ecq")
    assert info["ecq"]["float_bytes_per_step"] / info["ecq"]["bytes_per_step"] >= 4
    # The exchanged gradient is the global batch's, as in float: after one epoch, 8-bit
    # ECQ lands 0.6 % of the update away from the float run (measured; the same exchange
    # returning half the gradient, a scaling bug, lands 47 % away).
    moved, off = dist_worker.update_gap(out_dir, "float-1", "ecq8-1")
    assert off < 0.1 * moved, (off, moved)
    (w, _), _, _ = dist_worker.load(out_dir, "weight-sparse")
    second_conv = [a for a in w if a.ndim == 4][1]
    assert abs(float(np.mean(second_conv == 0)) - 0.5) < 0.01
    (w, _), _, _ = dist_worker.load(out_dir, "channel")
    assert [a.shape[-1] for a in w if a.ndim == 4] == [4, 8]  # half the channels, removed


def check_kill_and_resume(backend, out_dir):
    (out_dir / "kill-me").write_text("")
    rc, failed_log, took = dist_worker.launch(backend, out_dir, "resume", grace_s=10.0)
    assert rc != 0
    assert "Rerun the same command to resume" in failed_log, failed_log[-3000:]
    assert took < 150, took  # bounded: no waiting on the dead peer
    assert not (out_dir / "resume.rank0.npz").exists()
    assert (out_dir / "ckpt" / "backup").is_dir()  # two finished epochs are kept

    rc, log, _ = dist_worker.launch(backend, out_dir, "resume")
    assert rc == 0, log[-3000:]
    (w0, w1), loss, _ = dist_worker.load(out_dir, "resume")
    assert len(loss) == 2  # epochs 3 and 4 only: it went on from the backup
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not (out_dir / "ckpt").exists()  # spent backups are removed
    return failed_log


def run_local_two_workers(backend, tmp_path, *flags):
    """``run_local.sh -n 2`` on the convnet recipe, saving under ``tmp_path/out``; returns
    the finished process (already checked for success) and the saved model's path."""
    save = tmp_path / "out" / "model.keras"
    proc = subprocess.run(
        [
            os.path.join(ROOT, "run_local.sh"),
            *("-n", "2", "--backend", backend, "nets/convnet_at_fmnist_run.py"),
            *flags,
            f"--save_path={save}",
            f"--log_dir={tmp_path / 'logs'}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, save


def check_run_script(backend, tmp_path):
    # From scratch at a tenth of the recipe's LR: at the recipe's (x2 for two workers), 4
    # steps left models at 8-22 % with logits so large that the float export missed its
    # 1e-4 parity check (3e-4) in 3 of 4 runs. (The committed trained convnet, saved by
    # tf-keras 2.21, does not load in the TF 2.15 lane: its InputLayer config is newer.)
    proc, save = run_local_two_workers(
        backend,
        tmp_path,
        "--lrn_rate_init=0.005",
        "--nb_train_samples=1024",
        "--nb_epochs_rat=0.07",
        "--export_modes=float",
        "--num_verify=200",
        "--latency_runs=10",
        "--ecq_bits=4",
    )
    assert proc.stdout.count("== convnet_at_fmnist / full-prec (train) ==") == 1  # chief only
    files = sorted(p.name for p in save.parent.iterdir())
    assert files == [
        "model.float.tflite",
        "model.float.tflite.sha256",
        "model.keras",
        "model.train.record.json",
        "model.train.report.md",
    ], files
    record = json.loads((save.parent / "model.train.record.json").read_text())
    dist = record["sections"]["distributed"]
    assert dist["workers"] == 2 and dist["backend"] == backend
    assert dist["ecq"]["float_bytes_per_step"] >= 4 * dist["ecq"]["bytes_per_step"]
    assert record["metrics"]["train_samples_per_s"] > 0


def test_two_workers_train_full_prec_ecq_pruning_and_qat_with_identical_weights(tmp_path):
    check_learners_on_two_workers("tf", tmp_path)


def test_a_killed_worker_ends_the_job_quickly_and_the_rerun_resumes(tmp_path):
    log = check_kill_and_resume("tf", tmp_path)
    assert "worker 1" in log and "killed by signal SIGKILL" in log


def test_run_script_on_two_workers_writes_one_set_of_artifacts(tmp_path):
    check_run_script("tf", tmp_path)


def test_single_worker_learner_runs_on_the_chief_alone_under_two_workers(tmp_path):
    proc, save = run_local_two_workers(
        "tf",
        tmp_path,
        "--learner=non-uniform",
        "--model_path=bench/artifacts/convnet_at_fmnist_e15_s0.keras",
        "--nb_train_samples=512",
        "--nb_epochs_rat=0.07",
        "--export_modes=",
    )
    assert "the chief runs it alone, the other 1 worker(s) wait" in proc.stdout
    record = json.loads((save.parent / "model.train.record.json").read_text())
    assert "distributed" not in record["sections"]  # trained in one process
    assert record["metrics"]["test_acc"] > 0.8
