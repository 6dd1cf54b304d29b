"""Benchmark ``deploy``: every deployable file of a model, measured the same way, on x86 and ARM64.

For each recipe of ``PFTF_DEPLOY_RECIPES`` (default ``resnet_at_fmnist,mobilenet_at_fmnist``)
and each variant of :data:`VARIANTS` (float, int8 by post-training quantization, int8 by QAT,
uniform 4-bit and mixed 4-bit-average weights stored as int4, product-quantized and clustered
weights stored compactly), the variant's ``.tflite`` in ``bench/artifacts`` is measured:

* raw and gzip bytes, and the raw ratio to the float file;
* top-1 accuracy of the file itself through LiteRT on the whole test split;
* x86 latency relative to the float file (interleaved, one thread, batch 1, medians);
* ARM64: the same ``PFTF_DEPLOY_ARM64_SAMPLES`` test images (default 200) through the
  aarch64 LiteRT under qemu (:func:`pocketflow_tf.arm64.verify_arm64`, the emulated
  ``PFTF_DEPLOY_ARM64_CPU``, default Cortex-A76) against x86 LiteRT: top-1 agreement and the
  largest output difference in quantization steps (float files: absolute difference).

The float and post-training int8 files are made here from the committed baseline when
missing (no training). The others are made by the benchmarks that train them, each with
its recipe knob (``PFTF_QAT_RECIPES``, ``PFTF_MP_RECIPES``, ``PFTF_CB_RECIPES``): ``qat``,
``mixed`` (``uniform-4``, ``mixed-4``) and ``codebooks`` (``pq-k32``, ``cluster-16``: its
compact file). This one only measures, so what it reports is the very file those
benchmarks verified; a variant whose file is missing gets a row that names the command
that makes it for that recipe. Without a prepared ARM64 lane (``tools/arm64_lane.sh``) the
ARM64 columns say so. Records are keyed by model, so the README table holds the rows of
both models.

Example:
    >>> from bench.benchmarks import deploy
    >>> [v.name for v in deploy.VARIANTS][:3]
    ['float', 'int8 (PTQ)', 'int8 (QAT)']
"""

from __future__ import annotations

import dataclasses
import glob
import os
import time

from bench import baselines as baseline_cache
from bench import exports
from pocketflow_tf import arm64, datasets, errors, latency, tflite_export, tflite_verify

COMMAND = "python -m bench.run deploy"
#: ResNet-20 and MobileNet-v1 (``--quick`` measures ResNet-20's files only).
DEFAULT_RECIPES = "resnet_at_fmnist,mobilenet_at_fmnist"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One deployable form of a model and where its file comes from.

    Attributes:
        name: The row's method.
        pattern: The file under ``bench/artifacts``, ``{r}`` standing for the recipe (a
            glob: the newest match is measured).
        made_by: The command that makes the file when it is missing, ``{r}`` standing for
            the recipe.

    Example:
        >>> Variant("float", "{r}.float.tflite", "here").path("m").endswith("m.float.tflite")
        True
    """

    name: str
    pattern: str
    made_by: str

    def path(self, recipe: str) -> str:
        """The glob of this variant's file for ``recipe``.

        Example:
            >>> os.path.basename(VARIANTS[3].path("m"))
            'm.uniform-4.int4.tflite'
        """
        return os.path.join(baseline_cache.ARTIFACTS, self.pattern.format(r=recipe))

    def command(self, recipe: str) -> str:
        """The command that makes this variant's file for ``recipe``.

        Example:
            >>> VARIANTS[-1].command("mobilenet_at_fmnist")
            'PFTF_CB_RECIPES=mobilenet_at_fmnist PFTF_CB_METHODS=cluster-16 python -m bench.run codebooks'
        """
        return self.made_by.format(r=recipe)


#: The variants, in table order.
VARIANTS = (
    Variant("float", "{r}.float.tflite", "made here from the baseline"),
    Variant("int8 (PTQ)", "{r}.int8.tflite", "made here from the baseline"),
    Variant(
        "int8 (QAT)", "{r}.qat-int8.int8.tflite", "PFTF_QAT_RECIPES={r} python -m bench.run qat"
    ),
    Variant(
        "uniform 4-bit, int4 file",
        "{r}.uniform-4.int4.tflite",
        "PFTF_MP_RECIPES={r} PFTF_MP_SETTINGS=uniform-4 python -m bench.run mixed",
    ),
    Variant(
        "mixed 4-bit average, int4 file",
        "{r}.mixed-4.int4.tflite",
        "PFTF_MP_RECIPES={r} PFTF_MP_SETTINGS=mixed-4 python -m bench.run mixed",
    ),
    Variant(
        "PQ k32, compact file",
        "{r}.pq-k32.pq-compact.tflite",
        "PFTF_CB_RECIPES={r} PFTF_CB_METHODS=pq-k32 python -m bench.run codebooks",
    ),
    Variant(
        "clustered 16, compact file",
        "{r}.cluster-16.cluster-compact.tflite",
        "PFTF_CB_RECIPES={r} PFTF_CB_METHODS=cluster-16 python -m bench.run codebooks",
    ),
)


def _newest(pattern: str) -> str | None:
    found = sorted(glob.glob(pattern), key=os.path.getmtime)
    return found[-1] if found else None


def _made_here(recipe: str, model, mode: str, data) -> str:
    """The float or PTQ int8 file of the baseline, exported (verified) when missing."""
    path = os.path.join(baseline_cache.ARTIFACTS, f"{recipe}.{mode}.tflite")
    if not os.path.exists(path):
        exports.export(model, path, data, mode=mode, rep=exports.calibration(data))
    return path


def _arm64_fields(path: str, x, cpu: str) -> dict:
    try:
        rep = arm64.verify_arm64(path, x, cpu=cpu)
    except arm64.Arm64LaneError as e:
        return {"arm64": f"not measured: {e}"}
    return {
        "arm64_agreement": rep.top1_agreement,
        "arm64_max_steps": rep.max_steps,
        "arm64_max_abs_diff": rep.max_abs_diff,
        "arm64_runtime": f"{rep.runtime['arm64']}, qemu {rep.lane.get('qemu_version')} "
        f"{rep.lane.get('cpu')}",
    }


def measure(path: str, float_path: str, data, *, arm64_samples: int, cpu: str, rounds: int):
    """The figures of one file (see the module docstring).

    Example:
        >>> measure("m.int4.tflite", "m.float.tflite", data, arm64_samples=200,
        ...         cpu="cortex-a76", rounds=30)  # doctest: +SKIP
        {'bytes': 172760, 'bytes_gzip': 140210, 'acc': 0.9429, 'latency_ratio': 1.175, ...}
    """
    with open(path, "rb") as f:
        raw, gz = tflite_export.tflite_size(f.read())
    acc = tflite_verify.tflite_accuracy(path, data.x_test, data.y_test, batch_size=100)
    ratio = latency.interleaved_ratio(path, float_path, rounds=rounds).latency_ratio
    return {
        "bytes": raw,
        "bytes_gzip": gz,
        "acc": round(acc, 4),
        "latency_ratio": round(ratio, 4),
        **_arm64_fields(path, data.x_test[:arm64_samples], cpu),
    }


def _count(knob: str, default: str) -> int:
    text = os.environ.get(knob, default)
    if not text.strip().isdigit() or int(text) < 1:
        raise errors.InvalidArgumentError(knob, text, "a whole number >= 1")
    return int(text)


def run() -> list[dict]:
    """Measures every variant's file of every recipe; one record each.

    Example:
        >>> recs = run()  # doctest: +SKIP
    """
    recipes = baseline_cache.parse_recipes(
        "PFTF_DEPLOY_RECIPES", os.environ.get("PFTF_DEPLOY_RECIPES") or DEFAULT_RECIPES
    )
    arm64_samples = _count("PFTF_DEPLOY_ARM64_SAMPLES", "200")
    cpu = os.environ.get("PFTF_DEPLOY_ARM64_CPU", arm64.DEFAULT_CPU)
    rounds = _count("PFTF_DEPLOY_ROUNDS", "30")
    data = datasets.load_dataset("fmnist")
    recs = []
    for recipe in recipes:
        model, acc_dense = baseline_cache.scored(recipe, data)
        float_path = _made_here(recipe, model, "float", data)
        float_bytes = os.path.getsize(float_path)
        for v in VARIANTS:
            start = time.time()
            if v.made_by.startswith("made here"):
                mode = "float" if v.name == "float" else "int8"
                path = _made_here(recipe, model, mode, data)
            else:
                path = _newest(v.path(recipe))
            rec = {
                "command": COMMAND,
                "model": model.name,
                "dataset": "fmnist",
                "method": v.name,
                "setting": "file",
                "acc_baseline": round(acc_dense, 4),
            }
            if path is None:
                rec["skipped"] = (
                    f"no file {os.path.basename(v.path(recipe))}: run `{v.command(recipe)}`"
                )
                print(f"[bench] {recipe} {v.name}: {rec['skipped']}", flush=True)
                recs.append(rec)
                continue
            rec.update(
                measure(path, float_path, data, arm64_samples=arm64_samples, cpu=cpu, rounds=rounds)
            )
            rec["file"] = os.path.basename(path)
            rec["bytes_ratio"] = round(rec["bytes"] / float_bytes, 4)
            rec["wall_s"] = round(time.time() - start, 1)
            print(
                f"[bench] {recipe} {v.name}: {rec['bytes']:,} B ({rec['bytes_ratio']:.3f}x float, "
                f"gzip {rec['bytes_gzip']:,}), acc {rec['acc']:.4f}, latency x{rec['latency_ratio']:.3f}"
                f", ARM64 agreement {rec.get('arm64_agreement')}, max steps "
                f"{rec.get('arm64_max_steps')}",
                flush=True,
            )
            recs.append(rec)
    return recs
