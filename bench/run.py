"""Runs named benchmarks and writes ``bench/results/<name>.json``; then regenerates README.

Usage::

    python -m bench.run --list
    python -m bench.run baselines ptq          # full recipes (long: ResNet-20 trains ~1 h)
    python -m bench.run baselines --no-table   # leave README untouched

Trained baselines are cached in ``bench/artifacts`` (resumable), so a second run of any
benchmark only re-measures.

Example:
    >>> from bench import run
    >>> "baselines" in run.BENCHMARKS
    True
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

#: Benchmark name -> module under ``bench.benchmarks`` exposing ``run() -> list[dict]``.
BENCHMARKS = {
    "baselines": "bench.benchmarks.baselines",
    "ptq": "bench.benchmarks.ptq",
    "sparsity": "bench.benchmarks.sparsity",
    "channel": "bench.benchmarks.channel",
    "qat": "bench.benchmarks.qat",
    "mixed": "bench.benchmarks.mixed",
    "auto": "bench.benchmarks.auto",
    "codebooks": "bench.benchmarks.codebooks",
    "distributed": "bench.benchmarks.distributed",
    "search": "bench.benchmarks.search",
    "zoo": "bench.benchmarks.zoo",
}


def run_benchmark(name: str) -> str:
    """Runs one benchmark, writes its results file and returns the file's path.

    Example:
        >>> run_benchmark("baselines")  # doctest: +SKIP
    """
    from bench import results_io

    if name not in BENCHMARKS:
        raise SystemExit(f"unknown benchmark {name!r}; accepted: {sorted(BENCHMARKS)}")
    start = time.time()
    recs = importlib.import_module(BENCHMARKS[name]).run()
    path = results_io.write_results(name, recs)
    print(f"[bench] {name}: {len(recs)} record(s) in {time.time() - start:.0f} s -> {path}")
    return path


def main(argv: list[str] | None = None) -> None:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run: {sorted(BENCHMARKS)}")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--no-table", action="store_true", help="do not regenerate README")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        print("\n".join(sorted(BENCHMARKS)))
        return
    for name in args.names:
        run_benchmark(name)
    if not args.no_table:
        from bench import make_table

        make_table.update_readme()


if __name__ == "__main__":
    main(sys.argv[1:])
