"""AMC's episode proxy: keep channels by magnitude, refit the readers by least squares.

Scoring a pruning plan by simply zeroing the dropped channels ranks nothing at the ratios a
search visits: on ResNet-20/Fashion-MNIST every plan at 0.5x FLOPs scores near chance that
way (cross-entropy about log 10), so an agent learns from noise. Running the real LASSO
selection for each plan fixes that but costs 17 s per plan. AMC (He et al. 2018) scores an
episode in between: the kept channels' readers (*consumers*) are refitted by least squares
to reproduce the dense model's output from the dense model's input features, restricted to
the kept channels. Errors of earlier layers are not chased (the features come from the dense
model), which is what makes it cheap:

With ``X`` the sampled input patches of a consumer and ``K`` its kernel, the target is
``Y = X K`` and the refit on kept rows ``S`` solves ``G[S, S] W = G[S, :] K`` with the Gram
matrix ``G = X'X``. ``G`` is accumulated once per consumer; every plan afterwards costs one
small solve per consumer plus the forward pass that scores it.

Example:
    >>> import numpy as np
    >>> from pocketflow_tf import channel_graph
    >>> from pocketflow_tf.compat import keras
    >>> keras.utils.set_random_seed(0)
    >>> m = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(8, 3, name="a"),
    ...                       keras.layers.Conv2D(4, 3, name="b")])
    >>> proxy = RefitProxy(m, channel_graph.build(m), np.random.rand(20, 6, 6, 2), points=8)
    >>> sorted(proxy.consumers)
    ['b']
    >>> probe = keras.models.clone_model(m)
    >>> probe.set_weights(m.get_weights())
    >>> proxy.apply(probe, {proxy.graph.prunable_groups()[0].id: np.arange(6)})
    >>> w = probe.get_layer("b").get_weights()[0]  # refitted on channels 0..5 of "a"
    >>> bool(np.any(w[:, :, :6])), bool(np.any(w[:, :, 6:]))
    (True, False)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pocketflow_tf import channel_graph, errors, options, surgery
from pocketflow_tf.compat import keras
from pocketflow_tf.learners.channel import lasso


class RefitProxy:
    """Gram matrices of every refittable consumer, and the refit of a plan from them.

    Args:
        model: The dense model (its weights and features are the reference).
        graph: Its channel graph.
        images: Calibration images from the *training* split.
        points: Output positions sampled per image and consumer.
        seed: Sampling seed.
        ridge: Ridge weight relative to the Gram diagonal's mean (stabilises the solve when
            kept channels are collinear, as in :func:`lasso.refit`).
        batch_size: Images per forward pass while sampling.

    Attributes:
        consumers: ``{layer name: Gram matrix}`` of the Conv2D/Dense layers that read a
            prunable group (rows: kernel position x input channel, plus one for a bias).

    Example:
        >>> m = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(8, 3, name="a"),
        ...                       keras.layers.Conv2D(4, 3, name="b")])
        >>> proxy = RefitProxy(m, channel_graph.build(m), np.random.rand(5, 6, 6, 2), points=4)
        >>> proxy.consumers["b"].shape  # 3x3 positions x 8 channels, plus the bias
        (73, 73)
    """

    def __init__(
        self,
        model: keras.Model,
        graph: channel_graph.ChannelGraph,
        images: np.ndarray,
        points: int = 10,
        seed: int = 0,
        ridge: float = 1e-4,
        batch_size: int = 128,
    ):
        options.check_integer("points", points, low=1)
        if len(images) == 0:
            raise errors.InvalidArgumentError("images", "0 images", "at least one image")
        self.model = model
        self.graph = graph
        self.ridge = float(ridge)
        names = []
        for g in graph.prunable_groups():
            names += [n for n in g.consumers if lasso.supports(model.get_layer(n))]
        names = list(dict.fromkeys(names))
        self._repeat = {n: lasso.flat_repeat(graph, n) for n in names}
        self.consumers: dict[str, np.ndarray] = {}
        if not names:
            return
        rng = np.random.default_rng(seed)
        extract = keras.Model(model.inputs, [model.get_layer(n).input for n in names])
        for start in range(0, len(images), batch_size):
            feats = extract(images[start : start + batch_size], training=False)
            if len(names) == 1:
                feats = [feats]
            for n, f in zip(names, feats, strict=True):
                p = lasso._patches(model.get_layer(n), np.asarray(f), self._repeat[n])
                rows = p[lasso.sample_index(rng, len(p), p.shape[1], points)]
                rows = rows.reshape(-1, p.shape[2] * p.shape[3])
                if model.get_layer(n).use_bias:
                    rows = np.concatenate([rows, np.ones((len(rows), 1), rows.dtype)], axis=1)
                rows = rows.astype(np.float64)
                gram = rows.T @ rows
                self.consumers[n] = self.consumers[n] + gram if n in self.consumers else gram

    def apply(self, probe: keras.Model, keep: Mapping[int, Sequence[int] | np.ndarray]) -> None:
        """Masks ``probe`` (a copy of the dense model) to ``keep`` and refits its consumers.

        Args:
            probe: A model with the dense model's architecture and weights; changed in place.
            keep: ``{group id: kept channel indices}``; groups not named stay whole.

        Example:
            When a dropped channel is a linear mix of kept ones, the refit is exact: here
            channel 2 of ``a`` is channel 0 plus channel 1.

            >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="a"),
            ...                       keras.layers.Dense(1, name="b")])
            >>> m.get_layer("a").set_weights([np.array([[1.0, 0, 1], [0, 1, 1]]), np.zeros(3)])
            >>> m.get_layer("b").set_weights([np.array([[1.0], [2.0], [3.0]]), np.zeros(1)])
            >>> x = np.random.default_rng(0).random((32, 2)).astype("float32")
            >>> proxy = RefitProxy(m, channel_graph.build(m), x, points=1)
            >>> probe = keras.models.clone_model(m)
            >>> probe.set_weights(m.get_weights())
            >>> proxy.apply(probe, {proxy.graph.prunable_groups()[0].id: [0, 1]})
            >>> np.round(probe.get_layer("b").get_weights()[0].ravel(), 2).tolist()
            [4.0, 5.0, 0.0]
        """
        surgery.mask_consumers(probe, self.graph, keep)
        masks = surgery.keep_masks(self.graph, keep)
        for name, gram in self.consumers.items():
            in_mask = lasso.consumer_in_mask(self.graph, masks, name)
            repeat = self._repeat[name]
            if in_mask.all():
                continue
            layer = self.model.get_layer(name)
            weights = layer.get_weights()
            k3 = lasso._kernel3(layer, weights[0], repeat)  # (P, C, O)
            full = k3.reshape(-1, k3.shape[-1]).astype(np.float64)
            if layer.use_bias:
                full = np.concatenate([full, weights[1][None, :].astype(np.float64)])
            rows = np.flatnonzero(np.tile(in_mask, k3.shape[0]))
            if layer.use_bias:
                rows = np.append(rows, len(full) - 1)
            solved = lasso.ridge_solve(gram[np.ix_(rows, rows)], gram[rows] @ full, self.ridge)
            new = np.zeros_like(full)
            new[rows] = solved
            out = probe.get_layer(name).get_weights()
            if layer.use_bias:
                out[1] = new[-1].astype(np.float32)
                new = new[:-1]
            out[0] = new.reshape(weights[0].shape).astype(np.float32)
            probe.get_layer(name).set_weights(out)


__all__ = ["RefitProxy"]
