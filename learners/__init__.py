"""Compression learners, one sub-package per method, installed as ``pocketflow_tf.learners``.

Importing this package registers every built-in learner under its PocketFlow name.

Example:
    >>> import pocketflow_tf.learners
    >>> from pocketflow_tf import learner
    >>> learner.available()
    ['auto', 'channel', 'dis-chn-pruned', 'full-prec', 'non-uniform', 'product-quant', 'uniform', 'weight-sparse']
"""

from pocketflow_tf.learners import (
    auto,  # noqa: F401  (registers "auto")
    channel,  # noqa: F401  (registers "channel")
    dcp,  # noqa: F401  (registers "dis-chn-pruned")
    full_prec,  # noqa: F401  (registers "full-prec")
    non_uniform,  # noqa: F401  (registers "non-uniform")
    product_quant,  # noqa: F401  (registers "product-quant")
    uniform_quant,  # noqa: F401  (registers "uniform")
    weight_sparse,  # noqa: F401  (registers "weight-sparse")
)
