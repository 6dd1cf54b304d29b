"""The weight-sparsification learner (``--learner weight-sparse``, alias ``ws``).

Gradual magnitude pruning (Zhu & Gupta 2017) through TFMOT, from the user's trained model,
with PocketFlow's schedule knobs and per-layer ratio protocols, optional 2:4 structure, and
sparsity-preserving int8 QAT (:mod:`.pqat`). Sparse ``.tflite`` export and the check of the
file's sparsity live in the core (:mod:`pocketflow_tf.tflite_export` with ``sparse=True``,
:mod:`pocketflow_tf.sparsity`).

Example:
    >>> from pocketflow_tf.learners.weight_sparse import WeightSparseLearner
    >>> WeightSparseLearner.name
    'weight-sparse'
"""

from pocketflow_tf.learners.weight_sparse.learner import SparsityPlan, WeightSparseLearner
from pocketflow_tf.learners.weight_sparse.ratios import LayerInfo
from pocketflow_tf.learners.weight_sparse.schedule import ScheduleSpec, plan_schedule

__all__ = ["LayerInfo", "ScheduleSpec", "SparsityPlan", "WeightSparseLearner", "plan_schedule"]
