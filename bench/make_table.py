"""Regenerates the README results table from ``bench/results/*.json``.

The table sits between ``<!-- results:start -->`` and ``<!-- results:end -->`` in README.md;
nothing else in README is touched. One sub-table per benchmark; a column appears when at
least one record of that benchmark measured it. Each sub-table names the host(s) that
measured its rows (CPU model, ISA flags, CPUs, LiteRT and TF versions; "host unknown" for
rows of runs before records named their host), with a ``host`` column when there are several.

Example:
    >>> from bench import make_table
    >>> make_table.format_value("acc", 0.93456)
    '93.46 %'
"""

from __future__ import annotations

import glob
import json
import os
import re
import statistics
import sys

from bench import host
from pocketflow_tf import atomic_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- results:start -->", "<!-- results:end -->"

# (field, header) in display order; "acc_delta" is derived from acc - acc_baseline.
COLUMNS = (
    ("model", "model"),
    ("method", "method"),
    ("setting", "setting"),
    # Only when a table's rows come from more than one host (see host_attribution).
    ("host_label", "host"),
    # auto: the chain the search chose, and the verdicts (held-out: the learner's own)
    ("chain", "chain"),
    ("met", "target met (held-out)"),
    ("met_on_test", "met on test"),
    # Rows of one benchmark may differ in fine-tuning length (a knob, not part of the setting).
    ("epochs", "epochs"),
    ("acc_pruned", "acc before fine-tune"),
    ("acc", "test acc"),
    ("acc_delta", "Δ acc (pt)"),
    ("params", "params"),
    ("flops", "FLOPs/img"),
    ("flops_ratio", "FLOPs ×"),
    ("params_ratio", "params ×"),
    ("bytes", ".tflite B"),
    ("bytes_gzip", "gzip B"),
    ("compressed_bytes", "compressed B"),
    ("compression_ratio", "compression ×"),
    ("average_bits", "avg weight bits"),
    ("bytes_ratio", "× float bytes"),
    # mixed: the int4 file of each setting (pocketflow_tf.int4_export)
    ("int4_bytes", "int4 .tflite B"),
    ("int4_vs_int8", "int4 ÷ int8 B"),
    ("int4_acc", "int4 test acc"),
    ("int4_latency_ratio", "int4 latency ×"),
    ("latency_ms", "latency ms"),
    ("latency_ratio", "latency ×"),
    # deploy: the file on the aarch64 LiteRT under qemu against x86 (bench/benchmarks/deploy.py)
    ("arm64_agreement", "ARM64 top-1 agreement"),
    ("arm64_max_steps", "ARM64 max diff (steps)"),
    ("arm64_max_abs_diff", "ARM64 max abs diff"),
    ("arm64", "ARM64"),
    # codebooks: the compact .tflite (codes + codebooks in the file, pq-compact and
    # cluster-compact)
    ("compact_bytes", "compact .tflite B"),
    ("compact_bytes_gzip", "compact gzip B"),
    ("compact_vs_float", "compact ÷ float B"),
    ("compact", "compact file"),
    ("compact_acc", "compact acc"),
    ("compact_latency_ratio", "compact latency × (vs decoded)"),
    # distributed: worker processes, and the loopback "hosts" of a run_cluster.sh
    # configuration; trials: the auto search's trial worker processes
    ("workers", "workers"),
    ("hosts", "hosts"),
    ("samples_per_s", "train img/s"),
    ("bytes_per_step", "grad B/step"),
    ("lo_bytes_per_step", "loopback B/step"),
    ("exchange_ratio", "grad bytes ÷"),
    ("curve_val_acc", "test acc per epoch (%)"),
    ("best_score", "best proxy score (median of seeds)"),
    # trials: the auto search with 1 and 2 trial worker processes (bench/benchmarks/trials.py)
    ("search_s", "search s"),
    ("search_ratio", "search speed-up ×"),
    ("best_value", "best trial value"),
    ("complete", "complete"),
    ("failed", "failed"),
    ("lost", "lost"),
    ("attempts", "attempts"),
    ("trials_to_random_best", "trials to random's best, per seed"),
    # zoo: structure of keras.applications models (bench/benchmarks/zoo.py)
    ("prunable_groups", "prunable groups"),
    ("groups", "groups"),
    ("prunable_flops_share", "FLOPs in prunable groups"),
    ("blocked_layers", "blocked layers"),
    ("dead_channel_ok", "dead-channel surgery exact"),
    ("float_export_ok", "float .tflite verified"),
    ("int8_export_ok", "int8 .tflite verified"),
    ("int8_logit_corr", "int8 logit corr"),
    ("qat_wrapper_ok", "QAT wraps"),
    ("sparsity_wrapper_ok", "sparsity wraps"),
    ("failed_stages", "failed stages"),
    ("skipped", "not measured because"),
    ("wall_s", "wall s"),
)


def format_value(field: str, value) -> str:
    """Formats one cell.

    Example:
        >>> format_value("acc_delta", -0.12)
        '-0.12'
    """
    if value is None:
        return "–"
    if field in ("acc", "acc_pruned", "int4_acc", "compact_acc"):
        return f"{100 * value:.2f} %"
    if field == "acc_delta":
        return f"{value:+.2f}"
    if field in (
        "flops_ratio",
        "params_ratio",
        "latency_ratio",
        "bytes_ratio",
        "int4_vs_int8",
        "int4_latency_ratio",
        "compact_latency_ratio",
        "compact_vs_float",
    ):
        return f"{value:.3f}"
    if field in (
        "params",
        "flops",
        "bytes",
        "bytes_gzip",
        "int4_bytes",
        "compressed_bytes",
        "compact_bytes",
        "compact_bytes_gzip",
        "bytes_per_step",
        "lo_bytes_per_step",
    ):
        return f"{int(value):,}"
    if field in ("compression_ratio", "exchange_ratio"):
        return f"{value:.1f}"
    if field == "prunable_flops_share":
        return f"{100 * value:.1f} %"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if field == "failed_stages":
        return ", ".join(value) or "–"
    if field == "arm64_max_abs_diff":
        return f"{value:.2g}"
    if field == "latency_ms":
        return f"{value:.3f}"
    if field == "average_bits":
        return f"{value:.2f}"
    if field == "best_score":
        return f"{value:.4f}"
    if field == "trials_to_random_best":
        return " / ".join("–" if v is None else str(v) for v in value)
    if field == "curve_val_acc":
        return " / ".join(f"{100 * v:.1f}" for v in value)
    if field == "best_value":
        return f"{value:.4f}"
    if field in ("wall_s", "samples_per_s", "search_s"):
        return f"{value:.0f}"
    return str(value)


def _split_seed(setting: str) -> tuple[str, int]:
    """``"k=1,seed=2"`` -> ``("k=1", 2)``; no ``seed=`` part means the default seed 0."""
    parts = setting.split(",")
    seeds = [int(p[5:]) for p in parts if re.fullmatch(r"seed=\d+", p)]
    rest = ",".join(p for p in parts if not re.fullmatch(r"seed=\d+", p))
    return rest, (seeds[0] if seeds else 0)


def seed_summary(recs: list[dict]) -> list[str]:
    """Mean and spread of test accuracy over seeds, for settings measured with 2+ seeds.

    A record's seed is the ``seed=N`` in its setting (0 when absent: the default seed), so
    rows that differ only in seed are grouped. A 0.1 pt difference between two single runs
    is within seed noise; this is what comparisons should be read from.

    Example:
        >>> recs = [dict(model="m", method="a", setting="k=1", acc=0.90),
        ...         dict(model="m", method="a", setting="k=1,seed=1", acc=0.92)]
        >>> seed_summary(recs)[2]
        '| m | a | k=1 | 0, 1 | 91.00 % | 1.41 | 90.00 – 92.00 % |'
    """
    groups: dict[tuple, list[tuple[int, float]]] = {}
    for r in recs:
        if r.get("acc") is None or r.get("setting") is None:
            continue
        setting, seed = _split_seed(r["setting"])
        groups.setdefault((r.get("model"), r.get("method"), setting), []).append((seed, r["acc"]))
    rows = []
    for (model, method, setting), runs in groups.items():
        if len(runs) < 2:
            continue
        accs = [100 * a for _, a in runs]
        seeds = ", ".join(str(s) for s, _ in sorted(runs))
        rows.append(
            f"| {model} | {method} | {setting} | {seeds} | {statistics.mean(accs):.2f} % | "
            f"{statistics.stdev(accs):.2f} | {min(accs):.2f} – {max(accs):.2f} % |"
        )
    if not rows:
        return []
    return [
        "| model | method | setting | seeds | mean test acc | std (pt) | range |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


def _mean_std_cell(values: list[float] | None) -> str:
    """``"mean ± std %"`` of per-seed accuracies (``–`` when none; no ``±`` with one seed).

    Example:
        >>> _mean_std_cell([0.9, 0.92]), _mean_std_cell([0.9]), _mean_std_cell(None)
        ('91.00 ± 1.41 %', '90.00 %', '–')
    """
    if not values:
        return "–"
    spread = f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{100 * statistics.mean(values):.2f}{spread} %"


def phase_summary(recs: list[dict]) -> list[str]:
    """The before/after table of records that carry a ``phase`` (``bench.benchmarks.compare``):
    one row per (model, method, setting) with the mean ± std test accuracy over the seeds
    before and after the fine-tune (and before with BatchNorm re-estimated, when measured),
    and what the method is held to (FLOPs ratio or average weight bits, measured, mean over
    the seeds).

    Example:
        >>> recs = [dict(model="m", method="a", setting="k=1,phase=before", phase="before",
        ...              seeds=[0, 1], acc_per_seed=[0.49, 0.51], flops_ratio=0.3),
        ...         dict(model="m", method="a", setting="k=1,phase=after", phase="after",
        ...              seeds=[0, 1], acc_per_seed=[0.9, 0.9], flops_ratio=0.3)]
        >>> phase_summary(recs)[2]
        '| m | a | k=1 | 0, 1 | 50.00 ± 1.41 % | 90.00 ± 0.00 % | FLOPs × 0.300 |'
    """
    rows: dict[tuple, dict[str, dict]] = {}
    for r in recs:
        setting = ",".join(p for p in r["setting"].split(",") if not p.startswith("phase="))
        rows.setdefault((r.get("model"), r.get("method"), setting), {})[r["phase"]] = r
    if not rows:
        return []
    bn = any(r.get("acc_before_bn_per_seed") for r in recs)
    lines = [
        "| model | method | setting | seeds | before fine-tune (mean ± std) "
        + ("| before, BN re-estimated " if bn else "")
        + "| after fine-tune (mean ± std) | held to |",
        "|---|---|---|---|---|---|" + ("---|" if bn else "") + "---|",
    ]
    for (model, method, setting), phases in rows.items():
        one = phases.get("after") or phases.get("before")
        if one.get("flops_ratio") is not None:
            held = f"FLOPs × {one['flops_ratio']:.3f}"
        elif one.get("average_bits") is not None:
            held = f"{one['average_bits']:.2f} avg bits"
        else:
            held = "–"
        cells = [model, method, setting, ", ".join(str(s) for s in one.get("seeds") or [])]
        cells.append(_mean_std_cell(phases.get("before", {}).get("acc_per_seed")))
        if bn:
            cells.append(_mean_std_cell(one.get("acc_before_bn_per_seed")))
        cells += [_mean_std_cell(phases.get("after", {}).get("acc_per_seed")), held]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


#: Records whose field has this value go to a table of their own after the main one, under
#: this caption: the same rows measured another way (zoo: models built by Keras 3 and
#: bridged) stay side by side with, not mixed into, the original rows.
SUBTABLES = (
    (
        "built_by",
        "keras3",
        "built by Keras 3, saved by Keras 3 as `.keras`, loaded through the file bridge",
    ),
)


def split_subtables(recs: list[dict]) -> list[tuple[str | None, list[dict]]]:
    """``[(caption, records)]``: the main rows (caption ``None``), then each sub-table's.

    Example:
        >>> recs = [dict(model="a"), dict(model="b", built_by="keras3")]
        >>> [(c is None, [r["model"] for r in rs]) for c, rs in split_subtables(recs)]
        [(True, ['a']), (False, ['b'])]
    """
    rest, parts = list(recs), []
    for field, value, caption in SUBTABLES:
        mine = [r for r in rest if r.get(field) == value]
        if mine:
            rest = [r for r in rest if r.get(field) != value]
            parts.append((caption, mine))
    return ([(None, rest)] if rest else []) + parts


def host_attribution(recs: list[dict]) -> str:
    """The line naming the host(s) that measured ``recs`` (:func:`bench.host.describe`).

    One host: that host. Several (rows merged from runs on different machines, or rows of
    runs before records named their host): each gets a label, stored in the rows'
    ``host_label`` so that the table shows it in a ``host`` column.

    Example:
        >>> a = {"cpu_model": "X", "isa": ["avx2"], "cpus": 2, "litert": "2.3.0"}
        >>> host_attribution([dict(host=a), dict(host=a)])
        '*measured on: X (avx2), 2 CPUs, LiteRT 2.3.0*'
        >>> recs = [dict(host=a), dict()]
        >>> print(host_attribution(recs)); [r["host_label"] for r in recs]
        *measured on (column host): H1 = X (avx2), 2 CPUs, LiteRT 2.3.0; unknown = host unknown (recorded before records named their host)*
        ['H1', 'unknown']
    """
    keys: dict[str, str] = {}  # json of the host -> its label, in order of appearance
    described: dict[str, str] = {}
    for r in recs:
        key = json.dumps(r.get("host"), sort_keys=True)
        if key not in keys:
            keys[key] = "unknown" if not r.get("host") else f"H{sum(k != 'null' for k in keys) + 1}"
            described[keys[key]] = host.describe(r.get("host"))
    if len(keys) == 1:
        return f"*measured on: {next(iter(described.values()))}*"
    for r in recs:
        r["host_label"] = keys[json.dumps(r.get("host"), sort_keys=True)]
    listed = "; ".join(f"{label} = {text}" for label, text in described.items())
    return f"*measured on (column host): {listed}*"


def _table(recs: list[dict]) -> list[str]:
    """One Markdown table: a column for each field at least one record measured."""
    cols = [(k, h) for k, h in COLUMNS if any(r.get(k) is not None for r in recs)]
    lines = [
        "| " + " | ".join(h for _, h in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for r in recs:
        lines.append("| " + " | ".join(format_value(k, r.get(k)) for k, _ in cols) + " |")
    if any("passed" in r for r in recs):  # a benchmark with a pass criterion states the count
        n = sum(1 for r in recs if r.get("passed"))
        lines += ["", f"*passed: {n} of {len(recs)} rows*"]
    return lines


def render(results_dir: str = os.path.join(ROOT, "bench", "results")) -> str:
    """The Markdown of every results file, one table per benchmark.

    Example:
        >>> render("/nonexistent")
        '_No benchmark results yet: run `python -m bench.run <name>`._'
    """
    files = sorted(glob.glob(os.path.join(results_dir, "*.json")))
    if not files:
        return "_No benchmark results yet: run `python -m bench.run <name>`._"
    parts = []
    for path in files:
        with open(path) as f:
            doc = json.load(f)
        phased = [r for r in doc["records"] if r.get("phase")]
        recs = [r for r in doc["records"] if not r.get("phase")]
        for r in recs:
            if r.get("acc") is not None and r.get("acc_baseline") is not None:
                r["acc_delta"] = 100 * (r["acc"] - r["acc_baseline"])
        for caption, rows in split_subtables(recs):
            commands = sorted({r["command"] for r in rows if r.get("command")})
            title = f"**{doc['benchmark']}**" + (f", {caption}" if caption else "")
            if caption:
                parts.append("")
            parts.append(f"{title} (`{'`, `'.join(commands)}`)\n")
            parts += [host_attribution(rows), ""]
            parts += _table(rows)
        summary = seed_summary(recs)
        if summary:
            parts += ["", f"*{doc['benchmark']}, over seeds:*", "", *summary]
        if phased:
            # Records of one method and phase summarise several seeds already: one row per
            # method, before and after side by side, instead of the per-record table.
            commands = sorted({r["command"] for r in phased if r.get("command")})
            parts.append(f"**{doc['benchmark']}** ({commands_text(commands)})\n")
            parts += [host_attribution(phased), "", *phase_summary(phased)]
        parts.append("")
    return "\n".join(parts).rstrip()


def commands_text(commands: list[str]) -> str:
    """The commands of a table's caption: each in full when there are at most two, else
    the command they share with the environment settings dropped (each record keeps its
    own in the JSON file), so a caption stays one line.

    Example:
        >>> commands_text(["python -m bench.run compare"])
        '`python -m bench.run compare`'
        >>> commands_text(["A=1 python -m x", "A=2 python -m x", "B=1 python -m x"])
        "`python -m x` with per-row settings (each record's `command` in the JSON file)"
    """
    if len(commands) <= 2:
        return ", ".join(f"`{c}`" for c in commands)
    bare = sorted({" ".join(w for w in c.split() if "=" not in w) for c in commands})
    return (
        ", ".join(f"`{c}`" for c in bare)
        + " with per-row settings (each record's `command` in the JSON file)"
    )


def update_readme(readme: str = os.path.join(ROOT, "README.md")) -> None:
    """Replaces the table between the markers in README (atomic write).

    Example:
        >>> update_readme()  # doctest: +SKIP
    """
    with open(readme) as f:
        text = f.read()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} lacks the markers {START} / {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    atomic_io.write_text(readme, f"{head}{START}\n{render()}\n{END}{tail}")
    print(f"[bench] README table regenerated from bench/results/ ({readme})")


if __name__ == "__main__":
    update_readme(*sys.argv[1:])
