"""Channel pruning that physically removes channels (``--learner channel``).

Example:
    >>> from pocketflow_tf.learners.channel import ChannelPrunedLearner
    >>> ChannelPrunedLearner.name
    'channel'
"""

from pocketflow_tf.learners.channel.learner import ChannelPrunedLearner

__all__ = ["ChannelPrunedLearner"]
