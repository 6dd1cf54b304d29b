"""Several hosts and sharded data: the host list and its checks, per-worker shards of a
streamed image folder, and real worker processes on two loopback "hosts" (127.0.0.1 and
127.0.0.2: Linux routes all of 127/8 to lo)."""

import hashlib
import io
import json
import os
import socket
import subprocess
import sys

import dist_worker
import numpy as np
import pytest

from pocketflow_tf import cluster, datasets, errors, launcher, shards
from pocketflow_tf.compat import tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOSTS = "127.0.0.1:1,127.0.0.2:1"


# -- bad input, refused before any worker starts --------------------------------------------
@pytest.mark.parametrize(
    "spec, says",
    [
        ("", "the list is empty"),
        ("h1:0", "'h1:0': slots must be a whole number >= 1"),
        ("h1:x", "'h1:x': slots must be a whole number >= 1"),
        ("h1:2,,h2:2", "entry 2 is empty"),
        ("h1:2,h1:1", "host 'h1' is already entry 1"),
        ("h_1:2", "'h_1' is not a host name or IPv4 address"),
    ],
)
def test_malformed_host_lists_are_refused_naming_the_entry(spec, says):
    with pytest.raises(errors.InvalidArgumentError) as info:
        launcher.launch_hosts(["true"], spec)
    msg = str(info.value)
    assert msg.startswith(f"Invalid value for `hosts`: {spec!r}") and says in msg
    assert "Accepted: a comma-separated list of host:slots entries" in msg


def test_one_machine_named_twice_unresolvable_or_unreachable_hosts_are_refused():
    with pytest.raises(errors.InvalidArgumentError, match="'localhost' and '127.0.0.1' are both"):
        launcher.launch_hosts(["true"], "localhost:1,127.0.0.1:1")
    with pytest.raises(errors.InvalidArgumentError, match="no-such-host.invalid.*resolves"):
        launcher.launch_hosts(["true"], "127.0.0.1:1,no-such-host.invalid:1")
    with pytest.raises(errors.InvalidArgumentError, match="two or more worker slots"):
        launcher.launch_hosts(["true"], "127.0.0.1:1")
    with pytest.raises(errors.InvalidArgumentError, match="`port`: '80'"):
        launcher.launch_hosts(["true"], HOSTS, port="80")
    with pytest.raises(errors.InvalidArgumentError, match="`this_host_index`: 2.*0 to 1"):
        launcher.launch_hosts(["true"], HOSTS, this_host_index=2)


def test_a_host_that_does_not_answer_in_time_is_named_with_the_wait():
    # A listener whose accept queue is full drops new SYNs: a real connect that times out.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            fillers.append(c)
        with pytest.raises(errors.InvalidArgumentError) as info:
            cluster.check_reachable("h2", "127.0.0.1", port, timeout_s=0.5)
        assert "`hosts`: 'h2'" in str(info.value)
        assert f"a TCP connect to 127.0.0.1:{port} got no answer within 0.5 s" in str(info.value)
    finally:
        for c in fillers:
            c.close()
        server.close()
    cluster.check_reachable("h2", "127.0.0.1", port)  # closed now: refused is an answer


def test_a_taken_port_of_this_host_is_refused_before_any_worker_starts():
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = io.StringIO()
        with pytest.raises(errors.InvalidArgumentError, match=f"`port`: {port}"):
            launcher.launch_hosts(
                [sys.executable, "-c", "open('started', 'w')"],
                HOSTS,
                port=f"{port},{port + 1}",
                out=out,
            )
    assert out.getvalue() == "" and not os.path.exists("started")


def test_the_command_line_names_the_argument_and_refuses_n_with_hosts():
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "pocketflow_tf.launcher", *args, "--", "true"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    proc = run("--hosts", "h1:x")
    assert proc.returncode == 2 and "Invalid value for `hosts`: 'h1:x'" in proc.stderr
    proc = run("-n", "2", "--hosts", HOSTS)
    assert proc.returncode == 2 and "`workers`: 2" in proc.stderr
    proc = run("--this-host-index", "0")
    assert proc.returncode == 2 and "give --hosts too" in proc.stderr
    proc = subprocess.run(
        [os.path.join(ROOT, "run_cluster.sh"), "--hosts", "h1:0", "nets/convnet_at_fmnist_run.py"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "Invalid value for `hosts`: 'h1:0'" in proc.stderr


# -- the plan each host derives from the same flags ------------------------------------------
def test_every_host_derives_the_same_cluster_and_its_own_task():
    hosts = cluster.parse_hosts("h1:2,h2:2")
    workers = cluster.plan(hosts, cluster.parse_ports("23456", hosts))
    configs = [json.loads(cluster.tf_config(workers, i)) for i in range(4)]
    expected = ["h1:23456", "h1:23457", "h2:23456", "h2:23457"]
    assert all(c["cluster"]["worker"] == expected for c in configs)
    assert [c["task"]["index"] for c in configs] == [0, 1, 2, 3]
    out = io.StringIO()
    assert (
        launcher.launch_hosts(
            ["python", "run.py"],
            HOSTS,
            this_host_index=1,
            port="23456,23500",
            print_env=True,
            out=out,
        )
        == 0
    )
    text = out.getvalue()
    assert "# worker 1 (127.0.0.2:23500)" in text and '"index": 1' in text
    assert '"worker": ["127.0.0.1:23456", "127.0.0.2:23500"]' in text


def test_hosts_that_are_not_this_machine_get_their_commands_printed_not_started():
    out = io.StringIO()
    # 192.0.2.1 (TEST-NET-1) is this sandbox's gateway; any answering host would do.
    rc = launcher.launch_hosts(["python", "run.py"], "127.0.0.1:2,192.0.2.1:2", out=out)
    text = out.getvalue()
    assert rc == 0 and "nothing was started" in text
    assert "--hosts 127.0.0.1:2,192.0.2.1:2 --port 23456 --this-host-index 1" in text
    assert "--this-host-index 0" in text


# -- shards of a streamed image folder -------------------------------------------------------
def write_image_folder(root, per_class=(11, 11, 11), seed=0):
    """Real Fashion-MNIST images as PNG files, ``root/<class>/<n>.png``; returns the sha256
    of each image's pixels by file path."""
    data = datasets.load_fashion_mnist()
    rng = np.random.default_rng(seed)
    hashes = {}
    for label, count in enumerate(per_class):
        d = root / f"class_{label}"
        d.mkdir(parents=True)
        picks = rng.choice(np.flatnonzero(data.y_train == label), count, replace=False)
        for j, i in enumerate(picks):
            pixels = np.round(data.x_train[i] * 255).astype(np.uint8)
            path = d / f"{j:03d}.png"
            path.write_bytes(tf.io.encode_png(pixels).numpy())
            hashes[str(path)] = hashlib.sha256(pixels.tobytes()).hexdigest()
    return hashes


def shard_hashes(part):
    return [
        hashlib.sha256(np.round(img * 255).astype(np.uint8).tobytes()).hexdigest()
        for xb, _ in part.dataset
        for img in xb.numpy()
    ]


def test_two_workers_get_disjoint_deterministic_shards_whose_union_is_the_folder(tmp_path):
    hashes = write_image_folder(tmp_path / "images")  # 33 images: shards of 17 and 16

    def part(index, seed=0):
        return shards.image_folder_shard(
            tmp_path / "images",
            index=index,
            count=2,
            image_size=(28, 28),
            channels=1,
            input_scale="0..1",
            batch_size=4,
            seed=seed,
            stream=None,
        )

    a, b = part(0), part(1)
    assert (len(a.files), len(b.files)) == (17, 16)
    assert not set(a.files) & set(b.files) and set(a.files) | set(b.files) == set(hashes)
    assert a.steps == b.steps == 4 and a.total == 33  # 16 // 4 on both: same step count
    # Each worker decodes its own files only; and every class is in every shard.
    first_epoch = {}
    for p in (a, b):
        seen = first_epoch[p.index] = shard_hashes(p)
        assert len(seen) == 16 and set(seen) <= {hashes[f] for f in p.files}
        assert {os.path.basename(os.path.dirname(f)) for f in p.files} == {
            "class_0",
            "class_1",
            "class_2",
        }
    # Deterministic: a restart gets the same shard and, for the same seed, the same order.
    again = part(0)
    assert again.files == a.files and shard_hashes(again) == first_epoch[0]
    assert shards.is_presharded(a.dataset) and not shards.is_presharded(tf.data.Dataset.range(2))
    with pytest.raises(errors.InvalidArgumentError, match="`batch_size`: 64"):
        shards.image_folder_shard(
            tmp_path / "images",
            index=0,
            count=2,
            image_size=(28, 28),
            channels=1,
            input_scale="0..1",
            batch_size=64,
            stream=None,
        )


def test_npz_shards_split_by_file_with_equal_steps(tmp_path):
    rng = np.random.default_rng(0)
    paths, rows = [], {}
    for i, n in enumerate([12, 9, 10]):
        x = rng.random((n, 4, 4, 1)).astype("float32")
        y = np.full(n, i, np.int64)
        p = tmp_path / f"part{i}.npz"
        np.savez(p, x_train=x, y_train=y)
        paths.append(p)
        rows[i] = n
    parts = [shards.npz_shards(paths, index=w, count=2, batch_size=4) for w in (0, 1)]
    assert [os.path.basename(f) for f in parts[0].files] == ["part0.npz", "part2.npz"]
    assert [os.path.basename(f) for f in parts[1].files] == ["part1.npz"]
    labels = [sorted({int(v) for _, yb in p.dataset for v in yb.numpy()}) for p in parts]
    assert labels == [[0, 2], [1]]  # each worker read only its own files
    assert parts[0].steps == parts[1].steps == 9 // 4
    assert sum(1 for _ in parts[0].dataset) == sum(1 for _ in parts[1].dataset) == 2


# -- real workers on two loopback hosts ------------------------------------------------------
def start_by_hand(tmp_path, scenario):
    """Two launchers, one per "host", each started with its own --this-host-index, as a
    scheduler or a person at each machine would; returns their (status, output)."""
    ports = [launcher.free_port_range(1) for _ in range(2)]
    procs = []
    for i in range(2):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pocketflow_tf.launcher",
                    *("--hosts", HOSTS, "--port", f"{ports[0]},{ports[1]}"),
                    *("--this-host-index", str(i), "--backend", "tf", "--"),
                    sys.executable,
                    os.path.join(ROOT, "tests", "dist_worker.py"),
                    str(tmp_path),
                    scenario,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=ROOT,
            )
        )
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        results.append((p.returncode, out))
    return results, ports


def check_shard_run(out_dir, backend):
    (w0, w1), loss, info0 = dist_worker.load(out_dir, "shards")
    info1 = json.loads(str(np.load(os.path.join(out_dir, "shards.rank1.npz"))["info"]))
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)  # one model on both hosts
    assert info0["backend"] == backend and info0["workers"] == 2
    assert info0["steps_per_epoch"] == info1["steps_per_epoch"] == 16 // 8
    assert not set(info0["files"]) & set(info1["files"])
    assert len(set(info0["files"]) | set(info1["files"])) == 33
    assert len(info0["seen"]) == len(info1["seen"]) == 16
    assert not set(info0["seen"]) & set(info1["seen"])  # disjoint images decoded
    return info0, info1


def test_by_hand_start_on_two_loopback_hosts_trains_one_model_on_disjoint_shards(tmp_path):
    write_image_folder(tmp_path / "images")
    results, ports = start_by_hand(tmp_path, "shards")
    for rc, out in results:
        assert rc == 0, out[-3000:]
    info0, info1 = check_shard_run(tmp_path, "tf")
    workers = json.loads(info1["tf_config"])["cluster"]["worker"]
    assert workers == [f"127.0.0.1:{ports[0]}", f"127.0.0.2:{ports[1]}"]
    assert json.loads(info1["tf_config"])["task"]["index"] == 1


def test_run_cluster_on_two_loopback_hosts_writes_one_set_of_outputs(tmp_path):
    save = tmp_path / "out" / "model.keras"
    proc = subprocess.run(
        [
            os.path.join(ROOT, "run_cluster.sh"),
            *("--hosts", HOSTS, "nets/convnet_at_fmnist_run.py"),
            "--lrn_rate_init=0.005",
            "--nb_train_samples=1024",
            "--nb_epochs_rat=0.07",
            "--export_modes=float",
            "--num_verify=200",
            "--latency_runs=10",
            f"--save_path={save}",
            f"--log_dir={tmp_path / 'logs'}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[launcher] 2 workers on 2 host(s) (127.0.0.1:" in proc.stdout
    assert ", 127.0.0.2:" in proc.stdout
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
    assert record["sections"]["distributed"]["workers"] == 2
    # Nothing else was written anywhere under the run's folders (no second worker's copy).
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert all(w.startswith(("out/", "logs/")) for w in written), written


def test_hosts_sharing_no_folder_resume_from_the_chiefs_backup(tmp_path):
    # Each worker has its own backup folder: only the chief's holds the backups, as on two
    # machines with local disks. After worker 1 is killed in epoch 3, the rerun resumes on
    # both from the chief's backup (sent to worker 1 in memory) and ends with one model.
    command = [sys.executable, os.path.join(ROOT, "tests", "dist_worker.py"), str(tmp_path)]
    (tmp_path / "kill-me").write_text("")
    out = io.StringIO()
    rc = launcher.launch_hosts([*command, "resume-apart"], HOSTS, grace_s=10.0, out=out)
    assert rc != 0 and "Rerun the same command to resume" in out.getvalue(), out.getvalue()[-3000:]
    assert os.path.isdir(tmp_path / "ckpt-rank0" / "backup" / "chief")
    assert not (tmp_path / "ckpt-rank1" / "backup" / "chief").exists()  # never written there
    out = io.StringIO()
    rc = launcher.launch_hosts([*command, "resume-apart"], HOSTS, out=out)
    assert rc == 0, out.getvalue()[-3000:]
    (w0, w1), loss, _ = dist_worker.load(tmp_path, "resume")
    assert len(loss) == 2  # epochs 3 and 4 only, on both workers
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "ckpt-rank0").exists() and not (tmp_path / "ckpt-rank1").exists()


def test_two_loopback_hosts_train_full_prec_channel_and_uniform_with_identical_weights(tmp_path):
    # The learners of test_distributed's two-worker check (full-prec, ECQ, weight-sparse,
    # uniform QAT, channel pruning with removal), one worker on each loopback host.
    import test_distributed

    test_distributed.check_learners_on_two_workers("tf", tmp_path, hosts=HOSTS)
