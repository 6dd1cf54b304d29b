"""Runs a ``.tflite`` file with the aarch64 LiteRT under qemu and compares it with x86 LiteRT.

Phones run LiteRT's ARM kernels (NEON, dot-product int8 GEMMs), while every export is
verified on this machine's x86 kernels (:mod:`pocketflow_tf.tflite_verify`). The ARM64 lane
(``tools/arm64_lane.sh``, docs/arm64.md) prepares, once, an aarch64 Python with the same
LiteRT and NumPy versions, run by ``qemu-aarch64-static``. :func:`verify_arm64` feeds the
same inputs to both runtimes -- the aarch64 one in a child process that loads the model,
runs the inputs and saves the outputs to ``.npy`` -- and reports:

* ``top1_agreement``: share of samples whose argmax output is the same on ARM and x86;
* ``max_abs_diff``: largest ``|arm - x86|`` over all (dequantized) outputs;
* ``max_steps``: for a quantized output, that difference in quantization steps (units of
  the output's scale, or of the int8 tensor a final DEQUANTIZE reads); ``None`` for float;
* optionally the same two figures of each runtime against the Keras model.

The :class:`Arm64Report` names the runtime (``ai-edge-litert`` and its version), qemu's
version and the emulated CPU, and is written as JSON beside the model
(``MODEL.tflite.arm64.json``, atomically).

Example:
    >>> import numpy as np
    >>> from pocketflow_tf import arm64
    >>> x = np.random.default_rng(0).random((200, 28, 28, 1), dtype=np.float32)
    >>> report = arm64.verify_arm64("model.int8.tflite", x)  # doctest: +SKIP
    >>> report.top1_agreement, report.max_steps  # doctest: +SKIP
    (1.0, 0)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

import numpy as np

from pocketflow_tf import atomic_io, errors, heads, inputs, options, tflite_load, tflite_verify

#: The script that prepares the lane, relative to the repository.
LANE_SCRIPT = "tools/arm64_lane.sh"
#: The emulated CPU by default: a Cortex-A76 (Armv8.2 with dot-product instructions), the big
#: core of most phones since 2019. ``cortex-a53`` (Armv8.0, no dot product) is the other.
DEFAULT_CPU = "cortex-a76"
#: Suffix of the JSON record written beside the model.
RECORD_SUFFIX = ".arm64.json"

# The repository's default cache folder of the lane (what tools/arm64_lane.sh creates).
_DEFAULT_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv-arm64"
)


class Arm64LaneError(errors.PocketFlowError):
    """The ARM64 lane is not prepared (or broken), or its child process failed.

    Example:
        >>> str(Arm64LaneError("qemu is missing"))
        'qemu is missing'
    """


def _prepare_hint(root: str) -> str:
    return (
        f"prepare it with `{LANE_SCRIPT}` (as root the first time: it apt-get installs "
        f"qemu-user-static and downloads Debian's arm64 Python and the aarch64 LiteRT wheel "
        f"into {root}; about a minute)"
    )


@dataclasses.dataclass(frozen=True)
class Arm64Lane:
    """A prepared ARM64 lane: its folder and what ``lane.json`` says it runs.

    Attributes:
        root: The lane's folder (``.venv-arm64`` by default).
        info: ``lane.json``: ``runtime``, ``runtime_version``, ``numpy``, ``python``,
            ``qemu``, ``qemu_version``, ``cpus``, ``debian_packages``.

    Example:
        >>> lane = Arm64Lane.find()  # doctest: +SKIP
        >>> lane.info["runtime"], lane.info["runtime_version"]  # doctest: +SKIP
        ('ai-edge-litert', '2.3.0')
    """

    root: str
    info: dict[str, Any]

    @classmethod
    def find(cls, root: str | os.PathLike | None = None) -> Arm64Lane:
        """Returns the lane at ``root``, checking that it is prepared.

        Args:
            root: The lane's folder. ``None``: ``$PFTF_ARM64_DIR`` when set (the lane script
                exports it), else ``.venv-arm64`` in the repository.

        Raises:
            Arm64LaneError: If the folder, its ``lane.json``, its aarch64 Python or qemu is
                missing; the message says how to prepare the lane.

        Example:
            >>> Arm64Lane.find("/nonexistent")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            pocketflow_tf.arm64.Arm64LaneError: The ARM64 lane is not prepared: ...
        """
        if root is None:
            root = os.environ.get("PFTF_ARM64_DIR") or _DEFAULT_DIR
        root = os.path.abspath(os.fspath(root))
        manifest = os.path.join(root, "lane.json")
        try:
            with open(manifest) as f:
                info = json.load(f)
        except (OSError, ValueError) as e:
            reason = "missing" if isinstance(e, FileNotFoundError) else f"unreadable ({e})"
            raise Arm64LaneError(
                f"The ARM64 lane is not prepared: {manifest} is {reason}; {_prepare_hint(root)}"
            ) from None
        lane = cls(root, info)
        missing = [
            p
            for p in (lane.python, *(lane.cpu_root(c) for c in info.get("cpus", [])))
            if not os.path.exists(p)
        ]
        qemu = info.get("qemu", "qemu-aarch64-static")
        if not shutil.which(qemu):
            missing.append(qemu + " (not on PATH)")
        if missing or not info.get("cpus"):
            raise Arm64LaneError(
                f"The ARM64 lane at {root} is incomplete (missing: "
                f"{', '.join(missing) or 'cpus in lane.json'}); {_prepare_hint(root)}"
            )
        return lane

    @property
    def python(self) -> str:
        """The aarch64 ``python3.11`` of the lane's Debian sysroot.

        Example:
            >>> Arm64Lane("/l", {}).python
            '/l/sysroot/usr/bin/python3.11'
        """
        return os.path.join(self.root, "sysroot", "usr", "bin", "python3.11")

    def cpu_root(self, cpu: str) -> str:
        """The qemu prefix (``-L``) of an emulated CPU: the sysroot and its ``/proc/cpuinfo``.

        Example:
            >>> Arm64Lane("/l", {}).cpu_root("cortex-a76")
            '/l/cpu/cortex-a76'
        """
        return os.path.join(self.root, "cpu", cpu)

    def command(self, cpu: str = DEFAULT_CPU) -> list[str]:
        """The command line that starts the aarch64 Python on the emulated ``cpu``.

        ``-I`` (isolated): the child ignores ``PYTHON*`` variables and the user's site
        folder, so only the lane's stdlib and wheels are seen.

        Raises:
            InvalidArgumentError: If the lane was not prepared for ``cpu``.

        Example:
            >>> Arm64Lane("/l", {"cpus": ["cortex-a76"]}).command()[:3]
            ['qemu-aarch64-static', '-cpu', 'cortex-a76']
        """
        cpus = self.info.get("cpus", [])
        if cpu not in cpus:
            raise errors.InvalidArgumentError("cpu", cpu, f"one of the lane's CPUs {cpus}")
        qemu = self.info.get("qemu", "qemu-aarch64-static")
        return [qemu, "-cpu", cpu, "-L", self.cpu_root(cpu), self.python, "-I"]

    @property
    def site(self) -> str:
        """The folder holding the unpacked aarch64 wheels (LiteRT, NumPy).

        Example:
            >>> Arm64Lane("/l", {}).site
            '/l/site'
        """
        return os.path.join(self.root, "site")


# Runs on the aarch64 Python: LiteRT and NumPy only (no pocketflow_tf there). Feeds the
# inputs in batches of `batch`, quantizing float inputs for an integer input tensor exactly
# as TFLiteRunner does on x86 (round(x / scale) + zero_point, clipped), and saves the output
# tensor as the interpreter returns it (integer outputs stay integer: the parent dequantizes
# both runtimes' outputs with the same parameters).
_CHILD_CODE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
from ai_edge_litert.interpreter import Interpreter

site, model, x_path, out_path, batch = sys.argv[1:6]
batch = int(batch)
x = np.load(x_path)
interp = Interpreter(model_path=model, num_threads=1)
inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
dtype = np.dtype(inp["dtype"])
if np.issubdtype(dtype, np.integer):
    scale, zero_point = inp["quantization"]
    info = np.iinfo(dtype)
    q = np.round(x.astype(np.float32) / np.float32(scale)) + zero_point
    x = np.clip(q, info.min, info.max).astype(dtype)
else:
    x = x.astype(dtype, copy=False)
current, outputs = None, []
t0 = time.perf_counter()
for start in range(0, len(x), batch):
    xb = x[start:start + batch]
    if len(xb) != current:
        interp.resize_tensor_input(inp["index"], [len(xb), *x.shape[1:]])
        interp.allocate_tensors()
        current = len(xb)
    interp.set_tensor(inp["index"], xb)
    interp.invoke()
    outputs.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
seconds = time.perf_counter() - t0
np.save(out_path, np.concatenate(outputs, axis=0))
print("PFTF_ARM64_OK " + json.dumps({"invoke_seconds": seconds}))
"""


def run_on_arm64(
    model_path: str | os.PathLike,
    x: np.ndarray,
    *,
    cpu: str = DEFAULT_CPU,
    batch_size: int = 1,
    lane: Arm64Lane | None = None,
    timeout_s: float = 1800,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Runs ``x`` through the model with the aarch64 LiteRT under qemu, in a child process.

    Args:
        model_path: The ``.tflite`` file.
        x: Float inputs ``(N, ...)``, preprocessed as for the Keras model.
        cpu: The emulated CPU, one of the lane's (``lane.info["cpus"]``).
        batch_size: Samples per ``invoke()``.
        lane: The prepared lane (default: :meth:`Arm64Lane.find`).
        timeout_s: Seconds before the child is killed.

    Returns:
        ``(outputs, timing)``: the output tensor as the ARM interpreter returned it (integer
        for int8 outputs), and ``{"invoke_seconds", "child_seconds"}``.

    Raises:
        Arm64LaneError: If the lane is not prepared, or the child fails or times out (the
            message holds the tail of its stderr).

    Example:
        >>> y, timing = run_on_arm64("m.tflite", x)  # doctest: +SKIP
    """
    lane = lane or Arm64Lane.find()
    batch_size = options.check_integer("batch_size", batch_size, low=1)
    cmd = lane.command(cpu)
    with tempfile.TemporaryDirectory(prefix="pftf-arm64-") as tmp:
        x_path, out_path = os.path.join(tmp, "x.npy"), os.path.join(tmp, "out.npy")
        np.save(x_path, np.ascontiguousarray(x))
        args = [lane.site, os.path.abspath(model_path), x_path, out_path, str(batch_size)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [*cmd, "-c", _CHILD_CODE, *args],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise Arm64LaneError(
                f"the aarch64 LiteRT did not finish '{model_path}' within {timeout_s} s"
            ) from None
        child_seconds = time.perf_counter() - t0
        marker = [line for line in proc.stdout.splitlines() if line.startswith("PFTF_ARM64_OK ")]
        if proc.returncode != 0 or not marker:
            raise Arm64LaneError(
                f"the aarch64 LiteRT could not run '{model_path}' under qemu ({cpu}; exit code "
                f"{proc.returncode}); stderr: {tflite_verify._tail(proc.stderr)}"
            )
        timing = json.loads(marker[-1].split(" ", 1)[1])
        timing["child_seconds"] = child_seconds
        return np.load(out_path), timing


@dataclasses.dataclass
class Arm64Report:
    """What :func:`verify_arm64` measured: the aarch64 LiteRT against the x86 one.

    Attributes:
        model: The ``.tflite`` path.
        sha256: Its sha256 (what was run).
        n_samples: Inputs run through both runtimes.
        batch_size: Samples per ``invoke()`` on both.
        top1_agreement: Share of samples with the same argmax on ARM and x86.
        max_abs_diff: Largest ``|arm - x86|`` over the dequantized outputs.
        output_dtype: dtype of the output tensor (``int8`` for int8 I/O).
        output_step: The quantization step the outputs are counted in: the output's scale,
            or that of the int8 tensor read by a final DEQUANTIZE; ``None`` when float.
        max_steps: ``max_abs_diff / output_step`` (rounded to 3 decimals; whole numbers when
            the output is a dequantized int8 tensor); ``None`` when float.
        keras: Against the Keras model, when given: ``{"arm64": {...}, "x86": {...}}``, each
            with ``top1_agreement`` and ``max_abs_diff``.
        runtime: ``{"arm64": "ai-edge-litert 2.3.0", "x86": "ai-edge-litert 2.3.0"}``.
        lane: The ARM64 lane: ``cpu``, ``qemu_version``, ``python``, ``numpy``.
        seconds: ``{"arm64_invoke", "arm64_child", "x86"}`` wall-clock seconds.

    Example:
        >>> r = Arm64Report("m.tflite", "ab", 200, 1, 1.0, 0.0, "int8", 0.1, 0.0, None,
        ...                 {}, {}, {})
        >>> r.to_dict()["max_steps"]
        0.0
    """

    model: str
    sha256: str
    n_samples: int
    batch_size: int
    top1_agreement: float
    max_abs_diff: float
    output_dtype: str
    output_step: float | None
    max_steps: float | None
    keras: dict[str, dict[str, float]] | None
    runtime: dict[str, str]
    lane: dict[str, Any]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as a JSON-ready dict.

        Example:
            >>> Arm64Report("m", "", 1, 1, 1.0, 0.0, "float32", None, None, None, {}, {},
            ...             {}).to_dict()["output_step"] is None
            True
        """
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line for logs.

        Example:
            >>> print(Arm64Report("m.tflite", "", 200, 1, 1.0, 2e-6, "float32", None, None,
            ...                   None, {"arm64": "ai-edge-litert 2.3.0"},
            ...                   {"cpu": "cortex-a76"}, {}).summary())
            m.tflite: ARM64 (ai-edge-litert 2.3.0, qemu cortex-a76) vs x86 on 200 samples: top-1 agreement 1.0000, max|diff| 2e-06
        """
        line = (
            f"{self.model}: ARM64 ({self.runtime.get('arm64')}, qemu {self.lane.get('cpu')}) "
            f"vs x86 on {self.n_samples} samples: top-1 agreement {self.top1_agreement:.4f}, "
            f"max|diff| {self.max_abs_diff:.3g}"
        )
        if self.max_steps is not None:
            line += f" = {self.max_steps:g} quantization steps (of {self.output_step:.4g})"
        return line


def output_step(model_path: str | os.PathLike) -> float | None:
    """The quantization step of a model's output, or ``None`` for a float output.

    An integer output tensor counts in its own scale. A float output written by a final
    DEQUANTIZE (an int8 model with float I/O) counts in the scale of the int8 tensor it
    reads: ARM and x86 can then only differ by whole multiples of it.

    Example:
        >>> output_step("model.int8.tflite")  # doctest: +SKIP
        0.00390625
    """
    interp = tflite_load.open_interpreter(model_path)
    out = interp.get_output_details()[0]
    if np.issubdtype(np.dtype(out["dtype"]), np.integer):
        return float(out["quantization"][0]) or None
    op = tflite_load.producer(interp, out["index"])
    if op is not None and op["op_name"] == "DEQUANTIZE":
        src = {t["index"]: t for t in interp.get_tensor_details()}[int(op["inputs"][0])]
        if np.issubdtype(np.dtype(src["dtype"]), np.integer):
            return float(src["quantization"][0]) or None
    return None


def _compare(a: np.ndarray, b: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    same = heads.predicted_classes(a, threshold) == heads.predicted_classes(b, threshold)
    return {
        "top1_agreement": float(np.mean(same)),
        "max_abs_diff": float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))),
    }


def verify_arm64(
    model_path: str | os.PathLike,
    x: np.ndarray,
    *,
    keras_model: Any = None,
    cpu: str = DEFAULT_CPU,
    batch_size: int = 1,
    lane: Arm64Lane | None = None,
    record_path: str | os.PathLike | None | bool = None,
    timeout_s: float = 1800,
) -> Arm64Report:
    """Runs ``x`` through ``model_path`` on the aarch64 and the x86 LiteRT and compares them.

    Args:
        model_path: The ``.tflite`` file.
        x: Float inputs ``(N, ...)`` (uint8 images are scaled to ``[0, 1]`` as everywhere).
        keras_model: Optionally the Keras model the file came from: both runtimes are then
            also compared with its predictions.
        cpu: The emulated CPU (:data:`DEFAULT_CPU`, or ``"cortex-a53"``).
        batch_size: Samples per ``invoke()`` on both runtimes (1: what a phone app runs).
        lane: The prepared lane (default: :meth:`Arm64Lane.find`).
        record_path: Where the JSON report goes (``None``: ``<model_path>.arm64.json``;
            ``False``: nowhere). Written atomically.
        timeout_s: Seconds the ARM child may take.

    Returns:
        The :class:`Arm64Report`.

    Raises:
        ModelLoadError: If ``model_path`` is missing, a folder, empty or not a ``.tflite``.
        InvalidArgumentError: On empty inputs, inputs of the wrong shape, or a bad
            ``batch_size``/``cpu``.
        Arm64LaneError: If the lane is not prepared (the message says how to prepare it) or
            the aarch64 child fails.

    Example:
        >>> report = verify_arm64("m.int8.tflite", x_test[:200])  # doctest: +SKIP
        >>> report.max_steps <= 1  # doctest: +SKIP
        True
    """
    model_path = os.fspath(model_path)
    # The model first (a clear ModelLoadError for a bad path or file), then the inputs (the
    # x86 runner checks their shape against the model), then the lane: the cheap checks
    # before qemu starts.
    runner = tflite_verify.TFLiteRunner(model_path)
    batch_size = options.check_integer("batch_size", batch_size, low=1)
    x = inputs.images(x)
    lane = lane or Arm64Lane.find()
    lane.command(cpu)  # checks `cpu` before any run
    t0 = time.perf_counter()
    ref = runner.predict(x, batch_size=batch_size)
    x86_seconds = time.perf_counter() - t0
    raw, timing = run_on_arm64(
        model_path, x, cpu=cpu, batch_size=batch_size, lane=lane, timeout_s=timeout_s
    )
    # The x86 runner's own dequantization (same scale and zero-point for both runtimes).
    arm = runner._dequantize_output(raw)
    if arm.shape != ref.shape:
        raise Arm64LaneError(f"ARM64 output shape {arm.shape} differs from x86's {ref.shape}")
    threshold = runner.binary_threshold  # a one-unit output: its class-1 threshold
    figures = _compare(arm, ref, threshold)
    step = output_step(model_path)
    steps = None if step is None else round(figures["max_abs_diff"] / step, 3)
    keras_figures = None
    if keras_model is not None:
        # The same Keras forward pass as tflite_verify.verify (batched, output as float32).
        predicted = tflite_verify._keras_outputs(keras_model, x)
        keras_figures = {
            "arm64": _compare(arm, predicted, threshold),
            "x86": _compare(ref, predicted, threshold),
        }
    from importlib.metadata import version

    report = Arm64Report(
        model=model_path,
        sha256=atomic_io.sha256_file(model_path),
        n_samples=len(x),
        batch_size=batch_size,
        top1_agreement=figures["top1_agreement"],
        max_abs_diff=figures["max_abs_diff"],
        output_dtype=str(np.dtype(runner.output_details["dtype"])),
        output_step=step,
        max_steps=steps,
        keras=keras_figures,
        runtime={
            "arm64": f"{lane.info.get('runtime')} {lane.info.get('runtime_version')}",
            "x86": f"ai-edge-litert {version('ai-edge-litert')}",
        },
        lane={
            "cpu": cpu,
            "qemu_version": lane.info.get("qemu_version"),
            "python": lane.info.get("python"),
            "numpy": lane.info.get("numpy"),
        },
        seconds={
            "arm64_invoke": round(timing["invoke_seconds"], 3),
            "arm64_child": round(timing["child_seconds"], 3),
            "x86": round(x86_seconds, 3),
        },
    )
    if record_path is not False:
        atomic_io.write_json(record_path or model_path + RECORD_SUFFIX, report.to_dict())
    return report


__all__ = [
    "Arm64Lane",
    "Arm64LaneError",
    "Arm64Report",
    "DEFAULT_CPU",
    "output_step",
    "run_on_arm64",
    "verify_arm64",
]
