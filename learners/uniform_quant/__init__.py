"""Uniform int8 quantization-aware training (``--learner uniform``).

Example:
    >>> from pocketflow_tf.learners.uniform_quant import UniformQuantLearner
    >>> UniformQuantLearner.name
    'uniform'
"""

from pocketflow_tf.learners.uniform_quant.learner import UniformQuantLearner

__all__ = ["UniformQuantLearner"]
