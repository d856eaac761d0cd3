"""Image-classification data -> ``tf.data``: TFDS datasets by name, or a folder of images.

Every pipeline yields ``(images, labels)`` with images float32 RGB in [0, 1] at the
requested size (grayscale repeated to 3 channels, variable sizes resized) and
integer labels. The paper's variable "number of training images" is
``select_subset``: N images in total, stratified, seeded, and nested (the subset
for N is a prefix of the one for 2N with the same seed).

One module per step, re-exported here so that callers write ``data.load``, ``data.pipeline``:
``loading`` (name or path -> ``TargetData``) over ``tfds_loader`` (with ``catalog``: other
projects' dataset names, ``tfds_schema``: which keys and splits, ``download_errors``: why a
download failed, ``download_guard``: the host probe before it and the cleanup after it) and
``folders`` (with ``hygiene``: files that do not look like photos of the task);
``image_sizes`` (the sizes of a sample of a target's images, spread over its classes); ``sets``
(the containers); ``subsets`` (which examples); ``normalization`` (the paper's constants);
``preprocess`` and ``augmentation`` (one image); ``pipelines`` (batched ``tf.data``).
"""

from tftransfer.data.augmentation import (AUGMENT_POLICIES, augment, augment_example,
                                          imagenet_augment, paper_augment,
                                          random_resized_crop, rotate, stateless_augment)
from tftransfer.data.catalog import TRANSFER_DATASETS
from tftransfer.data.folders import IMAGE_EXTENSIONS, load_folder
from tftransfer.data.loading import load
from tftransfer.data.normalization import TARGET_STATISTICS, target_statistics
from tftransfer.data.pipelines import (MAX_ORDER_POSITIONS, epoch_batches, epoch_order,
                                       pipeline, subset_arrays, training_pipeline)
from tftransfer.data.preprocess import RESIZE_MODES, Preprocessing, center_crop, to_model_input
from tftransfer.data.sets import ImageSet, TargetData, array_reader
from tftransfer.data.subsets import (nested_order, random_subset, select_subset,
                                     split_validation, stratified_holdout)
from tftransfer.data.tfds_loader import (NO_FLIP_DATASETS, default_data_dir, load_tfds,
                                         prepared_datasets)

__all__ = [
    "AUGMENT_POLICIES", "RESIZE_MODES", "TRANSFER_DATASETS", "Preprocessing", "augment_example",
    "center_crop", "imagenet_augment", "random_resized_crop",
    "IMAGE_EXTENSIONS", "NO_FLIP_DATASETS", "TARGET_STATISTICS", "ImageSet", "TargetData",
    "MAX_ORDER_POSITIONS", "array_reader", "augment", "default_data_dir", "epoch_batches",
    "epoch_order", "load", "load_folder",
    "load_tfds", "nested_order", "paper_augment", "pipeline", "prepared_datasets",
    "random_subset", "rotate", "select_subset", "split_validation", "stateless_augment",
    "stratified_holdout", "subset_arrays", "target_statistics", "to_model_input",
    "training_pipeline",
]
