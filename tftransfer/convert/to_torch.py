"""Keras -> PyTorch: a torch module computing a toolkit ResNet's logits, for running a PyTorch
reference (e.g. fra31/auto-attack) on the very same weights.

The inverse of ``weight_mapping``: the ``normalize`` layer's mean/std, conv kernels HWIO -> OIHW,
dense (in, out) -> (out, in), BatchNorm gamma/beta/moving statistics with each layer's own
epsilon. PyTorch is imported only inside functions.
"""

from __future__ import annotations

import numpy as np


def torch_twin(keras_model):
    """A PyTorch module computing ``keras_model``'s logits on NCHW [0, 1] images.

    Supports the toolkit's torchvision-layout ResNets with basic blocks (resnet20/18/34):
    ``normalize``, ``conv1``/``bn1`` stem (3x3 stride 1 for CIFAR-style models, 7x7 stride 2
    plus max-pool otherwise), ``layerS.B`` blocks with ``downsample.0/1`` shortcuts, global
    average pooling and ``fc``. The weights are those of ``tftransfer.convert.weight_mapping``
    read backwards, and every BatchNorm gets its Keras layer's epsilon.
    """
    import torch
    from tftransfer.convert.weight_mapping import _keras_targets
    from tftransfer.models.torch_resnet import BasicBlock

    nn = torch.nn
    layers = {layer.name: layer for layer in keras_model.layers}
    stem = layers["conv1"]
    small = tuple(stem.kernel_size) == (3, 3)
    stages = sorted({int(name.split(".")[0][5:]) for name in layers
                     if name.startswith("layer") and name.endswith(".conv1")})

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            normalize = layers["normalize"]
            self.register_buffer("mean", torch.tensor(np.asarray(normalize.mean),
                                                      dtype=torch.float32)[:, None, None])
            self.register_buffer("std", torch.tensor(np.asarray(normalize.std),
                                                     dtype=torch.float32)[:, None, None])
            planes = stem.filters
            self.conv1 = nn.Conv2d(3, planes, 3 if small else 7, 1 if small else 2,
                                   1 if small else 3, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU()
            self.maxpool = nn.Identity() if small else nn.MaxPool2d(3, 2, 1)
            inplanes = planes
            for stage in stages:
                count = len({name.split(".")[1] for name in layers
                             if name.startswith(f"layer{stage}.") and name.endswith(".conv1")})
                out = layers[f"layer{stage}.0.conv1"].filters
                stride = layers[f"layer{stage}.0.conv1"].strides[0]
                blocks = []
                for index in range(count):
                    downsample = None
                    if index == 0 and f"layer{stage}.0.downsample.0" in layers:
                        downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False),
                                                   nn.BatchNorm2d(out))
                    blocks.append(BasicBlock(inplanes, out, stride if index == 0 else 1,
                                             downsample))
                    inplanes = out
                setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            self.fc = nn.Linear(inplanes, layers["fc"].units)

        def forward(self, x):
            x = (x - self.mean) / self.std
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for stage in stages:
                x = getattr(self, f"layer{stage}")(x)
            return self.fc(torch.flatten(x.mean((2, 3)), 1))

    twin = Twin()
    state = twin.state_dict()
    targets = _keras_targets(keras_model)
    missing = sorted(set(state) - set(targets) - {"mean", "std"}
                     - {key for key in state if key.endswith("num_batches_tracked")})
    unused = sorted(set(targets) - set(state))
    if missing or unused:
        raise ValueError(f"torch twin and Keras model differ: torch-only {missing[:3]}, "
                         f"Keras-only {unused[:3]}")
    with torch.no_grad():
        for key, (variable, axes) in targets.items():
            value = np.asarray(variable.numpy())
            if axes is not None:  # the inverse of the torch -> Keras transpose
                value = np.transpose(value, np.argsort(axes))
            state[key].copy_(torch.from_numpy(np.ascontiguousarray(value, np.float32)))
    for name, module in twin.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = float(layers[name].epsilon)
    return twin.eval()


def logit_gap(keras_model, twin, x) -> float:
    """max |Keras logits - torch logits| on NHWC images ``x``."""
    import torch

    keras_logits = np.asarray(keras_model(x, training=False), np.float32)
    with torch.no_grad():
        torch_logits = twin(torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy())).numpy()
    return float(np.abs(keras_logits - torch_logits).max())
