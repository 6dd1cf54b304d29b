"""The full-precision learner (``--learner full-prec``).

Example:
    >>> from pocketflow_tf.learners.full_prec import FullPrecLearner
    >>> FullPrecLearner.name
    'full-prec'
"""

from pocketflow_tf.learners.full_prec.learner import FullPrecLearner

__all__ = ["FullPrecLearner"]
