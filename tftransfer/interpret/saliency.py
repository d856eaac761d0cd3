"""Saliency maps: gradients of the loss w.r.t. the input pixels, side by side per model.

Robust networks have input gradients that look like the object (Tsipras et al., 2019);
the paper (Utrera et al., Section 5) uses this to explain why their features transfer
better. For each model, the gradient of the cross-entropy of the true label (float32
logits, ``training=False``) w.r.t. the [0, 1] RGB input is computed for a whole batch in
one call (images are independent in inference mode, so the gradient of the summed
loss is every image's own gradient). SmoothGrad (Smilkov et al., 2017) averages the
gradients of ``samples`` noisy copies, noise std ``noise`` in [0, 1] pixel units; the
noisy copies are not clipped to [0, 1], as in the original method.

A model trained on other classes than the dataset's (a CIFAR-10 source shown on
MNIST digits) has no "true label": its own predicted class is used instead, and the
column title says so.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from tftransfer.config import SALIENCY_RENDERINGS as RENDERINGS
from tftransfer.config import SaliencyConfig, recorded_load_options
from tftransfer.errors import UserError

_PERCENTILE = 99.0


# ----------------------------------------------------------------------------- gradients

def loss_gradients(model, images: np.ndarray, labels: np.ndarray,
                   batch_size: int = 64) -> np.ndarray:
    """Vanilla gradients of each image's cross-entropy w.r.t. its pixels.

    Args:
      model: a Keras classifier on [0, 1] RGB images (logits out).
      images: float32 [n, h, w, 3] at the model's input size.
      labels: int [n], the class whose loss is differentiated.
      batch_size: images per gradient call.

    Returns:
      float32 [n, h, w, 3].
    """
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32)
    parts = [_batch_gradient(model, images[s:s + batch_size], labels[s:s + batch_size])
             for s in range(0, len(images), batch_size)]
    return np.concatenate(parts) if parts else np.zeros_like(images)


def smoothgrad(model, images: np.ndarray, labels: np.ndarray, samples: int = 25,
               noise: float = 0.1, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """SmoothGrad: the mean vanilla gradient over ``samples`` Gaussian-noised copies.

    The noisy copies of all images are stacked and differentiated ``batch_size`` at a
    time, so the cost is ``n * samples / batch_size`` gradient calls.

    Args:
      model, images, labels, batch_size: as in ``loss_gradients``.
      samples: noisy copies per image.
      noise: standard deviation of the noise in [0, 1] pixel units.
      seed: seed of the noise.

    Returns:
      float32 [n, h, w, 3].
    """
    if samples < 1:
        raise UserError(f"--samples must be at least 1, got {samples}.")
    if noise < 0:
        raise UserError(f"--noise must be >= 0, got {noise}.")
    images = np.asarray(images, np.float32)
    # Copy s of image i sits at row s * n + i, so chunks mix images and samples freely.
    copies = np.tile(images, (samples, 1, 1, 1))
    copy_labels = np.tile(np.asarray(labels, np.int32), samples)
    rng = np.random.default_rng(seed)
    total = np.zeros((samples * len(images),) + images.shape[1:], np.float32)
    for start in range(0, len(copies), batch_size):
        chunk = copies[start:start + batch_size]
        noisy = chunk + rng.normal(0.0, noise, chunk.shape).astype(np.float32)
        total[start:start + batch_size] = _batch_gradient(model, noisy,
                                                          copy_labels[start:start + batch_size])
    return total.reshape((samples,) + images.shape).mean(axis=0)


def _batch_gradient(model, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    x = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = tf.cast(model(x, training=False), tf.float32)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    gradient = tape.gradient(loss, x)
    if gradient is None:  # the output does not depend on the input at all
        return np.zeros_like(images)
    return gradient.numpy()


def predictions(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The model's predicted classes."""
    logits = [model(images[s:s + batch_size], training=False).numpy()
              for s in range(0, len(images), batch_size)]
    return np.argmax(np.concatenate(logits), axis=1).astype(np.int32)


# ----------------------------------------------------------------------------- rendering

def render(gradients: np.ndarray, mode: str = "abs") -> np.ndarray:
    """Gradients as displayable maps, each image normalized on its own.

    ``abs``: |gradient| summed over channels, divided by its 99th percentile and clipped
    to [0, 1] ([n, h, w]). ``image``: the gradient itself as an RGB image, scaled by the
    99th percentile of |gradient|, clipped to [-1, 1] and mapped to [0, 1] (grey = 0),
    the visualization of Tsipras et al. ([n, h, w, 3]).
    """
    gradients = np.asarray(gradients, np.float64)
    if mode == "abs":
        maps = np.abs(gradients).sum(axis=-1)
        scale = _percentile_per_image(maps)
        return np.clip(maps / scale[:, None, None], 0.0, 1.0)
    if mode == "image":
        scale = _percentile_per_image(np.abs(gradients))
        scaled = np.clip(gradients / scale[:, None, None, None], -1.0, 1.0)
        return 0.5 + 0.5 * scaled
    raise UserError(f"Unknown rendering {mode!r}; use one of {', '.join(RENDERINGS)}.")


def _percentile_per_image(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(len(values), -1)
    scale = np.percentile(flat, _PERCENTILE, axis=1)
    # A zero gradient (or one supported on <1% of the pixels) still needs a scale.
    fallback = flat.max(axis=1)
    scale = np.where(scale > 0, scale, fallback)
    return np.where(scale > 0, scale, 1.0)


# ----------------------------------------------------------------------------- models

@dataclass(frozen=True)
class ModelColumn:
    """One model's column in the figure."""

    title: str
    gradients: np.ndarray          # [n, h, w, 3] at the model's input size
    labels: np.ndarray             # the classes whose loss was differentiated
    uses_predictions: bool
    label_names: tuple = field(default=())


def model_title(reference: str, config: dict) -> str:
    """A short column title: the directory name and how the model was trained."""
    name = Path(str(reference).rstrip("/")).name or str(reference)
    attack = config.get("attack")
    if isinstance(attack, dict):  # a pretrain run
        kind, eps = attack.get("attack", attack.get("kind")), attack.get("eps")
    else:  # a transfer run records its source's training
        kind, eps = config.get("source_attack"), config.get("source_eps")
    if not kind:
        return name
    if kind == "none":
        return f"{name}\n(natural)"
    return f"{name}\n({kind} eps {eps:g})" if isinstance(eps, (int, float)) else f"{name}\n({kind})"


def labels_match(config: dict, num_outputs: int, dataset_classes: tuple) -> bool:
    """Whether the model's classes are the dataset's: by class names when the model's
    config has them, else by the number of outputs."""
    names = config.get("class_names")
    if names:
        return tuple(names) == tuple(dataset_classes)
    return num_outputs == len(dataset_classes)


def model_input_size(model, fallback: int) -> int:
    """The square side the model takes (``fallback`` for a size-agnostic model)."""
    shape = model.inputs[0].shape
    if shape[1] is None:
        return fallback
    if shape[1] != shape[2] or shape[-1] != 3:
        raise UserError(f"Expected a model taking square RGB images, got input shape "
                        f"{tuple(shape)}.")
    return int(shape[1])


def column_for(model, config: dict, title: str, images: np.ndarray, true_labels: np.ndarray,
               dataset_classes: tuple, smooth: bool, samples: int, noise: float,
               seed: int) -> ModelColumn:
    """Gradients of one model for ``images`` (already at its input size)."""
    num_outputs = int(model.outputs[0].shape[-1])
    matched = labels_match(config, num_outputs, dataset_classes)
    labels = true_labels if matched else predictions(model, images)
    if smooth:
        gradients = smoothgrad(model, images, labels, samples, noise, seed)
    else:
        gradients = loss_gradients(model, images, labels)
    names = tuple(config.get("class_names") or ()) if not matched else tuple(dataset_classes)
    return ModelColumn(title=title + ("" if matched else "\n(loss of predicted class)"),
                       gradients=gradients, labels=labels, uses_predictions=not matched,
                       label_names=names)


# ----------------------------------------------------------------------------- figure

def saliency_figure(images: np.ndarray, image_titles, columns, mode: str = "abs",
                    method: str = "gradient", dataset: str = ""):
    """Rows = images; the image (with its class), then one column per model.

    Args:
      images: [n, h, w, 3] in [0, 1] for the first column.
      image_titles: one caption per image (its class name).
      columns: ``ModelColumn`` per model.
      mode: see ``render``.
      method: "gradient" or "SmoothGrad (...)", for the figure title.
      dataset: the dataset's name, for the figure title.

    Returns:
      A ``matplotlib.figure.Figure`` (no pyplot).
    """
    from matplotlib.figure import Figure

    rows, cols = len(images), 1 + len(columns)
    cell = 1.55
    # At least 5.6 inches wide so that the two-line figure title is never cut off.
    figure = Figure(figsize=(max(5.6, cols * cell + 0.3), rows * (cell + 0.1) + 1.3))
    axes = figure.subplots(rows, cols, squeeze=False)
    maps = [render(column.gradients, mode) for column in columns]
    for i in range(rows):
        _cell(axes[i, 0], np.clip(images[i], 0, 1), None)
        axes[i, 0].set_ylabel(image_titles[i], fontsize=9)
        for j, (column, rendered) in enumerate(zip(columns, maps)):
            caption = None
            if column.uses_predictions:
                label = int(column.labels[i])
                name = column.label_names[label] if label < len(column.label_names) else label
                caption = f"pred.: {name}"
            _cell(axes[i, j + 1], rendered[i], caption, gray=mode == "abs")
    axes[0, 0].set_title("image", fontsize=9)
    for j, column in enumerate(columns):
        axes[0, j + 1].set_title(_wrap(column.title), fontsize=9)
    what = "|gradient| summed over channels" if mode == "abs" else "gradient as an image"
    figure.suptitle(f"{method} of the loss w.r.t. the input"
                    f"{' on ' + dataset if dataset else ''}\n({what}, per-image "
                    f"{_PERCENTILE:g}th-percentile scaling)", fontsize=10)
    figure.tight_layout()
    return figure


def _wrap(title: str, width: int = 20) -> str:
    """Breaks long column titles (a column is ~20 characters wide) at word boundaries."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in title.splitlines())


def _cell(ax, picture, caption, gray: bool = False) -> None:
    ax.imshow(picture, cmap="gray" if gray else None, vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if caption:
        ax.set_xlabel(caption, fontsize=8)


# ----------------------------------------------------------------------------- the command

def shared_load_options(configs, dataset: str) -> dict:
    """The ``data.load`` options every model's run recorded alike (``recorded_load_options``):
    all models see the same images, so an option they disagree on keeps ``data.load``'s
    default."""
    recorded = [recorded_load_options(config, dataset) for config in configs]
    first, rest = recorded[0], recorded[1:]
    return {key: value for key, value in first.items()
            if all(key in other and other[key] == value for other in rest)}


def run_saliency(cfg: SaliencyConfig) -> dict:
    """The ``saliency`` command: a figure of every model's input gradients.

    Args:
      cfg: the models, the images and how their gradients are computed and drawn.

    Returns:
      The result row: output files, per-model label mode and mean |gradient|.
    """
    from tftransfer import data
    from tftransfer.sources import hub
    from tftransfer.report.plot_parts import save_figure

    model_refs, titles, mode, smooth = cfg.models, cfg.labels, cfg.render, cfg.smoothgrad
    samples, noise = cfg.samples, cfg.noise
    configs = [hub.read_config(ref) for ref in model_refs]
    target = data.load(cfg.dataset, cfg.data_dir, cfg.download,
                       **shared_load_options(configs, cfg.dataset))
    # The nested seed-0 order's prefix: stratified, and stable when K grows.
    indices = data.select_subset(target.test.labels, None, 0)[:cfg.images]
    true_labels = target.test.labels[indices]
    models = [(ref, hub.load_model(ref), config) for ref, config in zip(model_refs, configs)]
    sizes = {ref: model_input_size(model, 224) for ref, model, _ in models}
    shown_size = max(sizes.values())
    images = {size: data.subset_arrays(target.test, indices, size)[0]
              for size in set(sizes.values())}
    method = f"SmoothGrad ({samples} samples, noise {noise:g})" if smooth else "Gradient"
    columns = []
    for k, (ref, model, config) in enumerate(models):
        title = titles[k] if titles else model_title(ref, config)
        print(f"saliency: {title.splitlines()[0]}: {method.lower()} of {len(indices)} images at "
              f"{sizes[ref]}px", file=sys.stderr)
        columns.append(column_for(model, config, title, images[sizes[ref]], true_labels,
                                  target.class_names, smooth, samples, noise, cfg.seed))
    shown = images.get(shown_size)
    captions = [target.class_names[int(y)] for y in true_labels]
    figure = saliency_figure(shown, captions, columns, mode, method, target.name)
    path = save_figure(figure, cfg.out)
    arrays = Path(path).with_suffix(".npz")
    np.savez_compressed(arrays, images=shown, labels=true_labels, indices=indices,
                        **{f"gradients_{k}": c.gradients for k, c in enumerate(columns)})
    return {"out": str(path), "arrays": str(arrays), "dataset": target.name,
            "images": len(indices), "method": "smoothgrad" if smooth else "gradient",
            "render": mode, "models": [
                {"model": str(ref), "title": c.title.replace("\n", " "),
                 "input_size": sizes[ref], "label": "predicted" if c.uses_predictions else "true",
                 "mean_abs_gradient": float(np.mean(np.abs(c.gradients)))}
                for (ref, _, _), c in zip(models, columns)]}
