"""Knowledge distillation usable by every learner (Hinton et al. 2015).

The student is trained on ``CE(y, s) + weight * T^2 * KL(softmax(t / T) || softmax(s / T))``
where ``t`` and ``s`` are teacher and student logits. The ``T^2`` factor keeps the soft-target
gradients on the scale of the hard-target ones whatever the temperature. The teacher is any
Keras model with the same input and number of logits; by default the learner uses a frozen
copy of the uncompressed input model.

Example:
    >>> from pocketflow_tf import distillation
    >>> cfg = distillation.DistillationConfig(weight=1.0, temperature=4.0)
    >>> cfg.temperature
    4.0
"""

from __future__ import annotations

import dataclasses

from pocketflow_tf import errors
from pocketflow_tf.compat import keras, tf


@dataclasses.dataclass(frozen=True)
class DistillationConfig:
    """Distillation settings (flags ``--enbl_dst``, ``--loss_w_dst``, ``--tempr_dst``).

    Attributes:
        weight: Weight of the KD term (PocketFlow's ``loss_w_dst``), >= 0.
        temperature: Softmax temperature (``tempr_dst``), > 0.

    Example:
        >>> DistillationConfig(temperature=0)
        Traceback (most recent call last):
        ...
        pocketflow_tf.errors.InvalidArgumentError: Invalid value for `tempr_dst`: 0. Accepted: a number > 0.
    """

    weight: float = 4.0
    temperature: float = 2.0

    def __post_init__(self):
        if not self.weight >= 0:
            raise errors.InvalidArgumentError("loss_w_dst", self.weight, "a number >= 0")
        if not self.temperature > 0:
            raise errors.InvalidArgumentError("tempr_dst", self.temperature, "a number > 0")


def kd_loss(teacher_logits, student_logits, temperature: float):
    """Mean over the batch of ``T^2 * KL(softmax(t/T) || softmax(s/T))``.

    Example:
        >>> import numpy as np
        >>> float(kd_loss(np.array([[1.0, 2.0]]), np.array([[1.0, 2.0]]), 2.0))
        0.0
    """
    t = tf.cast(teacher_logits, tf.float32) / temperature
    s = tf.cast(student_logits, tf.float32) / temperature
    p_t = tf.nn.softmax(t)
    kl = tf.reduce_sum(p_t * (tf.nn.log_softmax(t) - tf.nn.log_softmax(s)), axis=-1)
    return tf.reduce_mean(kl) * temperature**2


class DistillationHelper:
    """Wraps a student so that ``fit`` trains it against a frozen teacher.

    Args:
        teacher: Any Keras model mapping the student's inputs to the same number of logits.
            It is never trained (it runs in inference mode).
        config: Weight and temperature.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> model = DistillationHelper(teacher).wrap(student)
        >>> model.student is student
        True
    """

    def __init__(self, teacher: keras.Model, config: DistillationConfig | None = None):
        if not isinstance(teacher, keras.Model):
            raise errors.InvalidArgumentError(
                "teacher", type(teacher).__name__, "a Keras model of the framework's Keras"
            )
        self.teacher = teacher
        self.teacher.trainable = False
        self.config = config or DistillationConfig()

    def check_compatible(self, student: keras.Model) -> None:
        """Raises if teacher and student disagree on input or logit shapes.

        Example:
            >>> from pocketflow_tf.compat import keras
            >>> t = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
            >>> s = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            >>> DistillationHelper(t).check_compatible(s)
            Traceback (most recent call last):
            ...
            pocketflow_tf.errors.InvalidArgumentError: Invalid value for `teacher`: 'output shape (None, 3)'. Accepted: a teacher with the student's output shape (None, 2).
        """
        if tuple(self.teacher.output_shape) != tuple(student.output_shape):
            raise errors.InvalidArgumentError(
                "teacher",
                f"output shape {tuple(self.teacher.output_shape)}",
                f"a teacher with the student's output shape {tuple(student.output_shape)}",
            )
        if tuple(self.teacher.input_shape) != tuple(student.input_shape):
            raise errors.InvalidArgumentError(
                "teacher",
                f"input shape {tuple(self.teacher.input_shape)}",
                f"a teacher with the student's input shape {tuple(student.input_shape)}",
            )

    def wrap(self, student: keras.Model) -> DistilledModel:
        """Returns a trainable model whose ``fit`` distils into ``student`` (trained in place).

        Example:
            >>> from pocketflow_tf.compat import keras
            >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
            >>> type(DistillationHelper(m).wrap(m)).__name__
            'DistilledModel'
        """
        self.check_compatible(student)
        return DistilledModel(student, self.teacher, self.config)


class DistilledModel(keras.Model):
    """Training-time wrapper: student forward pass, teacher targets, CE + KD loss.

    Inference (``predict`` / ``evaluate`` / ``__call__``) is the student's alone. The student's
    own layers (including TFMOT wrappers) are trained in place, so callbacks that look for
    wrappers find them through ``student``.

    Example:
        >>> from pocketflow_tf.compat import keras
        >>> s = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> DistilledModel(s, s, DistillationConfig()).student is s
        True
    """

    def __init__(self, student: keras.Model, teacher: keras.Model, config: DistillationConfig):
        super().__init__(name=f"distilled_{student.name}")
        self.student = student
        self.teacher = teacher
        self.config = config
        self.kd_tracker = keras.metrics.Mean(name="kd_loss")

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    @property
    def metrics(self):
        return super().metrics + [self.kd_tracker]

    def train_step(self, data):
        x, y = data[0], data[1]
        teacher_logits = self.teacher(x, training=False)
        with tf.GradientTape() as tape:
            logits = self.student(x, training=True)
            hard = self.compiled_loss(y, logits, regularization_losses=self.student.losses)
            kd = kd_loss(teacher_logits, logits, self.config.temperature)
            loss = hard + self.config.weight * kd
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        self.compiled_metrics.update_state(y, logits)
        self.kd_tracker.update_state(kd)
        results = {m.name: m.result() for m in self.metrics}
        results["loss"] = loss
        return results
