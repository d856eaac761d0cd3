"""Influence functions (Koh & Liang, 2017) on the head of a fine-tuned network.

Which training images does a fine-tuned model rely on for a test prediction? For the
parameters theta = (fc kernel, fc bias) of the new head, trained on the head's input
features x (the frozen or fine-tuned trunk's output, ``training=False``), the
influence of upweighting a training example z on the loss of a test example is

    I(z, z_test) = -grad L(z_test)^T  H^-1  grad L(z)                (Koh & Liang's I_up,loss)

with H the Hessian of the training objective at the trained theta: the mean softmax
cross-entropy over the run's training images plus the run's L2 term
``weight_decay / 2 * ||theta||^2`` (the fine-tuning recipe decays kernel and bias),
plus a damping ``lambda * I``. When blocks of the trunk were fine-tuned too, only the
head's parameters are considered (as in Koh & Liang's Inception experiment): the trunk
is taken as a fixed feature extractor.

Sign convention (the same everywhere in this module and its outputs):

- ``I < 0``: upweighting z lowers the test loss; removing z raises it. z is *helpful*.
  Removing z from the n training images changes the test loss by about
  ``-I / n = +(1/n) grad_test^T H^-1 grad_z``.
- ``influence_<model>.npy`` stores I itself (Koh & Liang's sign).
- "Most influential" means *most helpful*: training images ranked by ``-I``, largest
  first (the paper's Figures 5 and 6 show the top images by influence value; the
  helpful ones are those that support the prediction). ``rank='absolute'`` ranks by
  ``|I|`` instead.

Why damping: the softmax cross-entropy Hessian is singular: adding the same vector to
every class's weights (any ``a`` in ``theta[:, c] += a`` for all c) leaves every
logit difference, hence every loss, unchanged, so H has a null space of dimension
``features + 1``; features that are zero on every training image (dead ReLUs) add
more. The run's weight decay already makes H positive definite, but only barely
(5e-4); ``lambda`` (default 0.01) bounds H^-1's norm so a few near-null directions do
not dominate the scores, as Koh & Liang did for non-convex models. We damp rather
than use a pseudo-inverse because the decayed objective's true Hessian is invertible,
and damping keeps the exact and CG paths solving the same system.

H is computed exactly in float64 (closed form of softmax regression: the mean of
``[x;1][x;1]^T kron (diag(p) - p p^T)``) when it has at most ``EXACT_MAX_PARAMS`` rows,
and otherwise only applied to vectors, as Hessian-vector products by double
back-propagation (``tf.GradientTape`` twice), inside batched conjugate gradients.
Both work, exactly, in the span of the training features (``feature_basis``): with
fewer training images than features (a 2048-d ResNet-50 head fine-tuned on 1000
images) H shrinks from ``(d+1) C`` to ``N C`` rows, which is what makes the exact path
usable in the paper's few-image regime.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from tftransfer.errors import UserError

HEAD_NAME = "fc"
EXACT_MAX_PARAMS = 5000
from tftransfer.config import INFLUENCE_METHODS as METHODS  # noqa: E402
from tftransfer.config import INFLUENCE_RANKINGS as RANKINGS  # noqa: E402
# Elements of the [vectors, examples, classes] logits tensor per HVP chunk (~80 MB float64).
_HVP_CHUNK_ELEMENTS = 10_000_000
# Above this norm of the training objective's gradient, the head is reported as unconverged.
_STATIONARY_NORM = 1e-2


# ----------------------------------------------------------------------------- the head problem

@dataclass(frozen=True)
class Head:
    """A trained softmax-regression head and the objective it was trained with.

    Attributes:
      kernel: float64 [features, classes] (Keras' Dense layout).
      bias: float64 [classes].
      l2: coefficient of the objective's ``l2 / 2 * ||theta||^2`` term (kernel and bias).
      label_smoothing: label smoothing of the training cross-entropy.
    """

    kernel: np.ndarray
    bias: np.ndarray
    l2: float = 0.0
    label_smoothing: float = 0.0

    @property
    def theta(self) -> np.ndarray:
        """Parameters as one [features + 1, classes] matrix; the last row is the bias."""
        return np.vstack([self.kernel, self.bias[None, :]]).astype(np.float64)

    @property
    def num_params(self) -> int:
        return int(np.prod(self.theta.shape))


def with_bias_column(features: np.ndarray) -> np.ndarray:
    """``[x; 1]`` for every row: float64 [n, features + 1]."""
    features = np.asarray(features, dtype=np.float64)
    return np.hstack([features, np.ones((len(features), 1))])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum for stability."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def soft_targets(labels: np.ndarray, num_classes: int, label_smoothing: float = 0.0):
    """One-hot targets, smoothed the way Keras' CategoricalCrossentropy does."""
    onehot = np.eye(num_classes)[np.asarray(labels, dtype=np.int64)]
    return onehot * (1.0 - label_smoothing) + label_smoothing / num_classes


def losses(head: Head, features, labels) -> np.ndarray:
    """Per-example cross-entropy of the head (float64)."""
    logits = with_bias_column(features) @ head.theta
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    targets = soft_targets(labels, logits.shape[1], head.label_smoothing)
    return -(targets * log_p).sum(axis=1)


def _design(features, basis: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``([x; 1], its coordinates in basis)``; the first gives the logits, the second is
    the factor of the gradient and the Hessian in the (possibly reduced) parameters."""
    full = with_bias_column(features)
    return full, (full if basis is None else full @ basis)


def per_example_gradients(head: Head, features, labels, basis=None) -> np.ndarray:
    """Gradient of each example's cross-entropy w.r.t. theta, flattened row-major.

    For softmax regression it is ``[x; 1] outer (p - t)``: no autodiff needed.

    Args:
      head, features, labels: the head and the examples.
      basis: optional [features + 1, r] orthonormal basis (see ``feature_basis``); the
        gradient is then given in the coordinates ``basis^T theta``.

    Returns:
      float64 [n, (features + 1) * classes], or [n, r * classes] with a basis.
    """
    full, design = _design(features, basis)
    probabilities = softmax(full @ head.theta)
    residual = probabilities - soft_targets(labels, probabilities.shape[1], head.label_smoothing)
    return (design[:, :, None] * residual[:, None, :]).reshape(len(design), -1)


def objective_gradient(head: Head, features, labels) -> np.ndarray:
    """Gradient of the full training objective (mean loss + L2) at theta; zero at an optimum."""
    return per_example_gradients(head, features, labels).mean(axis=0) + head.l2 * head.theta.ravel()


def feature_basis(features, rtol: float = 1e-10) -> np.ndarray | None:
    """An orthonormal basis of the span of the training ``[x; 1]`` (None: all of R^(d+1)).

    Why it is exact to work in it: every training gradient is ``[x; 1] outer r``, so it
    lies in ``span(basis) kron R^classes``, and H maps that subspace into itself while
    acting as ``(l2 + damping) I`` on its complement. A test gradient's component in the
    complement is therefore mapped into the complement, orthogonal to every training
    gradient: it adds nothing to any influence. With few training images (N < d + 1,
    the paper's regime) or dead features, H shrinks from (d+1)C to rC rows.
    """
    design = with_bias_column(features)
    if len(design) < design.shape[1]:
        _, singular, vt = np.linalg.svd(design, full_matrices=False)
        basis = vt[singular > rtol * singular[0]].T
    else:
        values, vectors = np.linalg.eigh(design.T @ design)
        basis = vectors[:, values > (rtol ** 2) * values[-1]]
    return None if basis.shape[1] == design.shape[1] else basis


# ----------------------------------------------------------------------------- Hessian: exact

def exact_hessian(head: Head, features, damping: float, basis=None,
                  chunk: int = 4096) -> np.ndarray:
    """The damped Hessian of the training objective, exactly, in float64.

    ``H = mean_n ([x;1][x;1]^T kron (diag(p_n) - p_n p_n^T)) + (l2 + damping) I``, in the
    row-major order of ``theta`` (index ``feature * classes + class``); with a ``basis``,
    ``[x; 1]`` is replaced by its coordinates in it.

    Args:
      head: the trained head.
      features: the training features the head was fit on, [n, features].
      damping: lambda.
      basis: optional reduced basis (see ``feature_basis``).
      chunk: examples per block (bounds memory at ``chunk * params`` floats).

    Returns:
      float64 [params, params].
    """
    c = head.theta.shape[1]
    d = head.theta.shape[0] if basis is None else basis.shape[1]
    hessian = np.zeros((d, c, d, c))
    for start in range(0, len(features), chunk):
        full, x = _design(features[start:start + chunk], basis)
        p = softmax(full @ head.theta)
        outer = (x[:, :, None] * p[:, None, :]).reshape(len(x), d * c)
        hessian -= (outer.T @ outer).reshape(d, c, d, c)
        for k in range(c):
            hessian[:, k, :, k] += (x * p[:, k:k + 1]).T @ x
    hessian = hessian.reshape(d * c, d * c) / len(features)
    hessian[np.diag_indices_from(hessian)] += head.l2 + damping
    return hessian


def solve_exact(hessian: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``H^-1 v`` for every row ``v`` of ``vectors`` (Cholesky, float64)."""
    from scipy.linalg import LinAlgError, cho_factor, cho_solve

    try:
        factor = cho_factor(hessian, lower=True)
    except LinAlgError:
        raise UserError("The Hessian of the head is not positive definite (the softmax Hessian "
                        "is singular without weight decay); use --damping > 0.") from None
    return cho_solve(factor, np.asarray(vectors, np.float64).T).T


# ----------------------------------------------------------------------------- Hessian: HVPs + CG

def hessian_vector_products(head: Head, features, vectors: np.ndarray, damping: float,
                            basis=None) -> np.ndarray:
    """``H v`` for every row of ``vectors``, by double back-propagation in float64.

    The HVP never forms H: it differentiates ``<grad L(theta + t), v>`` w.r.t. a zero
    perturbation ``t``, one perturbation per vector, so a block of vectors costs one
    pair of backward passes.

    Args:
      head: the trained head.
      features: the training features, [n, features].
      vectors: [k, params] (reduced params with a ``basis``).
      damping: lambda.
      basis: optional reduced basis (see ``feature_basis``).

    Returns:
      float64 [k, params].
    """
    full, design = _design(features, basis)
    c = head.theta.shape[1]
    logits = tf.constant(full @ head.theta)
    x = tf.constant(design)
    vectors = np.asarray(vectors, np.float64)
    block = max(1, _HVP_CHUNK_ELEMENTS // max(1, len(design) * c))
    products = []
    for start in range(0, len(vectors), block):
        v = tf.constant(vectors[start:start + block].reshape(-1, design.shape[1], c))
        products.append(_hvp_block(x, logits, v).numpy().reshape(len(v), -1))
    result = np.concatenate(products) if products else np.zeros_like(vectors)
    return result + (head.l2 + damping) * vectors


@tf.function(reduce_retracing=True)
def _hvp_block(x, logits_at_theta, v):
    perturbation = tf.zeros_like(v)
    with tf.GradientTape() as outer:
        outer.watch(perturbation)
        with tf.GradientTape() as inner:
            inner.watch(perturbation)
            logits = logits_at_theta[None] + tf.einsum("nd,kdc->knc", x, perturbation)
            # The label term of the cross-entropy is linear in theta (zero Hessian), so
            # the mean log-sum-exp is the whole curvature.
            loss = tf.reduce_sum(tf.reduce_mean(tf.reduce_logsumexp(logits, axis=-1), axis=1))
        gradient = inner.gradient(loss, perturbation)
        projection = tf.reduce_sum(gradient * v)
    return outer.gradient(projection, perturbation)


def conjugate_gradients(apply, rhs: np.ndarray, tol: float = 1e-10, max_iter: int | None = None):
    """Solves ``A x = b`` for every row ``b`` of ``rhs`` at once (A symmetric positive
    definite, applied to a block of rows by ``apply``).

    Each system stops when its residual is below ``tol * ||b||``; only the unfinished
    ones are multiplied by A.

    Returns:
      ``(solutions [k, params], iterations, worst relative residual)``.
    """
    rhs = np.asarray(rhs, np.float64)
    solution = np.zeros_like(rhs)
    residual = rhs.copy()
    direction = residual.copy()
    squared = np.einsum("ij,ij->i", residual, residual)
    norms = np.maximum(squared, np.finfo(float).tiny)
    active = squared > (tol ** 2) * norms
    max_iter = max_iter or 2 * rhs.shape[1]
    iterations = 0
    while active.any() and iterations < max_iter:
        rows = np.flatnonzero(active)
        product = apply(direction[rows])
        alpha = squared[rows] / np.einsum("ij,ij->i", direction[rows], product)
        solution[rows] += alpha[:, None] * direction[rows]
        residual[rows] -= alpha[:, None] * product
        new_squared = np.einsum("ij,ij->i", residual[rows], residual[rows])
        direction[rows] = residual[rows] + (new_squared / squared[rows])[:, None] * direction[rows]
        squared[rows] = new_squared
        active[rows] = new_squared > (tol ** 2) * norms[rows]
        iterations += 1
    worst = float(np.sqrt(np.max(squared / norms))) if len(rhs) else 0.0
    return solution, iterations, worst


# ----------------------------------------------------------------------------- influence

def choose_method(method: str, num_params: int) -> str:
    """``exact`` or ``cg``: ``auto`` picks exact for heads up to ``EXACT_MAX_PARAMS``."""
    if method not in METHODS:
        raise UserError(f"Unknown --method {method!r}; use one of {', '.join(METHODS)}.")
    if method == "auto":
        return "exact" if num_params <= EXACT_MAX_PARAMS else "cg"
    return method


def inverse_hvps(head: Head, train_features, vectors: np.ndarray, damping: float,
                 method: str = "auto", basis=None, cg_tol: float = 1e-10):
    """``H^-1 v`` for every row of ``vectors``; H over ``train_features`` (see module doc).

    Returns:
      ``(solutions, info)`` with info: the method used, the number of parameters solved
      for and, for CG, its iterations and worst relative residual.
    """
    if damping < 0:
        raise UserError(f"--damping must be >= 0, got {damping}.")
    params = np.asarray(vectors).shape[1]
    method = choose_method(method, params)
    info = {"method": method, "solved_params": int(params)}
    if method == "exact":
        hessian = exact_hessian(head, train_features, damping, basis)
        return solve_exact(hessian, vectors), info
    if head.l2 + damping <= 0:
        raise UserError("Conjugate gradients need a positive definite Hessian; the softmax "
                        "Hessian is singular without weight decay: use --damping > 0.")
    solution, iterations, residual = conjugate_gradients(
        lambda block: hessian_vector_products(head, train_features, block, damping, basis),
        vectors, tol=cg_tol)
    if residual > 1e-4:
        print(f"influence: warning: conjugate gradients stopped at relative residual "
              f"{residual:.1e} after {iterations} iterations", file=sys.stderr)
    return solution, {**info, "cg_iterations": iterations, "cg_residual": residual}


@dataclass(frozen=True)
class Influence:
    """Influence matrices (Koh & Liang's I_up,loss; negative = helpful).

    Attributes:
      on_test: [test, train]: I(train j, test i).
      on_train: [train, train]: I(train j, train i); the diagonal is self-influence.
      info: how H^-1 was applied.
    """

    on_test: np.ndarray
    on_train: np.ndarray | None
    info: dict


def compute_influence(head: Head, hessian_features, train_features, train_labels,
                      test_features, test_labels, damping: float = 0.01, method: str = "auto",
                      train_targets: bool = True, reduce: bool = True) -> Influence:
    """Influence of each training image on each test (and training) image's loss.

    Args:
      head: the trained head.
      hessian_features: features of every image the head was trained on (H's average).
      train_features, train_labels: the training images whose influence is measured
        (among ``hessian_features``).
      test_features, test_labels: the images whose loss is affected.
      damping: lambda added to H's diagonal.
      method: ``auto``, ``exact`` or ``cg`` (``auto`` decides on the reduced size).
      train_targets: also compute training images' influence on each other.
      reduce: work in the span of the training features (``feature_basis``): the same
        result, cheaper when there are fewer images than features.

    Returns:
      An ``Influence``.
    """
    basis = feature_basis(hessian_features) if reduce else None
    train_grads = per_example_gradients(head, train_features, train_labels, basis)
    test_grads = per_example_gradients(head, test_features, test_labels, basis)
    rhs = np.vstack([test_grads, train_grads]) if train_targets else test_grads
    # Solving for the targets' side (Koh & Liang's s_test) costs one solve per target.
    solved, info = inverse_hvps(head, hessian_features, rhs, damping, method, basis)
    info["head_params"] = head.num_params
    on_test = -solved[:len(test_grads)] @ train_grads.T
    on_train = -solved[len(test_grads):] @ train_grads.T if train_targets else None
    return Influence(on_test=on_test, on_train=on_train, info=info)


# ----------------------------------------------------------------------------- match rates

def ranking_scores(influence: np.ndarray, rank: str = "helpful") -> np.ndarray:
    """Scores whose descending order is "most influential first" (see module doc)."""
    if rank == "helpful":
        return -influence
    if rank == "absolute":
        return np.abs(influence)
    raise UserError(f"Unknown ranking {rank!r}; use one of {', '.join(RANKINGS)}.")


def top_influential(scores: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """Indices of the ``k`` highest-scoring training images per row (ties: lower index).

    With ``exclude_self`` (square scores, row i = training image i) an image never
    ranks itself.
    """
    scores = np.array(scores, dtype=np.float64)
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    k = min(k, scores.shape[1] - int(exclude_self))
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def match_rates(scores: np.ndarray, train_labels, target_labels, top_k: int,
                exclude_self: bool = False) -> pd.DataFrame:
    """The paper's Figure 6: for k = 1..top_k, the share of targets whose k-th most
    influential training image has the target's label.

    Returns:
      A frame with columns k, match_rate (at rank k) and cumulative_match_rate (share
      of matches among ranks 1..k), n_targets.
    """
    order = top_influential(scores, top_k, exclude_self)
    matches = np.asarray(train_labels)[order] == np.asarray(target_labels)[:, None]
    at_k = matches.mean(axis=0)
    ks = np.arange(1, order.shape[1] + 1)
    return pd.DataFrame({"k": ks, "match_rate": at_k,
                         "cumulative_match_rate": np.cumsum(at_k) / ks,
                         "n_targets": len(order)})


def chance_match_rate(train_labels, target_labels) -> float:
    """Expected match rate of a random ranking: sum over classes of the two shares."""
    train_labels, target_labels = np.asarray(train_labels), np.asarray(target_labels)
    classes = np.union1d(train_labels, target_labels)
    return float(sum(np.mean(train_labels == c) * np.mean(target_labels == c) for c in classes))


# ----------------------------------------------------------------------------- fine-tuned runs


@dataclass(frozen=True)
class RunData:
    """Everything the influence analysis needs from one fine-tuned run.

    Attributes:
      name: the run's label in file names, tables and figures.
      run_dir: where the run lives.
      class_names: the target's class names.
      head: the trained head and its training objective.
      hessian_features: head inputs of the run's whole training subset (H averages
        over all of them: that is the objective the head minimized).
      train_labels: labels of that subset, in the same order.
      n_train: N, how many of them (a prefix) have their influence measured.
      test_features, test_labels: the M test images.
      train_indices, test_indices: where those images are in the target's splits.
      target: the ``data.TargetData`` (to draw the images).
      image_size: the model's input side.
      notes: caveats about the run (augmentation, unfinished training...).
    """

    name: str
    run_dir: str
    class_names: tuple
    head: Head
    hessian_features: np.ndarray
    train_labels: np.ndarray
    n_train: int
    test_features: np.ndarray
    test_labels: np.ndarray
    train_indices: np.ndarray
    test_indices: np.ndarray
    target: object
    image_size: int
    notes: tuple = ()


def head_of(model) -> Head:
    """The ``fc`` Dense layer of a fine-tuned model as a ``Head`` (objective not set)."""
    import keras

    try:
        layer = model.get_layer(HEAD_NAME)
    except ValueError:
        raise UserError(f"The model {model.name!r} has no layer named {HEAD_NAME!r}; influence "
                        f"needs a model fine-tuned by `transfer`.") from None
    linear = layer.get_config().get("activation") in ("linear", None)
    if not isinstance(layer, keras.layers.Dense) or not layer.use_bias or not linear:
        raise UserError(f"The {HEAD_NAME!r} layer of {model.name!r} is not a linear Dense layer "
                        f"with a bias; influence assumes a softmax-regression head.")
    kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
    return Head(kernel=kernel, bias=bias)


def head_features(model, dataset) -> np.ndarray:
    """The head's input features of every image in ``dataset`` (``training=False``)."""
    import keras

    trunk = keras.Model(model.inputs, model.get_layer(HEAD_NAME).input)
    run = tf.function(lambda x: tf.cast(trunk(x, training=False), tf.float32))
    return np.concatenate([run(images).numpy() for images, _ in dataset]).astype(np.float64)


def check_head_matches_model(model, head: Head, images, features) -> float:
    """Max |model logits - head(features)| on ``images``: a mismatch means the model is
    not trunk -> fc -> output, and every score would be silently wrong."""
    logits = tf.cast(model(images, training=False), tf.float64).numpy()
    difference = float(np.max(np.abs(logits - with_bias_column(features) @ head.theta)))
    if difference > 1e-3 * max(1.0, float(np.max(np.abs(logits)))):
        raise UserError(f"The model's logits differ from its {HEAD_NAME!r} layer applied to its "
                        f"input by {difference:.3g}: {HEAD_NAME!r} must be the output layer.")
    return difference


def load_run(run_dir, train_images: int | None, test_images: int, data_dir=None,
             download: bool = True, name: str | None = None) -> RunData:
    """Loads a ``transfer`` run, its head, and the head features of its images.

    Args:
      run_dir: a run directory written by ``python main.py transfer``.
      train_images: N, how many of the run's training images (a prefix of its seeded
        subset) to measure; None: all of them.
      test_images: M, a fixed stratified subset (seed 0) of the test split.
      data_dir: TFDS data directory (default: the one the run used).
      download: let TFDS download a missing dataset.
      name: the run's label (default: the directory name).

    Returns:
      A ``RunData``.
    """
    from tftransfer import data, saving

    config = saving.read_config(run_dir)
    resolved = config.get("resolved_config")
    if config.get("kind") != "transfer" or not isinstance(resolved, dict):
        raise UserError(f"{str(run_dir)!r} is not a fine-tuned run directory (its config.json "
                        f"lacks kind 'transfer' and resolved_config); pass the --out of "
                        f"`python main.py transfer`.")
    settings, seed = resolved["data"], resolved.get("seed", 0)
    target = data.load(resolved["target"], data_dir or settings.get("data_dir"), download,
                       settings.get("test_fraction", 0.2))
    run_indices = data.select_subset(target.train.labels, settings.get("train_images"), seed)
    n_train = len(run_indices) if train_images is None else train_images
    if not 1 <= n_train <= len(run_indices):
        raise UserError(f"--train-images {train_images} must be between 1 and the "
                        f"{len(run_indices)} training images of {str(run_dir)!r}.")
    if test_images < 1:
        raise UserError(f"--test-images must be at least 1, got {test_images}.")
    # The prefix of the nested seed-0 order: the same images `transfer --test-images` uses.
    test_indices = data.select_subset(target.test.labels, None, 0)[:test_images]
    model = saving.load_model(run_dir)
    image_size = int(config.get("image_size") or model.inputs[0].shape[1])
    head = _with_objective(head_of(model), resolved)
    label = name or Path(run_dir).name
    print(f"influence: {label}: head features of {len(run_indices)} training and "
          f"{len(test_indices)} test images ...", file=sys.stderr)
    train_ds = data.pipeline(target.train, run_indices, image_size, 256, cache=False)
    hessian_features = head_features(model, train_ds)
    first_images = next(iter(train_ds))[0][:32]
    check_head_matches_model(model, head, first_images, hessian_features[:len(first_images)])
    test_features = head_features(
        model, data.pipeline(target.test, test_indices, image_size, 256, cache=False))
    return RunData(name=label, run_dir=str(run_dir),
                   class_names=tuple(config.get("class_names") or target.class_names),
                   head=head, hessian_features=hessian_features,
                   train_labels=target.train.labels[run_indices], n_train=n_train,
                   test_features=test_features, test_labels=target.test.labels[test_indices],
                   train_indices=run_indices[:n_train], test_indices=test_indices,
                   target=target, image_size=image_size, notes=_caveats(resolved, n_train,
                                                                        len(run_indices)))


def _with_objective(head: Head, resolved: dict) -> Head:
    optim = resolved.get("optim", {})
    # The recipe adds weight_decay / 2 * ||w||^2 over every trainable variable, the head included.
    return Head(kernel=head.kernel, bias=head.bias, l2=float(optim.get("weight_decay", 0.0)),
                label_smoothing=float(optim.get("label_smoothing", 0.0)))


def _caveats(resolved: dict, n_train: int, n_run: int) -> tuple:
    notes = []
    if resolved.get("data", {}).get("augment"):
        notes.append("the run trained on augmented images; influence uses the un-augmented ones")
    if n_train < n_run:
        notes.append(f"influence of the first {n_train} of {n_run} training images; H averages "
                     f"over all {n_run}")
    return tuple(notes)


# ----------------------------------------------------------------------------- the analysis

@dataclass(frozen=True)
class RunAnalysis:
    """Influence scores and match rates of one run."""

    run: RunData
    influence: Influence
    rates: pd.DataFrame        # model, targets (test|train), k, match_rate, ...
    summary: dict


def analyze_run(run: RunData, top_k: int = 100, damping: float = 0.01, method: str = "auto",
                rank: str = "helpful") -> RunAnalysis:
    """Influence matrices and the Figure-6 match rates of one loaded run."""
    train_x, train_y = run.hessian_features[:run.n_train], run.train_labels[:run.n_train]
    influence = compute_influence(run.head, run.hessian_features, train_x, train_y,
                                  run.test_features, run.test_labels, damping, method)
    frames = []
    for targets, matrix, labels, exclude in (
            ("test", influence.on_test, run.test_labels, False),
            ("train", influence.on_train, train_y, True)):
        if exclude and run.n_train < 2:
            continue  # one training image has no other image to be influenced by
        frame = match_rates(ranking_scores(matrix, rank), train_y, labels, top_k, exclude)
        frames.append(frame.assign(model=run.name, targets=targets,
                                   chance=chance_match_rate(train_y, labels)))
    rates = pd.concat(frames, ignore_index=True)[
        ["model", "targets", "k", "match_rate", "cumulative_match_rate", "n_targets", "chance"]]
    stationarity = float(np.linalg.norm(
        objective_gradient(run.head, run.hessian_features, run.train_labels)))
    notes = list(run.notes)
    if stationarity > _STATIONARY_NORM:
        # Koh & Liang's derivation assumes theta minimizes the objective; SGD stops short.
        notes.append(f"the head is not at the minimum of its training objective (gradient "
                     f"norm {stationarity:.2g}): the scores are a local approximation")
    summary = {
        "model": run.name, "run_dir": run.run_dir, "target": run.target.name,
        "l2": run.head.l2, "damping": damping, **influence.info,
        "hessian_images": len(run.hessian_features),
        "train_images": run.n_train, "test_images": len(run.test_labels),
        "objective_gradient_norm": stationarity,
        "test_accuracy_head": float(np.mean(np.argmax(
            with_bias_column(run.test_features) @ run.head.theta, 1) == run.test_labels)),
        "notes": notes}
    for targets in ("test", "train"):
        part = rates[rates["targets"] == targets]
        if len(part):
            summary[f"match_rate_{targets}_k1"] = float(part["match_rate"].iloc[0])
            summary[f"match_rate_{targets}_top10"] = float(
                part["cumulative_match_rate"].iloc[min(10, len(part)) - 1])
    return RunAnalysis(run=run, influence=influence, rates=rates, summary=summary)


def analyze(run_dirs, out_dir, train_images: int | None = None, test_images: int = 100,
            top_k: int = 100, damping: float = 0.01, method: str = "auto",
            rank: str = "helpful", data_dir=None, download: bool = True, names=None,
            grid_rows: int = 4, save_matrices: bool = True) -> dict:
    """The ``influence`` command: scores, match rates and figures for several runs.

    Writes ``influence_<model>.npy`` (M x N, I_up,loss), ``match_rates.csv``,
    ``match_rates.png``, ``most_influential.png`` and ``summary.json`` into ``out_dir``.

    Returns:
      ``{"out", "files", "models": [per-run summaries]}``.
    """
    from tftransfer import runs

    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}.")
    names = _unique_names(run_dirs, names)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    analyses, files = [], []
    for run_dir, name in zip(run_dirs, names):
        run = load_run(run_dir, train_images, test_images, data_dir, download, name)
        analysis = analyze_run(run, top_k, damping, method, rank)
        summary = analysis.summary
        how = "exact Hessian" if summary["method"] == "exact" else "Hessian-vector products + CG"
        print(f"influence: {name}: {how}, {summary['solved_params']} rows "
              f"(head: {summary['head_params']} parameters); match rate at k=1: test images "
              f"{summary['match_rate_test_k1']:.3f}", file=sys.stderr)
        if save_matrices:
            path = out_dir / f"influence_{name}.npy"
            np.save(path, analysis.influence.on_test)
            files.append(path)
        analyses.append(analysis)
    rates = pd.concat([a.rates for a in analyses], ignore_index=True)
    runs.write_text_atomic(out_dir / "match_rates.csv", rates.to_csv(index=False))
    files.append(out_dir / "match_rates.csv")
    files.append(_save(plot_match_rates(rates, rank), out_dir / "match_rates.png"))
    files.append(_save(plot_most_influential(analyses, grid_rows, rank),
                       out_dir / "most_influential.png"))
    summaries = [dict(a.summary, rank=rank) for a in analyses]
    runs.write_json(out_dir / "summary.json", {"sign_convention": SIGN_CONVENTION,
                                               "models": summaries})
    files.append(out_dir / "summary.json")
    return {"out": str(out_dir), "files": [str(f) for f in files], "models": summaries}


SIGN_CONVENTION = ("influence_<model>.npy holds I = -grad L(test)^T H^-1 grad L(train) "
                   "(Koh & Liang's I_up,loss), rows = test images, columns = training images; "
                   "I < 0 means helpful (removing the image raises the test loss by about -I/n). "
                   "'Most influential' = most helpful = largest -I (--rank absolute: largest |I|).")


def _unique_names(run_dirs, names) -> list[str]:
    if names is not None and len(names) != len(run_dirs):
        raise UserError(f"--names has {len(names)} entries for {len(run_dirs)} --model runs.")
    raw = names or [Path(str(d).rstrip("/")).name or "model" for d in run_dirs]
    slugs, seen = [], {}
    for name in raw:
        slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "model"
        seen[slug] = seen.get(slug, 0) + 1
        slugs.append(slug if seen[slug] == 1 else f"{slug}_{seen[slug]}")
    return slugs


# ----------------------------------------------------------------------------- figures

_COLORS = ("tab:blue", "tab:red", "tab:green", "tab:orange", "tab:purple", "tab:brown")


def _save(figure, path) -> Path:
    from tftransfer.plots import save_figure

    return save_figure(figure, path)


def plot_match_rates(rates: pd.DataFrame, rank: str = "helpful"):
    """The paper's Figure 6: label match rate of the k-th most influential training image,
    one panel for test images as targets and one for training images, one line per model."""
    from matplotlib.figure import Figure

    panels = [t for t in ("test", "train") if (rates["targets"] == t).any()]
    figure = Figure(figsize=(5.2 * len(panels) + 0.6, 4.2))
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    models = list(dict.fromkeys(rates["model"]))
    for ax, targets in zip(axes, panels):
        part = rates[rates["targets"] == targets]
        for i, model in enumerate(models):
            line = part[part["model"] == model]
            color = _COLORS[i % len(_COLORS)]
            ax.plot(line["k"], 100 * line["match_rate"], color=color, linewidth=1.4,
                    marker="o" if len(line) <= 20 else None, markersize=3, label=model)
            ax.axhline(100 * line["chance"].iloc[0], color=color, linestyle=":", linewidth=1)
        ax.set_title(f"{targets} images as targets"
                     + (" (self excluded)" if targets == "train" else ""), fontsize="medium")
        ax.set_xlabel(f"k (k-th most {'helpful' if rank == 'helpful' else 'influential (|I|)'} "
                      f"training image)")
        ax.set_ylim(0, 102)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("Same label as the target (%)")
    axes[0].legend(fontsize="small", title="dotted: chance", title_fontsize="small")
    figure.suptitle("Label match rate of the k-th most influential training image")
    figure.tight_layout()
    return figure


def plot_most_influential(analyses, rows: int = 4, rank: str = "helpful", top: int = 5):
    """The paper's Figure 5: per model, a few test images and their ``top`` most influential
    training images with labels; frames are green when the label matches, red when not."""
    from matplotlib.figure import Figure

    rows = max(1, min(rows, min(len(a.run.test_labels) for a in analyses)))
    cell, header = 1.25, 0.8   # inches: one image, the two title lines above the grids
    width = len(analyses) * (top + 1) * cell + 0.4 * (len(analyses) - 1)
    height = rows * (cell + 0.35) + header
    figure = Figure(figsize=(width, height))
    subfigures = np.atleast_1d(figure.subfigures(1, len(analyses), wspace=0.04))
    for sub, analysis in zip(subfigures, analyses):
        _draw_influence_block(sub, analysis, rows, rank, top, 1.0 - header / height)
    figure.suptitle(f"Most {'helpful' if rank == 'helpful' else 'influential (|I|)'} training "
                    f"images for test images (green frame: same label)", fontsize="medium",
                    y=1.0 - 0.08 / height, va="top")
    return figure


def _draw_influence_block(sub, analysis: RunAnalysis, rows: int, rank: str, top: int,
                          grid_top: float) -> None:
    from tftransfer import data

    run = analysis.run
    order = top_influential(ranking_scores(analysis.influence.on_test[:rows], rank), top)
    test_images, _ = data.subset_arrays(run.target.test, run.test_indices[:rows],
                                        run.image_size, batch_size=64)
    train_images, _ = data.subset_arrays(run.target.train, run.train_indices[np.unique(order)],
                                         run.image_size, batch_size=64)
    lookup = {int(j): image for j, image in zip(np.unique(order), train_images)}
    axes = sub.subplots(rows, order.shape[1] + 1, squeeze=False)
    names = run.class_names
    for i in range(rows):
        truth = int(run.test_labels[i])
        _show(axes[i, 0], test_images[i], f"test: {names[truth]}", "black")
        for j, index in enumerate(order[i]):
            label = int(run.train_labels[index])
            color = "tab:green" if label == truth else "tab:red"
            _show(axes[i, j + 1], lookup[int(index)], f"#{j + 1}: {names[label]}", color)
    accuracy = analysis.summary["test_accuracy_head"]
    sub.suptitle(f"{run.name} (test accuracy {accuracy:.0%} on the {len(run.test_labels)} "
                 f"test images)", fontsize="medium", fontweight="bold",
                 y=grid_top + 0.45 * (1.0 - grid_top), va="center")
    sub.subplots_adjust(left=0.02, right=0.98, top=grid_top - 0.02, bottom=0.01, wspace=0.12,
                        hspace=0.45)


def _show(ax, image, title: str, frame_color: str) -> None:
    ax.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8, color=frame_color if frame_color != "black" else "black")
    for spine in ax.spines.values():
        spine.set_edgecolor(frame_color)
        spine.set_linewidth(2.5 if frame_color != "black" else 1.0)
