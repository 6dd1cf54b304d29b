"""Typed learner options: one declaration for validation, records, flags and the reference."""

import dataclasses
import json
import subprocess
import sys

import pytest

import pocketflow_tf.learners  # noqa: F401  (registers every learner)
from pocketflow_tf import errors, learner, options, training

#: Non-default settings per learner declaring Options (each a valid configuration).
NON_DEFAULT = {
    "channel": {
        "cp_prune_option": "auto",
        "cp_preserve_ratio": 0.4,
        "cp_exclude": ["conv1"],
        "cp_ratio_search": "tpe",
        "cp_search_trials": 7,
        "cp_nb_points": 4,
    },
    "dis-chn-pruned": {"cp_prune_list": {"c1": 0.5}, "dcp_nb_stages": 2, "cp_exclude": "a"},
    "auto": {"auto_target": "2x faster, int8", "auto_dir": "/tmp/a", "auto_max_trials": 3},
}
#: One bad value per learner and the option its error must name.
BAD = {
    "channel": ({"cp_channel_round": True}, "cp_channel_round"),
    "dis-chn-pruned": ({"dcp_prune_ratio": 1.0}, "dcp_prune_ratio"),
    "auto": ({"auto_target": "2x faster", "auto_dir": "/tmp/a", "auto_holdout": 0}, "auto_holdout"),
}


@pytest.mark.parametrize("name", sorted(NON_DEFAULT))
def test_config_round_trips_through_json(name):
    cls = learner.get_learner_class(name)
    lrn = cls(training.TrainConfig(epochs=2, batch_size=16, seed=3), **NON_DEFAULT[name])
    config = json.loads(json.dumps(lrn.get_config()))  # what a run record holds
    again = cls.from_config(config)
    assert again.get_config() == lrn.get_config()
    assert again.train_config == lrn.train_config


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_names_its_option(name):
    values, named = BAD[name]
    with pytest.raises(errors.InvalidArgumentError) as e:
        learner.get_learner_class(name)(**values)
    assert e.value.name == named


def test_an_unknown_option_is_named_with_the_accepted_ones():
    with pytest.raises(errors.InvalidArgumentError) as e:
        learner.get_learner_class("channel")(cp_preserve=0.5)
    assert e.value.name == "cp_preserve" and "cp_preserve_ratio" in e.value.accepted


def test_from_config_refuses_another_learners_record():
    config = learner.get_learner_class("channel")().get_config()
    with pytest.raises(errors.InvalidArgumentError, match="learner"):
        learner.get_learner_class("dis-chn-pruned").from_config(config)


def test_channel_builds_the_named_ratio_search():
    lrn = learner.get_learner_class("channel")(cp_prune_option="auto", cp_ratio_search="random")
    assert lrn.ratio_search is not None
    with pytest.raises(errors.InvalidArgumentError, match="cp_amc_episodes"):
        learner.get_learner_class("channel")(cp_prune_option="auto", cp_amc_episodes=5)


def test_reference_lists_every_command_line_option():
    text = options.reference_markdown()
    for name in learner.available():
        opts_cls = learner.get_learner_class(name).Options
        for field in dataclasses.fields(opts_cls):
            assert (f"`--{field.name}`" in text) == field.metadata["cli"], field.name


_FLAGS_CHECK = """
import dataclasses
import pocketflow_tf.learners
from pocketflow_tf import learner, options
from pocketflow_tf.app import cli

cli.FLAGS(["prog", "--learner=channel", "--cp_prune_list=c1=0.5,c2=0.25",
           "--cp_prune_option=list", "--cp_exclude=a,b"])
got = cli.learner_options()
assert got == {"cp_prune_list": {"c1": 0.5, "c2": 0.25}, "cp_prune_option": "list",
               "cp_exclude": ["a", "b"]}, got
for name in learner.available():
    for field in dataclasses.fields(learner.get_learner_class(name).Options):
        if field.metadata["cli"]:
            assert field.name in cli.FLAGS, field.name  # every option has its flag
cli.FLAGS.unparse_flags()
cli.FLAGS(["prog", "--learner=channel", "--cp_prune_list=c1"])
try:
    cli.learner_options()
    raise SystemExit("no error for an unreadable --cp_prune_list")
except Exception as e:
    assert "cp_prune_list" in str(e) and "LAYER=RATIO" in str(e), e
print("FLAGS_OK")
"""


def test_every_option_is_a_flag_and_flag_strings_are_parsed():
    # In a child process: absl's global FLAGS may already hold other tools' flags here.
    proc = subprocess.run(
        [sys.executable, "-c", _FLAGS_CHECK], capture_output=True, text=True, timeout=300
    )
    assert "FLAGS_OK" in proc.stdout, proc.stderr[-2000:]


def test_one_name_stands_for_a_list_of_one():
    lrn = learner.get_learner_class("dis-chn-pruned")(cp_exclude="conv1")
    assert lrn.cp_exclude == ("conv1",)
