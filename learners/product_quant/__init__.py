"""Product quantization, "And the Bit Goes Down" (``--learner product-quant``).

Example:
    >>> from pocketflow_tf.learners.product_quant import ProductQuantLearner
    >>> ProductQuantLearner.name
    'product-quant'
"""

from pocketflow_tf.learners.product_quant.learner import ProductQuantLearner

__all__ = ["ProductQuantLearner"]
