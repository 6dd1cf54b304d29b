"""Automated compression (``--learner auto``, ``compress(model, data, target=...)``).

Given a target ("2x faster", "int8", "under 1 MB", "flops<=0.5"...), the package plans the
method chains that can reach it, searches their hyper-parameters with cheap trials on a
held-out share of the training data, rebuilds the best trial with the full fine-tuning
budget, verifies its ``.tflite`` and writes a JSON + HTML report with the Pareto front.

Modules, one job each: :mod:`.target` (what is asked, and whether figures meet it),
:mod:`.planner` (chains and search space), :mod:`.splits` (held-out data),
:mod:`.candidate` (building one candidate and its ``.tflite``; :mod:`.sparse_build` for the
weight-sparsity chains), :mod:`.proxy` (the per-trial objective and its scoring),
:mod:`.learner` (``AutoLearner``: search, choice, final build), :mod:`.report` (JSON + HTML)
and :mod:`.compress` (the Python entry point).

Example:
    >>> from pocketflow_tf.learners.auto import Target, AutoLearner
    >>> Target.parse("int8,<=0.3x bytes").bytes_ratio
    0.3
    >>> AutoLearner.name
    'auto'
"""

from pocketflow_tf.learners.auto.compress import CompressResult, compress
from pocketflow_tf.learners.auto.learner import AutoLearner
from pocketflow_tf.learners.auto.target import Target

__all__ = ["AutoLearner", "CompressResult", "Target", "compress"]
