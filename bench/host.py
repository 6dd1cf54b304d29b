"""The host that measured a benchmark: CPU model, the ISA flags LiteRT's kernels use, LiteRT.

Latency ratios depend on the CPU more than on anything else: the same int8 ResNet-20 ran
1.24x *slower* than float on an early AVX2 host and 3.5x faster on an AVX-512 VNNI host. So
every results file and every record names its host (:func:`facts`), and the README table
says which host produced which rows (:func:`describe`).

Example:
    >>> from bench import host
    >>> text = "model name\\t: Example CPU\\nflags\\t\\t: fpu sse4_2 avx avx2 fma\\n"
    >>> host.parse_cpuinfo(text)
    ('Example CPU', ['sse4_2', 'avx', 'avx2', 'fma'])
"""

from __future__ import annotations

import os
import platform
from typing import Any

from pocketflow_tf import records

CPUINFO = "/proc/cpuinfo"

#: The flags that decide which LiteRT / XNNPACK kernels run, in the order they are shown:
#: x86 (AVX2 / FMA / F16C float kernels, AVX-512 and VNNI int8 dot products, AMX) and
#: aarch64 (NEON, the dot-product and int8 matrix-multiply extensions, SVE).
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "asimd",
    "asimdhp",
    "asimddp",
    "i8mm",
    "bf16",
    "sve",
)


def parse_cpuinfo(text: str) -> tuple[str | None, list[str]]:
    """``(CPU model, ISA flags of ISA_FLAGS present)`` from the text of ``/proc/cpuinfo``.

    The model is the first ``model name``; aarch64 kernels often print none, and then the
    first core's ``CPU implementer`` and ``CPU part`` (hex ids, e.g. 0x41 / 0xd0c) name it.
    The flags are x86's ``flags`` line or aarch64's ``Features`` line (first core's).

    Example:
        >>> arm = "processor\\t: 0\\nFeatures\\t: fp asimd asimddp i8mm\\n"
        >>> arm += "CPU implementer\\t: 0x41\\nCPU part\\t: 0xd0c\\n"
        >>> parse_cpuinfo(arm)
        ('CPU implementer 0x41, part 0xd0c', ['asimd', 'asimddp', 'i8mm'])
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())  # first core's only
    model = fields.get("model name")
    if not model and "cpu implementer" in fields:
        model = f"CPU implementer {fields['cpu implementer']}, part {fields.get('cpu part', '?')}"
    present = set((fields.get("flags") or fields.get("features") or "").split())
    return model or None, [f for f in ISA_FLAGS if f in present]


def facts(cpuinfo: str | None = None) -> dict[str, Any]:
    """The host of a measurement, short enough to store in every record.

    Args:
        cpuinfo: Text of ``/proc/cpuinfo``; ``None`` reads this machine's (where there is
            none, the model falls back to ``platform.processor()`` and the flags are empty).

    Returns:
        ``{"cpu_model", "isa", "cpus", "arch", "litert", "tensorflow"}``: ``isa`` the
        :data:`ISA_FLAGS` the CPU has, ``cpus`` ``os.cpu_count()``, ``litert`` and
        ``tensorflow`` the installed ``ai-edge-litert`` and TensorFlow versions (from package
        metadata: nothing is imported).

    Example:
        >>> f = facts("model name : X\\nflags : fpu avx2 avx512f\\n")
        >>> f["cpu_model"], f["isa"], sorted(f)
        ('X', ['avx2', 'avx512f'], ['arch', 'cpu_model', 'cpus', 'isa', 'litert', 'tensorflow'])
    """
    if cpuinfo is None:
        try:
            with open(CPUINFO) as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    model, isa = parse_cpuinfo(cpuinfo)
    versions = records.library_versions()
    return {
        "cpu_model": model or platform.processor() or platform.machine() or None,
        "isa": isa,
        "cpus": os.cpu_count(),
        "arch": platform.machine(),
        "litert": versions["ai_edge_litert"],
        "tensorflow": versions["tensorflow"],
    }


def describe(host: dict[str, Any] | None) -> str:
    """One line naming a host (:func:`facts`) for a table; records without one are unknown.

    Hosts recorded before LiteRT's version was (the first zoo rows) say so.

    Example:
        >>> describe({"cpu_model": "AMD EPYC", "isa": ["avx2", "avx512_vnni"], "cpus": 2,
        ...           "litert": "2.3.0", "tensorflow": "2.21.0"})
        'AMD EPYC (avx2, avx512_vnni), 2 CPUs, LiteRT 2.3.0, TF 2.21.0'
        >>> describe(None)
        'host unknown (recorded before records named their host)'
    """
    if not host:
        return "host unknown (recorded before records named their host)"
    isa = ", ".join(host.get("isa") or []) or "no listed ISA flags"
    litert = host.get("litert") or "not recorded"
    text = f"{host.get('cpu_model') or 'unknown CPU'} ({isa}), {host.get('cpus')} CPUs"
    text += f", LiteRT {litert}"
    if host.get("tensorflow"):
        text += f", TF {host['tensorflow']}"
    return text
