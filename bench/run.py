"""Runs named benchmarks and writes ``bench/results/<name>.json``; then regenerates README.

Usage::

    python -m bench.run --list                 # every benchmark and its quick setting
    python -m bench.run all --quick            # every benchmark, small settings (< 90 min)
    python -m bench.run baselines ptq          # full recipes (long: hours for some)
    python -m bench.run baselines --no-table   # leave README untouched

``all`` runs every benchmark of :data:`BENCHMARKS` in that order (the baselines first, the
cheap measurements next, the long fine-tunes last). Trained baselines are cached in
``bench/artifacts`` (resumable), so a second run of any benchmark only re-measures.

``--quick`` runs each benchmark with the small setting of :data:`QUICK`: fewer settings,
trials and epochs, one model where a benchmark has several. This is the one place that maps
quick to the benchmarks' own environment knobs (each module documents and parses its knobs;
``--quick`` sets them for the duration of that benchmark, over any value already in the
environment, and says so). It needs the cached baselines (nothing retrains: it stops first if
one is missing). Quick records are marked: ``,quick`` ends their ``setting``, ``quick`` is
true and ``command`` is ``python -m bench.run <name> --quick``, so quick rows and full rows
are separate rows of the results file and never overwrite each other.

A benchmark that fails is reported, and the others still run; the exit status is then 1.

Example:
    >>> from bench import run
    >>> run.resolve(["all"]) == list(run.BENCHMARKS)
    True
    >>> run.quick_setting("qat")
    'PFTF_QAT_EPOCHS=1'
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

from pocketflow_tf import errors

#: Benchmark name -> module under ``bench.benchmarks`` exposing ``run() -> list[dict]``, in
#: the order ``all`` runs them: the baselines every other benchmark starts from first.
BENCHMARKS = {
    "baselines": "bench.benchmarks.baselines",
    "ptq": "bench.benchmarks.ptq",
    "qat": "bench.benchmarks.qat",
    "mixed": "bench.benchmarks.mixed",
    "codebooks": "bench.benchmarks.codebooks",
    # After the benchmarks whose files it measures (qat, mixed, codebooks).
    "deploy": "bench.benchmarks.deploy",
    "search": "bench.benchmarks.search",
    "zoo": "bench.benchmarks.zoo",
    "distributed": "bench.benchmarks.distributed",
    "sparsity": "bench.benchmarks.sparsity",
    "channel": "bench.benchmarks.channel",
    "compare": "bench.benchmarks.compare",
    "trials": "bench.benchmarks.trials",
    "auto": "bench.benchmarks.auto",
}

#: The ``--quick`` setting of each benchmark: its environment knobs (see each module's
#: docstring). Chosen so that ``all --quick`` keeps each benchmark's headline comparison on
#: ResNet-20 and stays within 90 minutes on 2 idle cores (estimated from the ``wall_s`` of
#: the full runs in bench/results; docs/results.md lists the estimate per benchmark).
QUICK: dict[str, dict[str, str]] = {
    # Both measure the cached models only (no training): nothing to make smaller.
    "baselines": {},
    "ptq": {},
    "qat": {"PFTF_QAT_EPOCHS": "1"},
    # 3 bits: where the sensitivity allocation and uniform bits differ most.
    "mixed": {"PFTF_MP_SETTINGS": "mixed-3,uniform-3", "PFTF_MP_EPOCHS": "1"},
    # Clustering only: PQ's layer-wise EM alone takes 10-40 minutes on 2 cores.
    "codebooks": {"PFTF_CB_METHODS": "cluster-16", "PFTF_CB_EPOCHS": "1"},
    # Measures files only; ResNet-20's, with ARM64 on 100 images (float is slow under qemu).
    "deploy": {"PFTF_DEPLOY_RECIPES": "resnet_at_fmnist", "PFTF_DEPLOY_ARM64_SAMPLES": "100"},
    "search": {"PFTF_SEARCH_TRIALS": "20", "PFTF_SEARCH_SEEDS": "1"},
    "zoo": {"PFTF_ZOO_MODELS": "MobileNet,ResNet50", "PFTF_ZOO_ROUNDS": "10"},
    # No Horovod: its TF 2.15 lane compiles for minutes on first use.
    "distributed": {"PFTF_DIST_CONFIGS": "1,tf-2,tf-2-ecq4", "PFTF_DIST_EPOCHS": "1"},
    "sparsity": {
        "PFTF_SPARSITY_RECIPES": "resnet_at_fmnist",
        "PFTF_SPARSITY_TARGETS": "0.9",
        "PFTF_SPARSITY_EPOCHS": "2",
    },
    # The 2x plan against uniform L1-norm pruning at 0.4x FLOPs.
    "channel": {
        "PFTF_CP_RECIPES": "resnet_at_fmnist",
        "PFTF_CP_KEEP": "0.4",
        "PFTF_CP_METHODS": "channel-lasso-auto-2x,channel-l1-uniform",
        "PFTF_CP_EPOCHS": "2",
    },
    # Issue 22's restated comparisons, smallest form: uniform against greedy at 0.3x FLOPs,
    # mixed-2.5 against uniform-2, one seed, 1 epoch (the full run: 5 allocations, 4 bit
    # settings, 3 seeds, 2 epochs, about 2.5-3 h on 2 cores).
    "compare": {
        "PFTF_CMP_SEEDS": "0",
        "PFTF_CMP_EPOCHS": "1",
        "PFTF_CMP_METHODS": "alloc-uniform,alloc-greedy",
        "PFTF_CMP_BITS": "mixed-2.5,uniform-2",
    },
    # Parallel trials: 4 trials of the smallest net with 1 and 2 trial workers.
    "trials": {"PFTF_TRIALS_TRIALS": "4"},
    "auto": {
        "PFTF_AUTO_TARGETS": "5x faster",
        "PFTF_AUTO_TRIALS": "4",
        "PFTF_AUTO_MAX_WALL_S": "900",
    },
}

ALL = "all"


def resolve(names: list[str]) -> list[str]:
    """The benchmarks to run for the command line's ``names``, in order, each once.

    ``all`` stands for every benchmark of :data:`BENCHMARKS` in its order.

    Raises:
        InvalidArgumentError: A name that is neither ``all`` nor a benchmark.

    Example:
        >>> resolve(["ptq", "baselines", "ptq"])
        ['ptq', 'baselines']
        >>> resolve(["ptqq"])
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `benchmark`: 'ptqq'. Accepted: all, baselines, ptq, qat, mixed, codebooks, deploy, search, zoo, distributed, sparsity, channel, compare, trials, auto.
    """
    out: list[str] = []
    for name in names:
        if name != ALL and name not in BENCHMARKS:
            raise errors.InvalidArgumentError("benchmark", name, ", ".join([ALL, *BENCHMARKS]))
        for one in BENCHMARKS if name == ALL else [name]:
            if one not in out:
                out.append(one)
    return out


def quick_setting(name: str) -> str:
    """The quick setting of benchmark ``name`` as environment assignments (for ``--list``).

    Example:
        >>> quick_setting("ptq")
        'same as full (measures the cached models only)'
    """
    knobs = QUICK[name]
    if not knobs:
        return "same as full (measures the cached models only)"
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in knobs.items())


@contextlib.contextmanager
def environment(knobs: dict[str, str]) -> Iterator[None]:
    """Sets ``knobs`` in ``os.environ`` for the block, then restores what was there.

    Example:
        >>> with environment({"PFTF_DEMO_KNOB": "1"}):
        ...     os.environ["PFTF_DEMO_KNOB"]
        '1'
        >>> "PFTF_DEMO_KNOB" in os.environ
        False
    """
    saved = {k: os.environ.get(k) for k in knobs}
    for k, v in knobs.items():
        if saved[k] not in (None, v):
            print(f"[bench] --quick sets {k}={v} (over {k}={saved[k]} from the environment)")
        os.environ[k] = v
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def mark_quick(recs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Records of a quick run: ``,quick`` ends the setting, ``quick`` is true, and the
    command is the one that reproduces them.

    Example:
        >>> mark_quick([{"setting": "epochs=1", "command": "x"}], "qat")
        [{'setting': 'epochs=1,quick', 'command': 'python -m bench.run qat --quick', 'quick': True}]
    """
    out = []
    for r in recs:
        setting = r.get("setting")
        out.append(
            {
                **r,
                "setting": f"{setting},quick" if setting else "quick",
                "command": f"python -m bench.run {name} --quick",
                "quick": True,
            }
        )
    return out


def run_benchmark(name: str, quick: bool = False) -> tuple[str, int]:
    """Runs one benchmark, writes its results file; returns ``(path, number of records)``.

    Example:
        >>> run_benchmark("baselines", quick=True)  # doctest: +SKIP
        ('.../bench/results/baselines.json', 3)
    """
    from bench import results_io

    resolve([name])  # a clear error for an unknown name
    with environment(QUICK[name] if quick else {}):
        recs = importlib.import_module(BENCHMARKS[name]).run()
    if quick:
        recs = mark_quick(recs, name)
    return results_io.write_results(name, recs), len(recs)


def check_cached_baselines() -> None:
    """Stops before anything runs when a full-recipe baseline is not cached (``--quick``
    reuses them; training ResNet-20 alone takes about two hours on 2 cores).

    Example:
        >>> check_cached_baselines()  # doctest: +SKIP
    """
    from bench import baselines
    from bench.benchmarks import baselines as baselines_bench

    paths = [baselines.full_recipe_path(name) for name in baselines_bench.RECIPES]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise SystemExit(
            f"--quick reuses the cached baselines, and these are missing: {missing}; "
            "train them first with `python -m bench.run baselines` (hours on 2 cores)"
        )


def run_many(names: list[str], quick: bool = False) -> list[dict[str, Any]]:
    """Runs ``names`` in order, printing progress and a summary; a failure does not stop
    the others. Returns one ``{"name", "records", "seconds", "error"}`` per benchmark.

    Example:
        >>> summary = run_many(["ptq", "qat"], quick=True)  # doctest: +SKIP
    """
    summary = []
    start_all = time.monotonic()
    for i, name in enumerate(names, 1):
        how = f"quick: {quick_setting(name)}" if quick else "full"
        print(f"[bench] ({i}/{len(names)}) {name} ({how}) ...", flush=True)
        start = time.monotonic()
        row: dict[str, Any] = {"name": name, "records": 0, "error": None}
        try:
            path, row["records"] = run_benchmark(name, quick)
        except Exception as e:  # noqa: BLE001  (report it, run the next benchmark)
            traceback.print_exc()
            row["error"] = f"{type(e).__name__}: {e}"[:300]
            path = None
        row["seconds"] = round(time.monotonic() - start, 1)
        summary.append(row)
        done = f"-> {path}" if path else f"FAILED: {row['error']}"
        print(
            f"[bench] ({i}/{len(names)}) {name}: {row['records']} record(s) in "
            f"{row['seconds']:.0f} s {done}",
            flush=True,
        )
    print(format_summary(summary, time.monotonic() - start_all), flush=True)
    return summary


def format_summary(summary: list[dict[str, Any]], total_s: float) -> str:
    """The final summary of :func:`run_many`: one line per benchmark and the total.

    Example:
        >>> print(format_summary([{"name": "ptq", "records": 6, "seconds": 95.0,
        ...                        "error": None}], 95.0))
        [bench] summary
          ptq           6 record(s)      95 s  ok
          total         6 record(s)      95 s  (1.6 min)
    """
    lines = ["[bench] summary"]
    for row in summary:
        status = "ok" if row["error"] is None else f"FAILED: {row['error']}"
        lines.append(
            f"  {row['name']:<12} {row['records']:>2} record(s) {row['seconds']:>7.0f} s  {status}"
        )
    n = sum(row["records"] for row in summary)
    lines.append(f"  {'total':<12} {n:>2} record(s) {total_s:>7.0f} s  ({total_s / 60:.1f} min)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`.

    Example:
        >>> build_parser().parse_args(["all", "--quick"]).quick
        True
    """
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run: {ALL} or any of {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--list", action="store_true", help="list the benchmarks and their quick setting"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small settings (see --list), cached baselines"
    )
    parser.add_argument("--no-table", action="store_true", help="do not regenerate README")
    return parser


def listing() -> str:
    """What ``--list`` prints: each benchmark, in ``all``'s order, with its quick setting.

    Example:
        >>> listing().splitlines()[1]
        'ptq          quick: same as full (measures the cached models only)'
    """
    return "\n".join(f"{name:<12} quick: {quick_setting(name)}" for name in BENCHMARKS)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point (see the module docstring).

    Example:
        >>> main(["--list"])  # doctest: +ELLIPSIS
        baselines    quick: same as full (measures the cached models only)
        ...
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list or not args.names:
        print(listing())
        return
    try:
        names = resolve(args.names)
    except errors.InvalidArgumentError as e:
        parser.error(str(e))
    if args.quick:
        check_cached_baselines()
    summary = run_many(names, args.quick)
    if not args.no_table:
        from bench import make_table

        make_table.update_readme()
    failed = [row["name"] for row in summary if row["error"] is not None]
    if failed:
        raise SystemExit(f"[bench] failed: {', '.join(failed)}")


if __name__ == "__main__":
    main(sys.argv[1:])
