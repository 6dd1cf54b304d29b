"""What a byte goal's files will weigh on *this* model, measured in seconds before the search.

The planner narrows its ranges with file-size ratios: how much of the float file an int8 or
int4 file keeps, and how a sparse file shrinks with its weight sparsity. Constants measured
on ResNet-20 (:data:`planner.INT8_BYTES_RATIO`, :data:`planner.INT4_BYTES_RATIO`,
:data:`planner.SPARSE_BYTES_FACTOR`) were about twice too optimistic on MobileNet-v1 and a
user-style net (depthwise kernels stay int8 in an int4 file; layers the sparse chains leave
dense, and the indices of small kernels, do not shrink), so a third of the trials searched
plans that could never meet the goal. This module measures the ratios on the user's model
instead, without training:

* ``int8`` / ``int4``: the dense model exported in that mode;
* sparse chains: the dense model with the chain's own per-layer sparsity
  (:func:`sparse_build.layer_ratios`) imposed by magnitude in one shot, exported in TFLite's
  sparse storage at two sparsities (:data:`PROBE_SPARSITIES`); a file's size depends on how
  many weights are zero, not on their values, so the fine-tuned trial's file weighs the
  same. The two points give the line ``fixed + per_kept * (1 - sparsity)``: ``fixed`` is what
  stays dense;
* pruning chains (``prune``, ``prune+int8``, ``prune+int4``): one channel-pruned model the
  caller builds with the chains' own allocation at about :data:`PROBE_PARAMS_KEEP`
  (:func:`probe_params_keep`), exported in each chain's mode. With the dense file it gives
  the line ``fixed + per_kept * params_keep``. The dense ratio times the parameter keep was
  too optimistic (per-channel scales, zero points and biases, and the layers pruning cannot
  touch, shrink less than the kernels), a split of the dense file into kernel bytes and
  the rest too pessimistic (that rest shrinks with the channels too): only a pruned file
  says where between them this model lies.

Example:
    >>> facts = measure(model, planner.allowed_chains(target), x_rep, dense_bytes)  # doctest: +SKIP
    >>> facts.export_ratios, facts.sparse_bytes  # doctest: +SKIP
    ({'int8': 0.27, 'int4': 0.31}, {'int8': (0.05, 1.3)})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pocketflow_tf import errors, int4_export, learner, tflite_export
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.auto import planner, sparse_build
from pocketflow_tf.learners.weight_sparse import ratios as ratios_lib

#: The two weight sparsities a sparse chain's file is measured at. Byte goals push the
#: search to high sparsities, so both points sit in the upper half of
#: :data:`planner.DEFAULT_SPARSITY_RANGE`, where the line is used.
PROBE_SPARSITIES = (0.7, 0.95)

#: The parameter keep ratio the pruned probe model is built at: byte goals of 0.1x and below
#: push the pruning chains' search towards 0.2-0.4, so the line is measured there.
PROBE_PARAMS_KEEP = 0.3

#: Calibration images of a probe's int8 / int4 export: the file's size does not depend on the
#: calibrated ranges, so a handful is enough (the real exports calibrate on hundreds).
PROBE_CALIBRATION = 8


@dataclasses.dataclass(frozen=True)
class StorageFacts:
    """File-size ratios measured on one dense model (:func:`measure`).

    Attributes:
        export_ratios: ``{mode: size / dense float size}`` of the dense model's ``int8`` /
            ``int4`` file (:attr:`planner.ModelFacts.export_ratios`).
        sparse_bytes: ``{mode: (fixed, per_kept)}`` per sparse export mode (``"float"``,
            ``"int8"``; :attr:`planner.ModelFacts.sparse_bytes`).
        points: ``{mode: [[sparsity, ratio], ...]}``, the measured sparse files (reports).
        notes: Exports the probe could not make (their constants stay in use).
        prune_bytes: ``{mode: (fixed, per_kept)}`` per export mode of the pruning chains
            (:attr:`planner.ModelFacts.prune_bytes`).
        prune_points: ``{mode: [[params_keep, ratio], ...]}``, the dense and the pruned
            file (reports).

    Example:
        >>> StorageFacts({"int8": 0.27}, {}, {}, []).to_dict()["export_ratios"]
        {'int8': 0.27}
    """

    export_ratios: dict[str, float]
    sparse_bytes: dict[str, tuple[float, float]]
    points: dict[str, list[list[float]]]
    notes: list[str]
    prune_bytes: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    prune_points: dict[str, list[list[float]]] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (cache file, reports).

        Example:
            >>> StorageFacts({}, {"int8": (0.05, 1.3)}, {}, []).to_dict()["sparse_bytes"]
            {'int8': [0.05, 1.3]}
        """
        return {
            "export_ratios": dict(self.export_ratios),
            "sparse_bytes": {k: list(v) for k, v in self.sparse_bytes.items()},
            "points": {k: [list(p) for p in v] for k, v in self.points.items()},
            "notes": list(self.notes),
            "prune_bytes": {k: list(v) for k, v in self.prune_bytes.items()},
            "prune_points": {k: [list(p) for p in v] for k, v in self.prune_points.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StorageFacts:
        """The inverse of :meth:`to_dict`.

        Example:
            >>> f = StorageFacts({"int4": 0.3}, {"float": (0.1, 1.5)}, {}, ["x"], {"int4": (0.05, 0.25)})
            >>> StorageFacts.from_dict(f.to_dict()) == f
            True
        """
        return cls(
            {k: float(v) for k, v in d["export_ratios"].items()},
            {k: (float(v[0]), float(v[1])) for k, v in d["sparse_bytes"].items()},
            {k: [list(p) for p in v] for k, v in d["points"].items()},
            list(d["notes"]),
            {k: (float(v[0]), float(v[1])) for k, v in d["prune_bytes"].items()},
            {k: [list(p) for p in v] for k, v in d["prune_points"].items()},
        )


def magnitude_pruned(model: keras.Model, layer_ratios: Mapping[str, float]) -> keras.Model:
    """A copy of ``model`` whose named layers have the smallest-magnitude share of their
    prunable weights (:func:`ratios_lib.prunable_weights`) set to zero, per tensor, as
    gradual magnitude pruning leaves them at its target.

    Args:
        model: The dense model (left untouched).
        layer_ratios: ``{layer path: sparsity}`` (paths of :func:`ratios_lib.walk_layers`).

    Example:
        >>> m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10, name="d")])
        >>> p = magnitude_pruned(m, {"d": 0.75})
        >>> int((p.get_layer("d").kernel.numpy() == 0).sum()), int((m.layers[0].kernel.numpy() == 0).sum())
        (30, 0)
    """
    # By hand, not TFMOT's prune_low_magnitude: that one wraps the layers and reaches its
    # sparsity only through training steps; a one-shot numpy cut per tensor takes no data.
    out = learner.copy_model(model)
    layers = dict(ratios_lib.walk_layers(out))
    for path, ratio in layer_ratios.items():
        if ratio <= 0:
            continue
        for weight in ratios_lib.prunable_weights(layers[path]):
            values = np.array(weight.numpy())
            k = int(round(float(ratio) * values.size))
            flat = values.reshape(-1)
            flat[np.argsort(np.abs(flat), kind="stable")[:k]] = 0
            weight.assign(flat.reshape(values.shape))
    return out


def fit_line(points: Sequence[Sequence[float]]) -> tuple[float, float]:
    """``(fixed, per_kept)`` of the line ``ratio = fixed + per_kept * (1 - sparsity)``
    through measured ``(sparsity, ratio)`` points (least squares; both kept >= 0).

    Example:
        >>> fit_line([(0.7, 0.5), (0.95, 0.125)])
        (0.05, 1.5)
    """
    kept = np.array([1.0 - p[0] for p in points])
    ratio = np.array([p[1] for p in points])
    per_kept, fixed = np.polyfit(kept, ratio, 1)
    per_kept = max(float(per_kept), 0.0)
    fixed = max(float(np.mean(ratio - per_kept * kept)), 0.0)
    return round(fixed, 6), round(per_kept, 6)


def probe_params_keep(min_params_keep: float) -> float | None:
    """The parameter keep ratio to build the pruned probe model at, for a model whose
    pruning reaches ``min_params_keep`` at best: :data:`PROBE_PARAMS_KEEP`, raised well
    above that floor; ``None`` when pruning cannot go far enough below 1 for a line.

    Example:
        >>> probe_params_keep(0.05), probe_params_keep(0.4), probe_params_keep(0.6)
        (0.3, 0.6, None)
    """
    keep = max(PROBE_PARAMS_KEEP, 1.5 * float(min_params_keep))
    return round(keep, 6) if keep <= 0.8 else None


def measure(
    model: keras.Model,
    chains: Sequence[planner.Chain],
    representative_data: np.ndarray,
    dense_bytes: int,
    *,
    sparsities: Sequence[float] = PROBE_SPARSITIES,
    pruned: tuple[keras.Model, float] | None = None,
) -> StorageFacts:
    """Measures the file-size ratios ``chains`` need on ``model`` (see the module docstring).

    Args:
        model: The dense model.
        chains: The candidate chains: their integer export modes and their sparse modes are
            measured (a chain that neither quantizes nor sparsifies needs nothing).
        representative_data: Calibration inputs for the int8 / int4 exports.
        dense_bytes: The dense float ``.tflite`` size the ratios are relative to.
        sparsities: The two (or more) sparsities each sparse mode is measured at.
        pruned: ``(model, params_ratio)``: ``model`` channel-pruned as the pruning chains
            prune (physically smaller), keeping ``params_ratio`` of the dense parameters;
            ``None``: pruning chains keep the planner's product estimate.

    Returns:
        The :class:`StorageFacts`; an export the converter refuses is left out with a note
        (the planner keeps its constant for it, and the trials meet the real error).

    Raises:
        InvalidArgumentError: ``model`` is not a tf-keras model (e.g. a Keras 3 one), or
            ``sparsities`` holds fewer than two distinct values in ``[0, 1)``.

    Example:
        >>> import numpy as np
        >>> inp = keras.Input((8, 8, 1))
        >>> h = keras.layers.Conv2D(8, 3, name="c1")(inp)
        >>> h = keras.layers.Conv2D(64, 3, name="c2")(keras.layers.ReLU()(h))
        >>> h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
        >>> m = keras.Model(inp, keras.layers.Dense(2, name="fc")(h))
        >>> x = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
        >>> dense = tflite_export.tflite_size(tflite_export.convert(m))[0]
        >>> f = measure(m, [planner.CHAINS["int8"], planner.CHAINS["sparse"]], x, dense)
        >>> sorted(f.export_ratios), sorted(f.sparse_bytes)
        (['int8'], ['float'])
        >>> f.export_ratios["int8"] < 0.6, f.sparse_bytes["float"][1] > 0
        (True, True)
    """
    if not isinstance(model, keras.Model):  # a Keras 3 model would probe nothing, silently
        raise errors.InvalidArgumentError(
            "model",
            type(model).__name__,
            "a tf-keras model (a Keras 3 model: pocketflow_tf.interop.to_framework(model)[0])",
        )
    points_at = sorted({float(v) for v in sparsities})
    if len(points_at) < 2 or not all(0.0 <= v < 1.0 for v in points_at):
        raise errors.InvalidArgumentError(
            "sparsities", sparsities, "at least two distinct sparsities in [0, 1)"
        )
    rep = np.asarray(representative_data)[:PROBE_CALIBRATION]
    export_ratios: dict[str, float] = {}
    sparse_bytes: dict[str, tuple[float, float]] = {}
    points: dict[str, list[list[float]]] = {}
    notes: list[str] = []
    for mode in sorted({c.export_mode for c in chains if c.int8 and not c.sparse}):
        size = _size(model, mode, rep, False, notes)
        if size is not None:
            export_ratios[mode] = round(size / dense_bytes, 6)
    for chain in {c.export_mode: c for c in chains if c.sparse}.values():
        mode = chain.export_mode
        measured = []
        for s in points_at:
            zeroed = magnitude_pruned(model, sparse_build.layer_ratios(model, chain, s))
            size = _size(zeroed, mode, rep, True, notes)
            if size is None:
                break
            measured.append([float(s), round(size / dense_bytes, 6)])
        if len(measured) < 2:
            continue
        points[mode] = measured
        sparse_bytes[mode] = fit_line(measured)
    prune_bytes: dict[str, tuple[float, float]] = {}
    prune_points: dict[str, list[list[float]]] = {}
    if pruned is not None:
        pruned_model, keep = pruned
        if not 0.0 < float(keep) < 1.0:
            raise errors.InvalidArgumentError(
                "pruned", keep, "(model, params_ratio) with params_ratio in (0, 1)"
            )
        for mode in sorted({c.export_mode for c in chains if c.prunes and not c.sparse}):
            dense = 1.0 if mode == "float" else export_ratios.get(mode)
            size = None if dense is None else _size(pruned_model, mode, rep, False, notes)
            if size is None:
                continue
            pts = [[float(keep), round(size / dense_bytes, 6)], [1.0, float(dense)]]
            prune_points[mode] = pts
            # Two points; fit_line works in (1 - x), so pass the keep ratio as 1 - x.
            prune_bytes[mode] = fit_line([(1.0 - k, r) for k, r in pts])
    return StorageFacts(export_ratios, sparse_bytes, points, notes, prune_bytes, prune_points)


def describe(facts: StorageFacts) -> list[str]:
    """One line per measurement and per failed probe, for the plan's notes.

    Example:
        >>> describe(StorageFacts({"int4": 0.31}, {"int8": (0.05, 1.3)},
        ...                       {"int8": [[0.7, 0.44], [0.95, 0.115]]}, []))
        ['measured: the dense int4 file is 0.31x of the float file', 'measured: the int8 sparse file is 0.05 + 1.3 x (1 - sparsity) of the float file (0.44x at sparsity 0.7, 0.115x at 0.95)']
    """
    lines = [
        f"measured: the dense {mode} file is {ratio:.3g}x of the float file"
        for mode, ratio in facts.export_ratios.items()
    ]
    for mode, (fixed, per_kept) in facts.sparse_bytes.items():
        pts = facts.points.get(mode, [])
        at = ", ".join(
            f"{r:.3g}x at {'sparsity ' if i == 0 else ''}{s:g}" for i, (s, r) in enumerate(pts)
        )
        lines.append(
            f"measured: the {mode} sparse file is {fixed:.3g} + {per_kept:.3g} x (1 - sparsity) "
            f"of the float file" + (f" ({at})" if at else "")
        )
    for mode, (fixed, per_kept) in facts.prune_bytes.items():
        pts = facts.prune_points.get(mode)
        at = f" ({pts[0][1]:.3g}x at parameter keep {pts[0][0]:.3g})" if pts else ""
        lines.append(
            f"measured: a channel-pruned {mode} file is {fixed:.3g} + {per_kept:.3g} x its "
            f"parameter keep of the float file{at}"
        )
    return lines + list(facts.notes)


def _size(
    model: keras.Model, mode: str, rep: np.ndarray, sparse: bool, notes: list[str]
) -> int | None:
    """The raw size of ``model``'s ``mode`` file, or ``None`` (with a note) when refused."""
    try:
        if mode == "int4":
            content = int4_export.convert(
                model, int4_export.default_bits(model), rep, num_calibration=len(rep)
            ).content
        else:
            content = tflite_export.convert(
                model,
                mode,
                representative_data=rep if mode == "int8" else None,
                num_calibration=len(rep),
                sparse=sparse,
            )
    # Any converter failure: the probe only narrows the search, so it must not end the run;
    # a trial of that chain then fails on the same export with the full error.
    except Exception as e:  # noqa: BLE001
        notes.append(
            f"the {mode}{' sparse' if sparse else ''} probe export failed "
            f"({type(e).__name__}: {str(e)[:200]}); its estimate stays"
        )
        return None
    return tflite_export.tflite_size(content)[0]


__all__ = [
    "PROBE_CALIBRATION",
    "PROBE_PARAMS_KEEP",
    "PROBE_SPARSITIES",
    "StorageFacts",
    "describe",
    "fit_line",
    "magnitude_pruned",
    "measure",
    "probe_params_keep",
]
