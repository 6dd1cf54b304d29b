"""The docstring examples of the pruning, quantization and search modules run and stay true."""

import doctest
import importlib

import numpy as np
import pytest

import pocketflow_tf
from pocketflow_tf import (
    batchnorm,
    channel_graph,
    fake_quant,
    heads,
    inputs,
    layer_rules,
    qat,
    qat_freeze,
    safe_pickle,
    sparsity,
    surgery,
)
from pocketflow_tf.hp_optimizers import amc, base, ddpg, gp, random_search, search, space, tpe
from pocketflow_tf.learners.auto import candidate as auto_candidate
from pocketflow_tf.learners.auto import learner as auto_learner
from pocketflow_tf.learners.auto import planner as auto_planner
from pocketflow_tf.learners.auto import proxy as auto_proxy
from pocketflow_tf.learners.auto import report as auto_report
from pocketflow_tf.learners.auto import splits as auto_splits
from pocketflow_tf.learners.auto import target as auto_target
from pocketflow_tf.learners.channel import (
    allocation,
    amc_search,
    importance,
    lasso,
    latency_table,
    optimizer_search,
    refit_proxy,
)
from pocketflow_tf.learners.channel import learner as channel_learner
from pocketflow_tf.learners.non_uniform import cqat as nu_cqat
from pocketflow_tf.learners.non_uniform import learner as nu_learner
from pocketflow_tf.learners.non_uniform import options as nu_options
from pocketflow_tf.learners.non_uniform import plan as nu_plan
from pocketflow_tf.learners.non_uniform import report as nu_report
from pocketflow_tf.learners.non_uniform import storage as nu_storage
from pocketflow_tf.learners.non_uniform import tflite_values as nu_tflite_values
from pocketflow_tf.learners.uniform_quant import bits as uniform_bits
from pocketflow_tf.learners.uniform_quant import bits_search as uniform_bits_search
from pocketflow_tf.learners.uniform_quant import learner as uniform_learner
from pocketflow_tf.learners.uniform_quant import storage as uniform_storage

# The package re-exports the function compress(), which hides its module of the same name.
auto_compress = importlib.import_module("pocketflow_tf.learners.auto.compress")


@pytest.mark.parametrize(
    "module",
    [
        pocketflow_tf,
        inputs,
        heads,
        safe_pickle,
        layer_rules,
        auto_target,
        auto_planner,
        auto_splits,
        auto_candidate,
        auto_proxy,
        auto_report,
        auto_learner,
        auto_compress,
        channel_graph,
        surgery,
        allocation,
        importance,
        lasso,
        latency_table,
        refit_proxy,
        optimizer_search,
        channel_learner,
        qat,
        qat_freeze,
        fake_quant,
        uniform_learner,
        uniform_bits,
        uniform_bits_search,
        uniform_storage,
        batchnorm,
        sparsity,
        nu_options,
        nu_plan,
        nu_storage,
        nu_tflite_values,
        nu_cqat,
        nu_report,
        nu_learner,
        space,
        base,
        search,
        ddpg,
        amc,
        random_search,
        tpe,
        gp,
        amc_search,
    ],
)
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
