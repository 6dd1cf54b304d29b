"""The ``nuql_*`` options of the non-uniform learner: names, defaults and their checks.

Every check raises :class:`~pocketflow_tf.errors.InvalidArgumentError` naming the option,
echoing the value and saying what is accepted, from the learner's constructor -- before any
data is read or any model is touched.

Centroid initialisation styles map onto TFMOT's ``CentroidInitialization``; PocketFlow's
own names are accepted as aliases (its ``quantile`` initialisation is TFMOT's density-based
one -- centroids at evenly spaced quantiles of the weights -- and its ``uniform`` is TFMOT's
linear one).

Example:
    >>> from pocketflow_tf.learners.non_uniform import options
    >>> options.check_bits(4), options.num_clusters(4)
    (4, 16)
    >>> options.check_init_style("quantile")
    'density'
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow_model_optimization as tfmot

from pocketflow_tf import errors
from pocketflow_tf import options as options_lib

_CI = tfmot.clustering.keras.CentroidInitialization

#: Default ``nuql_weight_bits``: PocketFlow's 4 bits, i.e. 16 clusters per layer.
DEFAULT_BITS = 4
#: What a clustering bit-width accepts (its error and the flag reference).
BITS_ACCEPTED = "an integer in 1..8 (2**bits clusters per layer, 2 to 256)"
#: Default ``nuql_int8_epochs``: fine-tuning with int8 fake quantization on top of learned
#: clusters costs little accuracy, so a short recovery suffices.
DEFAULT_INT8_EPOCHS = 1
#: Default ``nuql_init_style``: TFMOT's k-means++ seeding (its own default too).
DEFAULT_INIT_STYLE = "kmeans_plus_plus"

#: Canonical ``nuql_init_style`` names -> TFMOT's centroid initialisation.
INIT_STYLES: dict[str, Any] = {
    "kmeans_plus_plus": _CI.KMEANS_PLUS_PLUS,
    "linear": _CI.LINEAR,
    "density": _CI.DENSITY_BASED,
    "random": _CI.RANDOM,
}
#: PocketFlow's ``nuql_init_style`` names, accepted as aliases of the canonical ones.
INIT_ALIASES: dict[str, str] = {"quantile": "density", "uniform": "linear"}


def check_bits(bits: Any, name: str = "nuql_weight_bits") -> int:
    """Validates a weight bit-width: an integer in 1..8 (2 to 256 clusters).

    Example:
        >>> check_bits(9)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `nuql_weight_bits`: 9. Accepted: an integer in 1..8 (2**bits clusters per layer, 2 to 256).
    """
    ok = isinstance(bits, int | np.integer) and not isinstance(bits, bool | np.bool_)
    if not ok or not 1 <= int(bits) <= 8:
        raise errors.InvalidArgumentError(name, bits, BITS_ACCEPTED)
    return int(bits)


def num_clusters(bits: int) -> int:
    """Clusters (codebook entries) per clustered weight tensor: ``2 ** bits``.

    Example:
        >>> num_clusters(3)
        8
    """
    return 2 ** check_bits(bits)


def check_init_style(style: Any) -> str:
    """Validates ``nuql_init_style`` and returns its canonical name.

    Example:
        >>> check_init_style("kmeans")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `nuql_init_style`: 'kmeans'. Accepted: one of ['kmeans_plus_plus', 'linear', 'density', 'random'] (or PocketFlow's 'quantile' = 'density', 'uniform' = 'linear').
    """
    key = _canonical_style(style)
    if key is None:
        raise errors.InvalidArgumentError("nuql_init_style", style, INIT_STYLE_ACCEPTED)
    return key


def centroid_init(style: str) -> Any:
    """TFMOT's ``CentroidInitialization`` member for an init style (canonical or alias).

    Example:
        >>> centroid_init("uniform").name
        'LINEAR'
    """
    return INIT_STYLES[check_init_style(style)]


def _canonical_style(style: Any) -> str | None:
    """The canonical name of an init style or alias (any case), ``None`` if unknown."""
    if isinstance(style, str):
        key = INIT_ALIASES.get(style.lower(), style.lower())
        if key in INIT_STYLES:
            return key
    return None


_ALIASES = ", ".join(f"{a!r} = {c!r}" for a, c in INIT_ALIASES.items())
#: What ``nuql_init_style`` accepts (its error and the flag reference).
INIT_STYLE_ACCEPTED = f"one of {list(INIT_STYLES)} (or PocketFlow's {_ALIASES})"


@dataclasses.dataclass(frozen=True)
class NonUniformOptions(options_lib.Options):
    """The ``nuql_*`` options of the non-uniform learner (see its arguments).

    Example:
        >>> NonUniformOptions(nuql_init_style="Quantile").nuql_init_style
        'density'
        >>> NonUniformOptions(nuql_int8="yes")
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `nuql_int8`: 'yes'. Accepted: True or False.
    """

    nuql_weight_bits: int = options_lib.option(
        DEFAULT_BITS, help="2**bits clusters per layer", low=1, high=8, accepted=BITS_ACCEPTED
    )
    nuql_init_style: str = options_lib.option(
        DEFAULT_INIT_STYLE,
        help="centroid initialisation (PocketFlow's quantile = density, uniform = linear)",
        accepted=INIT_STYLE_ACCEPTED,
    )
    nuql_quantize_all_layers: bool = options_lib.option(
        False, help="cluster the first and last layers too"
    )
    nuql_int8: bool = options_lib.option(
        False, help="cluster-preserving int8 QAT after clustering (int8 export)"
    )
    nuql_int8_epochs: int = options_lib.option(
        DEFAULT_INT8_EPOCHS, help="epochs of the int8 phase", low=1
    )
    nuql_report_tflite: bool = options_lib.option(
        True,
        help="convert the result to measure the .tflite sizes and the distinct values in the "
        "files for the report",
    )

    def check(self) -> None:
        self._set("nuql_init_style", check_init_style(self.nuql_init_style))


__all__ = [
    "DEFAULT_BITS",
    "DEFAULT_INIT_STYLE",
    "INIT_ALIASES",
    "INIT_STYLES",
    "centroid_init",
    "check_bits",
    "BITS_ACCEPTED",
    "DEFAULT_INT8_EPOCHS",
    "INIT_STYLE_ACCEPTED",
    "NonUniformOptions",
    "check_init_style",
    "num_clusters",
]
