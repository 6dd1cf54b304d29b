"""The run-script job end to end on real Fashion-MNIST (a small training subset)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pocketflow_tf import accounting, atomic_io, datasets, errors, tflite_verify
from pocketflow_tf.app import runner
from pocketflow_tf.compat import keras
from pocketflow_tf.nets import recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_fmnist = pytest.mark.skipif(not os.path.exists(FMNIST), reason="dataset-fashion-mnist")
#: The committed trained baseline of the convnet_at_fmnist recipe.
BASELINE = os.path.join(ROOT, "bench", "artifacts", "convnet_at_fmnist_e15_s0.keras")


def run_script(*args, timeout=300):
    """The convnet_at_fmnist run script in a child process, given ``args``."""
    script = os.path.join(ROOT, "nets", "convnet_at_fmnist_run.py")
    return subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(autouse=True)
def run_seed():
    """Every test starts from the global seeds of a fresh run (``RunOptions.seed``, 0),
    whatever ran before it in this process.

    A run used to leave two things to the process's global seed (the runner built a recipe
    model before any seed was set, and ``AutoLearner.fit`` set none, while TF derives its
    op-seeded shuffle from it): the auto run's 5-step int8 trial then passed or failed with
    the test order. Both are seeded now (``test_from_scratch_run_ignores_the_global_seed``);
    the fixture stays so that no test depends on the order again.
    """
    keras.utils.set_random_seed(runner.RunOptions.seed)


@needs_fmnist
def test_from_scratch_run_ignores_the_global_seed(tmp_path, fmnist_run):
    """Two from-scratch runs with the same RunOptions.seed train the same weights, whatever
    global seed the process held before (the recipe model is built after seeding)."""
    weights = []
    for i, process_seed in enumerate((11, 12)):
        keras.utils.set_random_seed(process_seed)
        opts = fmnist_run(
            save_path=str(tmp_path / f"m{i}" / "model.keras"),
            nb_epochs_rat=0.07,
            nb_train_samples=256,
            export_modes=(),
        )
        runner.run(opts)
        weights.append(keras.models.load_model(opts.save_path).get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))


@needs_fmnist
def test_train_export_eval(tmp_path, fmnist_run):
    opts = fmnist_run(
        # From the committed trained baseline: int8 verification (>= 95 % top-1 agreement)
        # of a model trained for one short epoch from scratch (~78 % accurate, many near
        # ties) passed or failed with thread-order noise.
        model_path=BASELINE,
        nb_epochs_rat=0.07,
        nb_train_samples=8192,
        batch_size=32,  # enough steps for BatchNorm moving statistics to settle
        num_verify=1000,
        latency_runs=20,
    )
    save = opts.save_path
    rec = runner.run(opts)
    m = rec["metrics"]
    assert m["epochs"] == 1
    assert m["test_acc"] > 0.85  # fine-tuned from a 91 % baseline
    assert m["params"] > 0 and m["flops"] > m["params"]
    for mode in ("float", "int8"):
        art = rec["artifacts"][f"tflite_{mode}"]
        assert os.path.getsize(art["path"]) == m[f"tflite_{mode}_bytes"]
        assert atomic_io.sha256_file(art["path"]) == art["sha256"]
        with open(art["path"] + ".sha256") as f:
            assert f.read().split()[0] == art["sha256"]
        assert m[f"latency_{mode}_ms"] > 0
    assert m["tflite_float_agreement"] == 1.0
    assert m["tflite_int8_agreement"] >= 0.95
    assert m["speedup_int8_vs_float"] > 0
    with open(os.path.join(tmp_path, "m", "model.train.record.json")) as f:
        saved = json.load(f)
    assert saved["metrics"]["test_acc"] == m["test_acc"]
    assert saved["versions"]["tensorflow"]
    assert os.path.exists(tmp_path / "m" / "model.train.report.md")
    assert os.listdir(tmp_path / "logs")  # TensorBoard wrote its event files
    # Resumable training leaves no backup behind once it has finished.
    assert not os.path.exists(save + ".ckpt")

    ev = runner.run(
        runner.RunOptions(
            "convnet_at_fmnist",
            exec_mode="eval",
            model_path=save,
            verbose=0,
            save_path=str(tmp_path / "e" / "model.keras"),
        )
    )
    assert ev["metrics"]["test_acc"] == pytest.approx(m["test_acc"], abs=1e-6)


@needs_fmnist
def test_refused_quantized_export_is_reported_and_run_goes_on(tmp_path, monkeypatch, capsys):
    # An agreement above 1 cannot be met: the real int8 export is made, verified and refused.
    impossible = {**tflite_verify.DEFAULT_THRESHOLDS["int8"], "min_agreement": 1.01}
    monkeypatch.setitem(tflite_verify.DEFAULT_THRESHOLDS, "int8", impossible)
    kw = dict(nb_epochs_rat=0.07, nb_train_samples=512, num_verify=200, latency_runs=10)
    kw.update(verbose=0, log_dir=str(tmp_path / "logs"))
    rec = runner.run(
        runner.RunOptions("convnet_at_fmnist", save_path=str(tmp_path / "a" / "m.keras"), **kw)
    )
    m = rec["metrics"]
    assert "agreement" in m["tflite_int8_refused"]
    assert "tflite_int8" not in rec["artifacts"] and "latency_int8_ms" not in m
    assert m["tflite_float_agreement"] == 1.0 and m["latency_float_ms"] > 0
    assert sorted(os.listdir(tmp_path / "a")) == [
        "m.float.tflite",
        "m.float.tflite.sha256",
        "m.keras",
        "m.train.record.json",
        "m.train.report.md",
    ]
    assert "int8     REFUSED" in capsys.readouterr().out

    strict = runner.RunOptions(
        "convnet_at_fmnist", save_path=str(tmp_path / "b" / "m.keras"), strict_export=True, **kw
    )
    with pytest.raises(errors.VerificationError):
        runner.run(strict)
    assert not [f for f in os.listdir(tmp_path / "b") if "int8" in f]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"exec_mode": "serve"}, "exec_mode"),
        ({"export_modes": ("float", "int3")}, "export_modes"),
        ({"num_verify": 10}, "num_verify"),
        ({"model_path": "/nonexistent/model.keras"}, "model_path"),
        ({"enbl_dst": True}, "enbl_dst"),
        ({"tempr_dst": 0.0}, "tempr_dst"),
        ({"learner": "no-such-learner"}, "learner"),
    ],
)
def test_bad_options_fail_before_any_work(tmp_path, kwargs, name):
    with pytest.raises(errors.InvalidArgumentError) as e:
        runner.RunOptions("convnet_at_fmnist", save_path=str(tmp_path / "x.keras"), **kwargs)
    assert e.value.name == name
    assert os.listdir(tmp_path) == []


def test_run_script_reports_user_errors_without_traceback(tmp_path):
    proc = run_script("--learner", "magic", "--save_path", str(tmp_path / "m.keras"))
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "'magic'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


@needs_fmnist
@pytest.mark.parametrize(
    "allocation",
    [[], ["--cp_prune_option=auto", "--cp_ratio_search=random", "--cp_search_trials=3"]],
    ids=["uniform", "auto-random-search"],
)
def test_run_script_channel_learner_end_to_end(tmp_path, allocation):
    """The run script drives the channel learner: flags -> thinner model -> verified export."""
    save = tmp_path / "m.keras"
    proc = run_script(
        "--learner=channel",
        *allocation,
        "--cp_preserve_ratio=0.5",
        "--cp_criterion=l1",
        "--cp_nb_samples=64",
        "--nb_train_samples=512",
        "--nb_epochs_rat=0.07",
        "--export_modes=float",
        "--num_verify=200",
        "--latency_runs=10",
        "--verbose=0",
        f"--save_path={save}",
        f"--log_dir={tmp_path / 'logs'}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "m.train.record.json") as f:
        rec = json.load(f)
    assert rec["sections"]["learner"]["cp_preserve_ratio"] == 0.5
    assert rec["sections"]["compression"]["flops_ratio"] <= 0.5
    assert 0 <= rec["metrics"]["test_acc_before_finetune"] <= 1
    dense = accounting.count_flops(recipe.get_recipe("convnet_at_fmnist").build((28, 28, 1), 10))
    assert rec["metrics"]["flops"] <= 0.5 * dense
    assert rec["metrics"]["tflite_float_agreement"] == 1.0


@pytest.mark.parametrize(
    "args, named",
    [
        (["--cp_preserve_ratio=0.3"], "--cp_preserve_ratio"),
        # A channel-only option is not silently dropped by the DCP learner either.
        (["--learner=dis-chn-pruned", "--cp_list_group=2"], "--cp_list_group"),
        (["--uql_weight_bits=8"], "--uql_weight_bits"),
        # AMC settings without the AMC allocation would be silently unused.
        (["--learner=channel", "--cp_amc_episodes=5"], "--cp_amc_episodes"),
        (
            ["--learner=channel", "--cp_ratio_search=amc", "--cp_search_trials=5"],
            "--cp_search_trials",
        ),
    ],
)
def test_learner_specific_flags_need_their_learner(tmp_path, args, named):
    proc = run_script(*args, f"--save_path={tmp_path / 'm.keras'}")
    assert proc.returncode == 2
    assert named in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


#: The smallest --learner auto run: an int8 target, one 5-step trial, int8 by PTQ.
TINY_AUTO = {
    "auto_target": "int8",
    "auto_max_trials": 1,
    "auto_proxy_steps": 5,
    "auto_int8_final": "ptq",
    "auto_final_epochs": 1,
}


@needs_fmnist
def test_auto_learner_run_records_its_own_verified_tflite(tmp_path, fmnist_run):
    # --learner auto exports and verifies its deployable file itself; the runner records it,
    # evaluates it on the test split and reports the learner's measured speed-up.
    opts = fmnist_run(
        learner="auto",
        model_path=BASELINE,
        nb_epochs_rat=0.07,
        nb_train_samples=1024,
        latency_runs=20,
        learner_options={**TINY_AUTO, "auto_dir": str(tmp_path / "m" / "auto")},
    )
    rec = runner.run(opts)
    m, arts = rec["metrics"], rec["artifacts"]
    assert set(arts) >= {"tflite_int8", "auto_report_html", "auto_report_json", "model_keras"}
    assert "tflite_float" not in arts  # the target asked for int8 only
    assert os.path.getsize(arts["tflite_int8"]["path"]) == m["tflite_int8_bytes"]
    # The recorded accuracy is the file's own on the whole test split (recomputed here).
    data = datasets.load_dataset("fmnist")
    logits = tflite_verify.TFLiteRunner(arts["tflite_int8"]["path"]).predict(data.x_test, 100)
    assert m["tflite_int8_acc"] == pytest.approx(np.mean(np.argmax(logits, -1) == data.y_test))
    assert m["speedup_int8_vs_float"] > 0 and m["latency_int8_ms"] > 0
    assert rec["sections"]["compression"]["answer"]["summary"]  # met or not, it says why


def test_auto_learner_trains_its_baseline_first_then_reuses_it(tmp_path, capsys, monkeypatch):
    # The baseline's run writes its TensorBoard logs to the default logs/<recipe>/full-prec
    # of the working folder (it is not given the auto run's log_dir): here, not the repo.
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "base" / "model.keras"
    opts = dict(
        learner="auto",
        baseline_path=str(base),
        nb_epochs_rat=0.07,
        # A baseline trained on 1,024 samples (~25 % accurate, all near ties) failed the
        # final int8 check by one image (drop 0.0100 > 0.01) or passed, with its random init.
        nb_train_samples=4096,
        latency_runs=10,
        num_verify=200,
        verbose=0,
        learner_options=TINY_AUTO,
    )
    first = runner.run(
        runner.RunOptions("convnet_at_fmnist", save_path=str(tmp_path / "a" / "m.keras"), **opts)
    )
    out = capsys.readouterr().out
    assert f"no trained baseline at {base}: training one first" in out
    assert base.exists() and (tmp_path / "base" / "model.train.record.json").exists()
    assert first["config"]["model_path"] == str(base)
    assert "tflite_int8" in first["artifacts"]

    again = runner.run(
        runner.RunOptions("convnet_at_fmnist", save_path=str(tmp_path / "b" / "m.keras"), **opts)
    )
    assert f"compressing the trained baseline {base}" in capsys.readouterr().out
    assert again["config"]["model_path"] == str(base)
    with pytest.raises(errors.InvalidArgumentError, match="baseline_path"):
        runner.RunOptions("convnet_at_fmnist", baseline_path=str(base))  # auto only


def test_fine_tuning_learning_rate_follows_the_learner(fmnist_run):
    # Weight clustering collapses at the plain fine-tune rate; its learner asks for a tenth.
    rec = runner.run(
        fmnist_run(
            learner="non-uniform",
            model_path=BASELINE,
            nb_epochs_rat=0.07,
            nb_train_samples=512,
            export_modes=(),
        )
    )
    plain = recipe.get_recipe("convnet_at_fmnist").finetune_config(0.07).learning_rate
    assert rec["sections"]["learner"]["train"]["learning_rate"] == pytest.approx(plain * 0.1)
    assert rec["metrics"]["test_acc"] > 0.8  # clustered from a 91 % baseline, not collapsed


def test_product_quant_deploys_its_compact_file_by_default_and_others_refuse_it(tmp_path):
    pq = runner.RunOptions("convnet_at_fmnist", learner="product-quant")
    assert pq.export_modes == ("float", "int8", "pq-compact")
    with pytest.raises(errors.InvalidArgumentError, match="'pq-compact'") as e:
        runner.RunOptions(
            "convnet_at_fmnist", export_modes=("pq-compact",), save_path=str(tmp_path / "m.keras")
        )
    assert e.value.name == "export_modes" and "float16" in e.value.accepted
    assert os.listdir(tmp_path) == []
    # Clustering writes its own compact file on request; its int8 (CQAT) form cannot.
    nu = runner.RunOptions(
        "convnet_at_fmnist", learner="non-uniform", export_modes=("float", "cluster-compact")
    )
    assert nu.export_modes == ("float", "cluster-compact")
    with pytest.raises(errors.InvalidArgumentError, match="modes among"):
        runner.RunOptions(
            "convnet_at_fmnist",
            learner="non-uniform",
            learner_options={"nuql_int8": True},
            export_modes=("cluster-compact",),
        )


@needs_fmnist
@pytest.mark.slow  # about 3 minutes on 2 shared cores (PQ of every layer, 3 exports, timing)
def test_run_script_product_quant_exports_the_verified_compact_file(tmp_path):
    """The run script drives the PQ learner: codes file -> compact .tflite (codes and
    codebooks in the file), verified, scored and timed against the decoded float file."""
    from pocketflow_tf.learners.product_quant import ProductQuantLearner

    save = tmp_path / "m.keras"
    proc = run_script(
        "--learner=product-quant",
        "--pq_codebook_size=8",
        "--pq_nb_samples=64",
        "--pq_nb_iters_em=3",
        "--pq_nb_iters_layer=0",
        "--pq_bn_batches=2",
        "--nb_train_samples=256",
        "--nb_epochs_rat=0.07",
        "--export_modes=float,pq-compact",
        "--num_verify=200",
        "--latency_runs=10",
        "--verbose=0",
        f"--save_path={save}",
        f"--log_dir={tmp_path / 'logs'}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "m.train.record.json") as f:
        rec = json.load(f)
    m, arts = rec["metrics"], rec["artifacts"]
    compact = arts["tflite_pq-compact"]["path"]
    assert os.path.getsize(compact) == m["tflite_pq-compact_bytes"]
    assert m["tflite_pq-compact_bytes"] < m["tflite_float_bytes"] / 4
    assert m["tflite_pq-compact_agreement"] == 1.0
    assert m["tflite_pq-compact_acc"] == m["tflite_float_acc"]
    assert m["latency_pq-compact_ms"] > 0 and m["speedup_pq-compact_vs_float"] > 0
    assert arts["pq_codes"]["path"] == str(tmp_path / "m.pq.npz")
    assert "pq-compact" in proc.stdout  # the summary line

    # The deployment step reads the codes file back: a damaged one is refused, by name.
    model = keras.models.load_model(save)
    with np.load(tmp_path / "m.pq.npz") as f:
        arrays = dict(f)
    arrays["codes"] = arrays["codes"] ^ 0x11
    with open(tmp_path / "m.pq.npz", "wb") as f:
        np.savez(f, **arrays)
    data = datasets.load_dataset("fmnist")
    with pytest.raises(errors.InvalidArgumentError, match="m.pq.npz.*away from the layer"):
        ProductQuantLearner.export_file(
            "pq-compact",
            model,
            str(tmp_path / "again.tflite"),
            prefix=str(tmp_path / "m"),
            x_verify=data.x_test[:200],
        )
    assert not (tmp_path / "again.tflite").exists()
