"""Full-precision training: the uncompressed baseline and the default teacher.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf import training
    >>> from pocketflow_tf.compat import keras
    >>> from pocketflow_tf.learners.full_prec.learner import FullPrecLearner
    >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="baseline")
    >>> x, y = np.random.rand(16, 3).astype("float32"), np.arange(16) % 2
    >>> out = FullPrecLearner(training.TrainConfig(batch_size=8), verbose=0).fit(m, x, y)
    >>> out.name, out.predict(x, verbose=0).shape
    ('baseline', (16, 2))
"""

from __future__ import annotations

from pocketflow_tf import learner


@learner.register("full-prec", "full_prec", "FullPrecLearner")
class FullPrecLearner(learner.Learner):
    """Trains or fine-tunes a model in float32 with no compression.

    With ``distillation`` set it distils from the teacher (by default a frozen copy of the
    input), which is how a compressed model is usually recovered; for a baseline leave it off.

    Example:
        >>> FullPrecLearner().get_config()["learner"]
        'full-prec'
    """
