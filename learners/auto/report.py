"""Writes the automated compression's report: ``auto_report.json`` and a self-contained
``auto_report.html``.

The HTML page needs no network: the CSS is inline and the plots are matplotlib PNGs embedded
as base64 ``data:`` URIs. It shows the target and the answer (met or not, and why), the
final model's figures next to the dense model's, the search curve, the Pareto front of
accuracy x latency x bytes, the per-layer channel counts of the chosen plan and the table of
every trial. Both files are written atomically.

Matplotlib is driven through its object API (``Figure`` + the Agg canvas), never
``pyplot``: a library must not switch the user's plotting backend or leak global figures.

Example:
    >>> import tempfile
    >>> rep = {"target_text": "2x faster", "answer": {"met": False, "summary": "no trial"},
    ...        "trials": [], "pareto": []}
    >>> json_path, html_path = write(rep, tempfile.mkdtemp())
    >>> "2x faster" in open(html_path).read()
    True
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from pocketflow_tf import atomic_io

JSON_NAME = "auto_report.json"
HTML_NAME = "auto_report.html"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.86em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
tr.front td{background:#f2f8ff}tr.chosen td{background:#fff6d8;font-weight:600}
tr.failed td{color:#999}
.answer{padding:.8em 1em;border-radius:6px;margin:1em 0}
.met{background:#e6f6e6;border:1px solid #7c7}.missed{background:#fbeaea;border:1px solid #d88}
.muted{color:#777;font-size:.9em}img{max-width:100%;border:1px solid #eee}
code{background:#f4f4f4;padding:0 .25em}
"""


def write(report: Mapping[str, Any], directory: str | os.PathLike) -> tuple[str, str]:
    """Writes ``<directory>/auto_report.json`` and ``<directory>/auto_report.html`` atomically.

    Args:
        report: The :class:`~learner.AutoLearner` report (missing sections are skipped).
        directory: Destination folder (created if needed).

    Returns:
        ``(json_path, html_path)``.

    Example:
        >>> import tempfile
        >>> j, h = write({"answer": {"met": True, "summary": "ok"}}, tempfile.mkdtemp())
        >>> os.path.basename(j), os.path.basename(h)
        ('auto_report.json', 'auto_report.html')
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    json_path = atomic_io.write_json(os.path.join(directory, JSON_NAME), dict(report))
    html_path = atomic_io.write_text(os.path.join(directory, HTML_NAME), render_html(report))
    return json_path, html_path


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page.

    Example:
        >>> page = render_html({"answer": {"met": True, "summary": "done"}})
        >>> page.startswith("<!DOCTYPE html>"), "http" in page
        (True, False)
    """
    answer = report.get("answer", {})
    met = bool(answer.get("met"))
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<title>pocketflow-tf automated compression</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Automated compression report</h1>",
        f"<p>Target: <b>{_e(report.get('target_text', '?'))}</b></p>",
        f"<div class='answer {'met' if met else 'missed'}'><b>"
        f"{'Target met' if met else 'Target NOT met'}</b><br>{_e(answer.get('summary', ''))}",
    ]
    misses = answer.get("misses") or []
    if misses:
        parts.append("<ul>" + "".join(f"<li>{_e(m.get('text'))}</li>" for m in misses) + "</ul>")
    parts.append("</div>")
    parts += _final_section(report)
    parts += _plan_section(report)
    trials = report.get("trials") or []
    chosen = (report.get("chosen") or {}).get("trial")
    if trials:
        parts.append("<h2>Search</h2>")
        parts.append(f"<p class='muted'>{_e(_search_line(report))}</p>")
        parts.append(_img(plot_search_curve(trials), "search curve: score per trial"))
        parts.append("<h2>Pareto front: accuracy x latency x bytes</h2>")
        parts.append(
            _img(
                plot_pareto(
                    trials, report.get("pareto") or [], report.get("dense"), chosen, report
                ),
                "Pareto front",
            )
        )
    groups = (report.get("final") or {}).get("groups") or []
    parts.append("<h2>Channels per layer group (chosen plan)</h2>")
    if groups:
        parts.append(_img(plot_channels(groups), "channel counts"))
        parts.append(
            _table(
                ["group (first producer)", "dense", "kept", "kept %", "layers"],
                [
                    [
                        g["key"],
                        g["size"],
                        g["kept"],
                        f"{100 * g['kept'] / g['size']:.0f}",
                        ", ".join(g.get("layers", [])),
                    ]
                    for g in groups
                ],
                left=(0, 4),
            )
        )
    else:
        parts.append("<p class='muted'>The chosen chain does not prune channels.</p>")
    if trials:
        parts.append("<h2>All trials</h2>")
        parts.append(_trials_table(trials, set(report.get("pareto") or []), chosen))
    data = report.get("data")
    if data:
        parts.append("<h2>Data</h2>")
        parts.append(_table(["", "value"], [[k, v] for k, v in data.items()], left=(0, 1)))
    settings = report.get("settings")
    if settings:
        parts.append("<h2>Settings</h2>")
        parts.append(f"<pre>{_e(json.dumps(settings, indent=1, default=str))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


# -- sections ------------------------------------------------------------------------------


def _final_section(report: Mapping[str, Any]) -> list[str]:
    final = report.get("final") or {}
    f = final.get("figures")
    dense = report.get("dense") or {}
    if not f:
        return []
    rows = [
        [
            "held-out accuracy (.tflite)",
            _num(f.get("acc_dense"), 4),
            _num(f.get("acc"), 4),
            f"{0.0 - (f.get('acc_drop') or 0.0) + 0.0:+.2f} pt",
        ],
        [
            "latency (ms, 1 thread, batch 1)",
            _num(f.get("reference_ms"), 4),
            _num(f.get("candidate_ms"), 4),
            f"{_num(f.get('latency_ratio'), 3)}x ({_num(f.get('speedup'), 2)}x faster)",
        ],
        [".tflite bytes", dense.get("bytes"), f.get("bytes"), f"{_num(f.get('bytes_ratio'), 3)}x"],
        [".tflite bytes (gzip)", dense.get("bytes_gzip"), f.get("bytes_gzip"), ""],
        [
            "FLOPs",
            dense.get("flops"),
            _scaled(dense.get("flops"), f.get("flops_ratio")),
            f"{_num(f.get('flops_ratio'), 3)}x",
        ],
        [
            "parameters",
            dense.get("params"),
            _scaled(dense.get("params"), f.get("params_ratio")),
            f"{_num(f.get('params_ratio'), 3)}x",
        ],
    ]
    val = report.get("validation")
    if val:
        rows.insert(
            1,
            [
                f"test accuracy (.tflite, {val.get('n')} validation_data samples)",
                _num(val.get("acc_dense"), 4),
                _num(val.get("acc_final"), 4),
                f"{100.0 * ((val.get('acc_final') or 0.0) - (val.get('acc_dense') or 0.0)):+.2f} pt",
            ],
        )
    out = [
        "<h2>Final model vs dense</h2>",
        f"<p>Chain <b>{_e(final.get('chain'))}</b> with {_e(_params(final.get('params') or {}))}"
        + (f"; int8 by <b>{_e(final.get('int8_method'))}</b>" if final.get("int8_method") else "")
        + f". Deployable file: <code>{_e(final.get('tflite'))}</code> ({_e(f.get('mode'))}, verified).</p>",
        _table(["", "dense (float)", "final", "ratio"], rows, left=(0,)),
    ]
    notes = []
    if val:
        notes.append(f"Test accuracy: {_e(val.get('note'))}.")
    caveat = (report.get("data") or {}).get("holdout_caveat")
    if caveat:
        notes.append(f"Held-out split: {_e(caveat)}.")
    ft = final.get("fine_tune")
    if ft:
        curve = ", ".join(f"{e}: {a:.4f}" for e, a, _ in ft.get("curve") or [])
        notes.append(
            # "planned" is a ceiling (as many epochs as the time left allows), not a schedule.
            f"Final fine-tune: {len(ft.get('curve') or [])} epoch(s) of at most "
            f"{ft.get('planned_epochs')}, ended by <b>{_e(ft.get('reason'))}</b> (stops at held-out "
            f"accuracy {_num(ft.get('floor'), 4)}); kept epoch {ft.get('best_epoch')}. "
            f"Held-out accuracy by epoch: {_e(curve)}."
        )
    out += [f"<p class='muted'>{n}</p>" for n in notes]
    return out


def _plan_section(report: Mapping[str, Any]) -> list[str]:
    plan = report.get("plan")
    if not plan:
        return []
    out = ["<h2>Plan</h2>", "<ul>"]
    out += [f"<li><b>{_e(c['name'])}</b>: {_e(c['summary'])}</li>" for c in plan.get("chains", [])]
    out.append("</ul><p class='muted'>Why: " + _e("; ".join(plan.get("notes", []))) + "</p>")
    rows = []
    for p in plan.get("space", []):
        if p["kind"] == "choice":
            rows.append([p["name"], "choice", ", ".join(map(str, p["values"]))])
        else:
            rows.append(
                [
                    p["name"],
                    p["kind"] + (" (log)" if p.get("log") else ""),
                    f"{p['low']:.3g} .. {p['high']:.3g}",
                ]
            )
    out.append(_table(["parameter", "kind", "values"], rows, left=(0, 1, 2)))
    return out


def _search_line(report: Mapping[str, Any]) -> str:
    s = report.get("search") or {}
    return (
        f"optimizer {s.get('optimizer')}, {s.get('trials')} trials ({s.get('complete')} complete, "
        f"{s.get('failed')} failed, {s.get('meeting_resources')} meeting the resource goals), "
        f"stopped by {s.get('stop_reason')}. A trial meeting every resource goal scores its "
        "held-out accuracy as extrapolated from its fine-tuning curve to the final "
        "fine-tune's length ('predicted'; >= 0); one missing a goal scores that accuracy - 1 - "
        "its log-ratio shortfall (< 0)."
    )


def _trials_table(trials: Sequence[Mapping[str, Any]], front: set, chosen: int | None) -> str:
    head = [
        "#",
        "status",
        "chain",
        "FLOPs keep",
        "params keep",
        "sparsity",
        "criterion",
        "lr factor",
        "acc",
        "predicted",
        "drop pt",
        "speed-up",
        "bytes",
        "FLOPs",
        "meets",
        "score",
        "s",
        "note",
    ]
    rows, classes = [], []
    for t in trials:
        p = t.get("params") or {}
        rows.append(
            [
                f"{t['number']}{' ★' if t['number'] in front else ''}",
                t.get("status"),
                t.get("chain"),
                _num(p.get("flops_keep"), 3),
                _num(p.get("params_keep"), 3),
                _num(p.get("sparsity"), 3),
                p.get("criterion", ""),
                _num(p.get("lr_factor"), 3),
                _num(t.get("acc"), 4),
                _num(t.get("acc_predicted"), 4),
                _num(t.get("acc_drop"), 2),
                _num(t.get("speedup"), 2),
                t.get("bytes") if t.get("bytes") is not None else "",
                _num(t.get("flops_ratio"), 3),
                {True: "yes", False: "no"}.get(t.get("meets_resources"), ""),
                _num(t.get("value"), 4),
                _num(t.get("wall_s"), 1),
                t.get("error") or t.get("missed") or "",
            ]
        )
        classes.append(
            "chosen"
            if t["number"] == chosen
            else "front"
            if t["number"] in front
            else "failed"
            if t.get("status") == "failed"
            else ""
        )
    return _table(head, rows, left=(1, 2, 6, 17), row_classes=classes) + (
        "<p class='muted'>★ Pareto front (accuracy x latency x bytes); highlighted row: chosen "
        "trial. 'meets': every resource goal met in the proxy evaluation.</p>"
    )


# -- plots ---------------------------------------------------------------------------------


def _figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def plot_search_curve(trials: Sequence[Mapping[str, Any]]) -> bytes:
    """PNG: each trial's score and the best score so far, by trial number.

    Example:
        >>> png = plot_search_curve([{"number": 0, "status": "complete", "value": 0.9,
        ...                           "meets_resources": True}])
        >>> png[:4]
        b'\\x89PNG'
    """
    fig = _figure()
    ax = fig.add_subplot()
    best, xs, ys = None, [], []
    for t in sorted(trials, key=lambda t: t["number"]):
        v = t.get("value")
        if t.get("status") == "complete" and v is not None:
            ok = bool(t.get("meets_resources"))
            ax.scatter(
                [t["number"]],
                [v],
                c="tab:green" if ok else "tab:red",
                marker="o" if ok else "x",
                zorder=3,
            )
            best = v if best is None else max(best, v)
        elif t.get("status") == "failed":
            ax.axvline(t["number"], color="#ccc", lw=0.8, ls=":")
        if best is not None:
            xs.append(t["number"])
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:blue", label="best so far")
    ax.axhline(0.0, color="#888", lw=0.8, ls="--")
    ax.set_xlabel("trial")
    ax.set_ylabel("score (held-out accuracy if the goals are met, < 0 if not)")
    ax.scatter([], [], c="tab:green", label="meets resource goals")
    ax.scatter([], [], c="tab:red", marker="x", label="misses a goal")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


def plot_pareto(
    trials: Sequence[Mapping[str, Any]],
    front: Sequence[int],
    dense: Mapping[str, Any] | None = None,
    chosen: int | None = None,
    report: Mapping[str, Any] | None = None,
) -> bytes:
    """PNG: accuracy vs latency ratio of every complete trial, coloured by ``.tflite`` bytes,
    the Pareto front joined, the dense model and the speed goal marked.

    Example:
        >>> t = [{"number": 0, "status": "complete", "acc": 0.9, "latency_ratio": 0.5,
        ...       "bytes": 1000}]
        >>> plot_pareto(t, [0])[:4]
        b'\\x89PNG'
    """
    fig = _figure()
    ax = fig.add_subplot()
    done = [
        t
        for t in trials
        if t.get("status") == "complete"
        and t.get("acc") is not None
        and t.get("latency_ratio") is not None
    ]
    if done:
        sizes = [float(t.get("bytes") or 0) for t in done]
        hi = max(sizes) or 1.0
        sc = ax.scatter(
            [t["latency_ratio"] for t in done],
            [t["acc"] for t in done],
            c=sizes,
            s=[30 + 170 * s / hi for s in sizes],
            cmap="viridis",
            edgecolors="k",
            linewidths=0.4,
            zorder=3,
        )
        fig.colorbar(sc, ax=ax, label=".tflite bytes")
        pts = sorted((t["latency_ratio"], t["acc"]) for t in done if t["number"] in set(front))
        if pts:
            ax.plot(
                *zip(*pts, strict=True), color="tab:orange", lw=1.2, zorder=2, label="Pareto front"
            )
        for t in done:
            if t["number"] == chosen:
                ax.scatter(
                    [t["latency_ratio"]],
                    [t["acc"]],
                    marker="*",
                    s=300,
                    facecolors="none",
                    edgecolors="tab:red",
                    zorder=4,
                    label="chosen",
                )
            ax.annotate(
                str(t["number"]),
                (t["latency_ratio"], t["acc"]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
    if dense and dense.get("acc") is not None:
        ax.scatter([1.0], [dense["acc"]], marker="s", c="k", s=40, label="dense float", zorder=4)
    speed = ((report or {}).get("target") or {}).get("speedup")
    if speed:
        ax.axvline(1.0 / speed, color="tab:red", ls="--", lw=0.9, label=f"goal: {speed:g}x faster")
    ax.set_xlabel("latency ratio to the dense float .tflite (lower is faster)")
    ax.set_ylabel("held-out accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def plot_channels(groups: Sequence[Mapping[str, Any]]) -> bytes:
    """PNG: dense vs kept channels of each prunable group.

    Example:
        >>> plot_channels([{"key": "conv", "size": 16, "kept": 8}])[:4]
        b'\\x89PNG'
    """
    fig = _figure(7.0, max(2.0, 0.35 * len(groups) + 1.0))
    ax = fig.add_subplot()
    keys = [g["key"] for g in groups]
    pos = list(range(len(keys)))
    ax.barh(pos, [g["size"] for g in groups], color="#ddd", label="dense")
    ax.barh(pos, [g["kept"] for g in groups], color="tab:blue", label="kept")
    ax.set_yticks(pos, keys, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("channels")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=8, frameon=False)
    return _png(fig)


# -- html helpers --------------------------------------------------------------------------


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<p><img alt='{_e(alt)}' src='data:image/png;base64,{data}'></p>"


def _table(
    head: Sequence[str],
    rows: Sequence[Sequence[Any]],
    left: Sequence[int] = (),
    row_classes: Sequence[str] | None = None,
) -> str:
    def cell(tag: str, i: int, v: Any) -> str:
        cls = " class='l'" if i in left else ""
        return f"<{tag}{cls}>{_e('' if v is None else v)}</{tag}>"

    out = ["<table><tr>" + "".join(cell("th", i, h) for i, h in enumerate(head)) + "</tr>"]
    for r, row in enumerate(rows):
        cls = row_classes[r] if row_classes and row_classes[r] else ""
        out.append(
            f"<tr class='{cls}'>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int) -> str:
    if value is None or isinstance(value, bool):
        return ""
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def _scaled(total: Any, ratio: Any) -> Any:
    if total is None or ratio is None:
        return ""
    return int(round(float(total) * float(ratio)))


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


__all__ = [
    "HTML_NAME",
    "JSON_NAME",
    "plot_channels",
    "plot_pareto",
    "plot_search_curve",
    "render_html",
    "write",
]
