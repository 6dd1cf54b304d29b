"""The Horovod lane: the real-worker checks of test_distributed.py run with horovodrun.

Horovod builds only against TensorFlow <= 2.15, so these tests run in the environment that
``tools/horovod_lane.sh`` prepares (``run_tests.sh`` calls it after the main suite). There
they must run: the lane exports ``PFTF_HVD_VENV``, and a missing Horovod is then a failure,
not a skip. In the main (TF 2.21) environment they are skipped.
"""

import os

import pytest

if os.environ.get("PFTF_HVD_VENV"):
    import horovod.tensorflow  # noqa: F401  (the lane without Horovod is broken: fail)
else:
    pytest.importorskip("horovod.tensorflow", reason="Horovod lane only (tools/horovod_lane.sh)")

import test_distributed as checks  # noqa: E402


def test_two_ranks_train_full_prec_ecq_pruning_and_qat_with_identical_weights(tmp_path):
    checks.check_learners_on_two_workers("horovod", tmp_path)


def test_ranks_on_two_loopback_hosts_train_the_learners_with_identical_weights(tmp_path):
    import test_cluster

    checks.check_learners_on_two_workers("horovod", tmp_path, hosts=test_cluster.HOSTS)


def test_a_killed_rank_ends_the_job_quickly_and_the_rerun_resumes(tmp_path):
    log = checks.check_kill_and_resume("horovod", tmp_path)
    assert "horovodrun exited with status" in log


def test_run_script_on_two_ranks_writes_one_set_of_artifacts(tmp_path):
    checks.check_run_script("horovod", tmp_path)


def test_ranks_on_two_loopback_hosts_train_one_model_on_disjoint_shards(tmp_path):
    # horovodrun would ssh to 127.0.0.2 (it starts locally only the addresses of this
    # machine's interfaces); the launcher starts the ranks itself, as horovodrun does,
    # with Horovod's Gloo rendezvous server and per-rank HOROVOD_* variables.
    import io
    import sys

    import test_cluster

    from pocketflow_tf import launcher

    test_cluster.write_image_folder(tmp_path / "images")
    out = io.StringIO()
    command = [sys.executable, os.path.join(checks.ROOT, "tests", "dist_worker.py")]
    rc = launcher.launch_horovod_hosts(
        [*command, str(tmp_path), "shards"], test_cluster.HOSTS, out=out
    )
    assert rc == 0, out.getvalue()[-3000:]
    assert "2 Horovod ranks on 2 host(s) of this machine" in out.getvalue()
    info0, info1 = test_cluster.check_shard_run(tmp_path, "horovod")
    assert (info0["horovod_hostname"], info1["horovod_hostname"]) == ("127.0.0.1", "127.0.0.2")


def test_ranks_sharing_no_folder_resume_from_the_chiefs_backup(tmp_path):
    # One backup folder per rank, as on machines with local disks only: the rerun resumes
    # both ranks at the chief's epoch (its backup sent in memory).
    import io
    import sys

    import numpy as np

    from pocketflow_tf import launcher

    command = [sys.executable, os.path.join(checks.ROOT, "tests", "dist_worker.py"), str(tmp_path)]
    (tmp_path / "kill-me").write_text("")
    out = io.StringIO()
    rc = launcher.launch_horovod_hosts(
        [*command, "resume-apart"], "127.0.0.1:1,127.0.0.2:1", out=out
    )
    assert rc != 0 and "Rerun the same command to resume" in out.getvalue(), out.getvalue()[-3000:]
    assert not (tmp_path / "ckpt-rank1" / "backup" / "chief").exists()
    out = io.StringIO()
    rc = launcher.launch_horovod_hosts(
        [*command, "resume-apart"], "127.0.0.1:1,127.0.0.2:1", out=out
    )
    assert rc == 0, out.getvalue()[-3000:]
    (w0, w1), loss, _ = checks.dist_worker.load(tmp_path, "resume")
    assert len(loss) == 2
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)
