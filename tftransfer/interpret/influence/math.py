"""Influence functions (Koh & Liang, 2017) on the head of a fine-tuned network: the math.

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

import sys
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tftransfer.config import INFLUENCE_METHODS as METHODS
from tftransfer.errors import UserError

EXACT_MAX_PARAMS = 5000
# Elements of the [vectors, examples, classes] logits tensor per HVP chunk (~80 MB float64).
_HVP_CHUNK_ELEMENTS = 10_000_000



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
