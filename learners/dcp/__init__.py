"""Discrimination-aware channel pruning (``--learner dis-chn-pruned``, alias ``dcp``).

Example:
    >>> from pocketflow_tf.learners.dcp import DisChnPrunedLearner
    >>> DisChnPrunedLearner.name
    'dis-chn-pruned'
"""

from pocketflow_tf.learners.dcp.learner import DisChnPrunedLearner

__all__ = ["DisChnPrunedLearner"]
