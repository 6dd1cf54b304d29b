"""Commands end a user error with one line and exit status 2; --debug shows the traceback.

Covers issue 20's items on commands: LiteRT load errors of bad ``.tflite`` files, output
paths checked before any training, and ``--learner auto`` exiting 3 on an unmet target.
Subprocesses are used only where the exit status and the printed line are the point.
"""

import os
import subprocess
import sys

import pytest

from pocketflow_tf import cli_errors, errors, tflite_load
from pocketflow_tf.app import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
BASELINE = os.path.join(ROOT, "bench", "artifacts", "convnet_at_fmnist_e15_s0.keras")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


@pytest.fixture(scope="module")
def good_tflite(tmp_path_factory):
    from pocketflow_tf import tflite_export
    from pocketflow_tf.compat import keras

    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    path = tmp_path_factory.mktemp("tfl") / "good.tflite"
    path.write_bytes(tflite_export.convert(model))
    return path


def _bad_tflite(kind: str, good, tmp_path) -> str:
    """A ``.tflite`` path of one bad kind: missing, truncated, random bytes, empty."""
    path = tmp_path / f"{kind}.tflite"
    content = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(content[: len(content) // 2])
    elif kind == "random":
        path.write_bytes(os.urandom(len(content)))
    elif kind == "empty":
        path.write_bytes(b"")
    return str(path)


def _run(args, cwd):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=ENV
    )


def _cli():
    # Imported when needed: its absl flags clash with the tools' (--model_path...) that
    # other test modules load in the same process.
    from pocketflow_tf.app import cli

    return cli


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


# ---- LiteRT load errors --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "truncated", "random", "empty"])
def test_open_interpreter_names_the_bad_file(kind, good_tflite, tmp_path):
    path = _bad_tflite(kind, good_tflite, tmp_path)
    with pytest.raises(errors.ModelLoadError, match="Cannot load model file") as info:
        tflite_load.open_interpreter(path)
    assert info.value.path == path and "; pass " in info.value.reason  # the remedy


def test_open_interpreter_reads_a_good_file_and_refuses_a_folder(good_tflite, tmp_path):
    assert tflite_load.open_interpreter(str(good_tflite), num_threads=1).get_input_details()
    with pytest.raises(errors.ModelLoadError, match="folder"):
        tflite_load.open_interpreter(str(tmp_path))
    with pytest.raises(errors.InvalidArgumentError, match="model"):
        tflite_load.open_interpreter(42)


def test_runner_and_latency_raise_the_project_error(good_tflite, tmp_path):
    from pocketflow_tf import latency, tflite_verify

    path = _bad_tflite("random", good_tflite, tmp_path)
    with pytest.raises(errors.ModelLoadError, match="random.tflite"):
        tflite_verify.TFLiteRunner(path)
    with pytest.raises(errors.ModelLoadError, match="random.tflite"):
        latency.measure_latency(path, runs=1, warmup=0)


@pytest.mark.parametrize("kind", ["missing", "truncated", "random"])
def test_benchmark_tool_prints_one_line_for_a_bad_tflite(kind, good_tflite, tmp_path):
    path = _bad_tflite(kind, good_tflite, tmp_path)
    proc = _run([os.path.join(TOOLS, "benchmark_tflite.py"), f"--model={path}"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert path in line and "tflite" in line


def test_benchmark_tool_debug_shows_the_traceback(good_tflite, tmp_path):
    path = _bad_tflite("truncated", good_tflite, tmp_path)
    args = [os.path.join(TOOLS, "benchmark_tflite.py"), f"--model={path}", "--debug"]
    proc = _run(args, tmp_path)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ModelLoadError" in proc.stderr


def test_benchmark_tool_checks_json_before_timing(good_tflite, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    args = [
        os.path.join(TOOLS, "benchmark_tflite.py"),
        f"--model={good_tflite}",
        f"--json={blocker / 'out.json'}",
    ]
    proc = _run(args, tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert "`json`" in line and "a_file" in line
    assert "median" not in proc.stdout  # refused before any timing


@pytest.mark.parametrize("case", ["tflite_as_model", "missing_model", "bad_output_suffix"])
def test_export_tool_prints_one_line_for_bad_arguments(case, good_tflite, tmp_path):
    # The tool's flags clash with the run scripts' (both define --model_path), so it runs
    # in a subprocess rather than being imported here.
    model = {
        "tflite_as_model": _bad_tflite("truncated", good_tflite, tmp_path),
        "missing_model": str(tmp_path / "missing.keras"),
        "bad_output_suffix": BASELINE,
    }[case]
    output = tmp_path / ("out.txt" if case == "bad_output_suffix" else "out.tflite")
    args = [os.path.join(TOOLS, "export_tflite.py"), f"--model_path={model}", f"--output={output}"]
    proc = _run(args, tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = _error_lines(proc.stderr)
    flag, value = ("output", str(output)) if case == "bad_output_suffix" else ("model_path", model)
    assert f"`{flag}`" in line and value in line
    assert not output.exists()


# ---- the shared mechanism --------------------------------------------------------------------


def test_user_error_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as info, cli_errors.reported_errors():
        raise errors.DataError("images of '/d/x.npy' hold NaN\nat index 3; clean them")
    assert info.value.code == cli_errors.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err == "error: images of '/d/x.npy' hold NaN at index 3; clean them\n"


def test_os_error_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as info, cli_errors.reported_errors():
        raise PermissionError(13, "Permission denied", "/ro/model.keras")
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "'/ro/model.keras'" in line and "Permission denied" in line


def test_debug_lets_the_error_through():
    with pytest.raises(errors.ModelLoadError), cli_errors.reported_errors(lambda: True):
        raise errors.ModelLoadError("m.tflite", "truncated")


def test_internal_error_keeps_its_traceback_and_says_it_is_a_bug(capsys):
    with pytest.raises(SystemExit) as info, cli_errors.reported_errors():
        raise KeyError("oops")
    assert info.value.code == cli_errors.EXIT_INTERNAL_ERROR
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err
    assert err.splitlines()[-1].startswith("error: internal error KeyError (a bug")


# ---- output paths, before any training -------------------------------------------------------


def test_check_output_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    check = cli_errors.check_output_path
    assert check("save_path", str(tmp_path / "a" / "b" / "m.keras"), suffixes=(".keras",))
    assert check("log_dir", str(tmp_path / "logs"), is_dir=True)
    bad = [
        (dict(path=str(blocker / "m.keras")), "is a file"),
        (dict(path=str(tmp_path / "m.txt"), suffixes=(".keras", ".h5")), "ending in .keras, .h5"),
        (dict(path=str(tmp_path)), "existing folder"),
        (dict(path=str(blocker), is_dir=True), "existing file"),
        (dict(path=str(blocker / "logs"), is_dir=True), "is a file"),
        (dict(path=""), "output file"),
    ]
    for kwargs, accepted in bad:
        with pytest.raises(errors.InvalidArgumentError, match="`flag`") as info:
            check("flag", **kwargs)
        assert info.value.value == kwargs["path"] and accepted in info.value.accepted


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_path_refuses_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(errors.InvalidArgumentError, match="not writable"):
            cli_errors.check_output_path("save_path", str(ro / "m.keras"))
    finally:
        ro.chmod(0o700)


def test_run_options_refuse_unwritable_outputs_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        (dict(save_path=str(blocker / "m.keras")), "save_path"),
        (dict(save_path=str(tmp_path / "model.txt")), "save_path"),
        (dict(save_path=str(tmp_path / "m.keras"), log_dir=str(blocker)), "log_dir"),
        (dict(save_path=str(tmp_path / "m.keras"), log_dir=str(blocker / "l")), "log_dir"),
        (dict(exec_mode="eval", save_path=str(blocker / "m.keras")), "save_path"),
    ]
    for kwargs, flag in cases:
        with pytest.raises(errors.InvalidArgumentError, match=f"`{flag}`"):
            runner.RunOptions("convnet_at_fmnist", **kwargs)
    assert sorted(os.listdir(tmp_path)) == ["file"]  # nothing was created


def test_run_script_refuses_save_path_under_a_file_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    script = os.path.join(ROOT, "nets", "convnet_at_fmnist_run.py")
    proc = _run([script, f"--save_path={blocker / 'm.keras'}", "--nb_train_samples=64"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert "`save_path`" in line and str(blocker) in line
    assert "loading data set" not in proc.stdout and "epoch" not in proc.stdout.lower()
    assert sorted(os.listdir(tmp_path)) == ["file"]


# ---- --learner auto: an unmet target exits 3 ---------------------------------------------------


def test_target_missed_reads_the_record():
    assert runner.target_missed({"metrics": {"target_met": False}})
    assert not runner.target_missed({"metrics": {"target_met": True}})
    assert not runner.target_missed({"metrics": {}})  # a learner without a target


def test_summary_says_the_target_was_not_met(capsys):
    opts = runner.RunOptions("convnet_at_fmnist", learner="auto", verbose=0, export_modes=())
    result = {
        "metrics": {"target_met": False, "test_acc": 0.9, "params": 1, "flops": 2, "macs": 1},
        "artifacts": {},
        "sections": {"compression": {"answer": {"summary": "Target NOT met (100x faster)"}}},
    }
    runner.print_summary(opts, result, "r.json", "r.md")
    out = capsys.readouterr().out
    assert "target           NOT MET: Target NOT met (100x faster)" in out


@pytest.mark.parametrize("met, code", [(False, cli_errors.EXIT_TARGET_NOT_MET), (True, 0)])
def test_run_script_exit_status_follows_the_target(monkeypatch, met, code):
    # The mapping alone; test_auto_run_with_unmet_target_exits_3 runs it for real.
    cli = _cli()
    monkeypatch.setattr(cli, "options_from_flags", lambda name: name)
    monkeypatch.setattr(cli.runner, "run", lambda *a, **k: {"metrics": {"target_met": met}})
    monkeypatch.setattr(cli.distributed, "from_environment", lambda: None)
    monkeypatch.setattr(sys, "argv", ["convnet_at_fmnist_run.py"])
    with pytest.raises(SystemExit) as info:
        cli.main("convnet_at_fmnist")
    assert (info.value.code or 0) == code


def test_run_script_turns_a_project_error_into_exit_2(monkeypatch, capsys):
    cli = _cli()

    def refuse(name):
        raise errors.InvalidArgumentError("learner", "nope", "a registered learner")

    monkeypatch.setattr(cli, "options_from_flags", refuse)
    monkeypatch.setattr(cli.distributed, "from_environment", lambda: None)
    monkeypatch.setattr(sys, "argv", ["convnet_at_fmnist_run.py"])
    with pytest.raises(SystemExit) as info:
        cli.main("convnet_at_fmnist")
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: Invalid value for `learner`: 'nope'. Accepted: a registered learner."
    )


@pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
    reason="dataset-fashion-mnist",
)
def test_auto_run_with_unmet_target_exits_3(monkeypatch, capsys, tmp_path):
    # A real, tiny auto run (about 35 s): one 5-step trial cannot make a model 100x faster.
    cli = _cli()
    argv = [
        "convnet_at_fmnist_run.py",
        "--learner=auto",
        f"--model_path={BASELINE}",
        "--auto_target=100x faster",
        "--auto_max_trials=1",
        "--auto_proxy_steps=5",
        "--auto_final_epochs=1",
        "--nb_epochs_rat=0.07",
        "--nb_train_samples=1024",
        "--num_verify=200",
        "--latency_runs=10",
        "--verbose=0",
        f"--save_path={tmp_path / 'm' / 'model.keras'}",
        f"--log_dir={tmp_path / 'logs'}",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        with pytest.raises(SystemExit) as info:
            cli.main("convnet_at_fmnist")
    finally:
        cli.FLAGS.unparse_flags()  # later in-process users parse their own command line
    assert info.value.code == cli_errors.EXIT_TARGET_NOT_MET
    out = capsys.readouterr().out
    assert "target           NOT MET: Target NOT met (100x faster" in out
    assert (tmp_path / "m" / "model.train.record.json").exists()  # the run itself finished
