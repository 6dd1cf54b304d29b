"""Measures TFLite latency, and the interleaved latency ratio against a reference model.

Usage:
    python tools/benchmark_tflite.py --model m_int8.tflite --reference m_float.tflite \\
        --num_threads 1 --runs 200 --json bench/results/int8_vs_float.json

Example:
    $ python tools/benchmark_tflite.py --model m.tflite --runs 100
    m.tflite: median 0.412 ms (p10 0.398, p90 0.455, mean 0.420) over 100 runs, batch 1, 1 thread(s)
"""

from __future__ import annotations

import json

from absl import flags

from pocketflow_tf import atomic_io, cli_errors, latency, tflite_load

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "The .tflite model to time.")
flags.DEFINE_string("reference", None, "Optional .tflite model to compare against.")
flags.DEFINE_integer("batch_size", 1, "Batch size of the input tensor.")
flags.DEFINE_integer("num_threads", 1, "Interpreter threads.")
flags.DEFINE_integer("warmup", 20, "Untimed invokes before timing.")
flags.DEFINE_integer("runs", 200, "Timed invokes of --model (latency stats).")
flags.DEFINE_integer("rounds", 50, "A/B rounds of the interleaved comparison.")
flags.DEFINE_integer("runs_per_round", 10, "Invokes per model per A/B round.")
flags.DEFINE_string("json", None, "Write the results to this JSON file (atomically).")
cli_errors.define_debug_flag()


def _describe(name: str, s: latency.LatencyStats) -> str:
    return (
        f"{name}: median {s.median_ms:.3f} ms (p10 {s.p10_ms:.3f}, p90 {s.p90_ms:.3f}, "
        f"mean {s.mean_ms:.3f}) over {s.runs} runs, batch {s.batch_size}, "
        f"{s.num_threads} thread(s)"
    )


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.json:  # checked first: a long benchmark is not lost to an unwritable path
        cli_errors.check_output_path("json", FLAGS.json, suffixes=(".json",))
    for path in (FLAGS.model, FLAGS.reference):
        if path:  # a bad --reference fails now, not after --model's timing
            tflite_load.open_interpreter(path)
    common = dict(batch_size=FLAGS.batch_size, num_threads=FLAGS.num_threads, warmup=FLAGS.warmup)
    stats = latency.measure_latency(FLAGS.model, runs=FLAGS.runs, **common)
    print(_describe(FLAGS.model, stats))
    result = {"model": FLAGS.model, "latency": stats.to_dict()}
    if FLAGS.reference:
        ref_stats = latency.measure_latency(FLAGS.reference, runs=FLAGS.runs, **common)
        print(_describe(FLAGS.reference, ref_stats))
        ratio = latency.interleaved_ratio(
            FLAGS.model,
            FLAGS.reference,
            rounds=FLAGS.rounds,
            runs_per_round=FLAGS.runs_per_round,
            **common,
        )
        print(
            f"interleaved over {ratio.rounds} rounds: latency ratio {ratio.latency_ratio:.3f} "
            f"(p10 {ratio.ratio_p10:.3f}, p90 {ratio.ratio_p90:.3f}), "
            f"speedup {ratio.speedup:.3f}x"
        )
        result.update(
            reference=FLAGS.reference, reference_latency=ref_stats.to_dict(), ratio=ratio.to_dict()
        )
    if FLAGS.json:
        atomic_io.write_json(FLAGS.json, result)
        print(f"wrote {FLAGS.json}")
    else:
        print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    flags.mark_flags_as_required(["model"])
    cli_errors.run(main)  # one error line and exit status 2; tracebacks with --debug
