"""MobileNet-style (v1 depthwise-separable or v2 inverted-residual) on Fashion-MNIST.

Full recipe: 30 epochs of Nesterov SGD, batch 128, peak LR 0.1 with warm-up and cosine
decay, weight decay 4e-5 (depthwise kernels overfit less than they underfit), shift + flip.

Example:
    >>> from pocketflow_tf.nets import mobilenet_at_fmnist
    >>> mobilenet_at_fmnist.RECIPE.build((28, 28, 1), 10, version=1).name
    'mobilenet_v1'
"""

import functools

from pocketflow_tf import training
from pocketflow_tf.nets import mobilenet, recipe
from pocketflow_tf.nets.resnet_at_fmnist import FMNIST_MEAN, FMNIST_STD

RECIPE = recipe.Recipe(
    name="mobilenet_at_fmnist",
    dataset="fmnist",
    build=functools.partial(mobilenet.build_mobilenet, mean=FMNIST_MEAN, std=FMNIST_STD),
    train=training.TrainConfig(
        epochs=30,
        batch_size=128,
        learning_rate=0.1,
        weight_decay=4e-5,
        lr_schedule="cosine",
        warmup_epochs=1.0,
        augmentation=training.Augmentation(pad=2, flip=True),
    ),
)
