"""The docstring examples of the pruning and quantization modules run and stay true."""

import doctest

import numpy as np
import pytest

from pocketflow_tf import channel_graph, qat, surgery
from pocketflow_tf.learners.channel import allocation, importance, lasso, latency_table
from pocketflow_tf.learners.channel import learner as channel_learner
from pocketflow_tf.learners.uniform_quant import learner as uniform_learner


@pytest.mark.parametrize(
    "module",
    [
        channel_graph,
        surgery,
        allocation,
        importance,
        lasso,
        latency_table,
        channel_learner,
        qat,
        uniform_learner,
    ],
)
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
