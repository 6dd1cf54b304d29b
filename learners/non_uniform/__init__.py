"""Non-uniform quantization by weight clustering (``--learner non-uniform``).

Learned codebooks through TFMOT's weight clustering (Deep Compression style): ``2 ** bits``
shared values per clustered weight tensor, optional cluster-preserving int8 QAT, and a
report of what the exported files really hold and of the codebook storage. Modules: the
options (:mod:`.options`), the per-layer plan and wrap (:mod:`.plan`), codebook storage
(:mod:`.storage`), distinct values read back from ``.tflite`` files (:mod:`.tflite_values`),
cluster-preserving QAT (:mod:`.cqat`), the report (:mod:`.report`) and the learner
(:mod:`.learner`).

Example:
    >>> from pocketflow_tf.learners.non_uniform import NonUniformQuantLearner
    >>> NonUniformQuantLearner.name
    'non-uniform'
"""

from pocketflow_tf.learners.non_uniform.learner import NonUniformQuantLearner
from pocketflow_tf.learners.non_uniform.plan import ClusterPlan, LayerPlan
from pocketflow_tf.learners.non_uniform.report import FileReport, NonUniformReport
from pocketflow_tf.learners.non_uniform.storage import StorageReport
from pocketflow_tf.learners.non_uniform.tflite_values import KernelValues

__all__ = [
    "ClusterPlan",
    "FileReport",
    "KernelValues",
    "LayerPlan",
    "NonUniformQuantLearner",
    "NonUniformReport",
    "StorageReport",
]
