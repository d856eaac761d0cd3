"""A torchvision-layout ResNet in plain ``torch.nn`` (no torchvision), and checkpoints of it.

The reference the converter is tested against, and a way to write a PyTorch checkpoint offline
(``results/photo/run.sh`` converts a random ResNet-50 written here): the module structure and
parameter names are torchvision's (``conv1``, ``layer1.0.bn1``, ``fc``), and ``save_checkpoint``
writes the robustness library's, robust-models-transfer's and plain torchvision's file layouts.
Needs the ``[torch]`` extra.

    python -m tftransfer.models.torch_resnet --arch resnet50 --classes 1000 --out resnet50.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

nn = torch.nn
# The robustness library's ImageNet normalisation (what its checkpoints carry).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class TorchResNet(nn.Module):
    def __init__(self, block, layers, num_classes, width=1.0):
        super().__init__()
        planes = [max(1, int(round(64 * width * 2 ** i))) for i in range(4)]
        self.inplanes = planes[0]
        self.conv1 = nn.Conv2d(3, planes[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, planes[0], layers[0], 1)
        self.layer2 = self._make_layer(block, planes[1], layers[1], 2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], 2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes[3] * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InputNormalize(nn.Module):
    """The robustness library's normalizer: buffers new_mean/new_std of shape (3, 1, 1)."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("new_mean", torch.tensor(mean)[:, None, None])
        self.register_buffer("new_std", torch.tensor(std)[:, None, None])


class Attacker(nn.Module):
    def __init__(self, model, mean, std):
        super().__init__()
        self.normalize = InputNormalize(mean, std)
        self.model = model


class AttackerModel(nn.Module):
    """The robustness library's wrapper, whose state dict the checkpoints hold."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.normalizer = InputNormalize(mean, std)
        self.model = model
        self.attacker = Attacker(model, mean, std)


def make_torch_resnet(arch, num_classes, width, seed):
    """A random ResNet in eval mode with non-trivial BatchNorm statistics.

    The running statistics are measured on random normalized images and then
    perturbed: like a trained network's, they keep activations near unit scale,
    so the logits depend on the input (arbitrary statistics make them either
    explode or collapse onto the BatchNorm biases, and a test would compare little).
    """
    torch.manual_seed(seed)
    block, layers = {"resnet18": (BasicBlock, (2, 2, 2, 2)),
                     "resnet50": (Bottleneck, (3, 4, 6, 3))}[arch]
    model = TorchResNet(block, layers, num_classes, width)
    batch_norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in batch_norms:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.1)
            bn.momentum = None  # running stats = the calibration batch's exact statistics
        model.train()
        model((torch.rand(8, 3, 64, 64) - 0.45) / 0.25)
        for bn in batch_norms:
            bn.running_mean.add_(0.1 * bn.running_var.sqrt() * torch.randn_like(bn.running_mean))
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))
            bn.momentum = 0.1
        # Logits of order 1: float32 round-off grows with their scale (both frameworks are
        # ~1.5e-5 * scale away from a float64 run of ResNet-50), and the bound is absolute.
        model.fc.weight.mul_(0.25)
    return model.eval()


def save_checkpoint(model, fmt, directory, mean=IMAGENET_MEAN, std=IMAGENET_STD, entry="model"):
    """Saves ``model`` in one of convert.FORMATS; returns the file path."""
    directory = Path(directory)
    if fmt == "torchvision":
        path = directory / "plain.pth"
        torch.save(model.state_dict(), path)
        return path
    wrapped = nn.DataParallel(AttackerModel(model, mean, std))  # adds the "module." prefix
    path = directory / ("robust.ckpt" if fmt == "robust-models-transfer" else "robust.pt")
    torch.save({entry: wrapped.state_dict(), "optimizer": {}, "schedule": None, "epoch": 90},
               path)
    return path


def main(argv=None) -> None:
    """Writes a random (BatchNorm-calibrated) ResNet checkpoint: ``--out`` FILE."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=("resnet18", "resnet50"), default="resnet50",
                        help="architecture (default: resnet50)")
    parser.add_argument("--classes", type=int, default=1000, help="head size (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    parser.add_argument("--format", choices=("torchvision", "robustness",
                                             "robust-models-transfer"),
                        default="torchvision", help="file layout (default: torchvision)")
    parser.add_argument("--out", required=True, help="checkpoint file to write")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = save_checkpoint(make_torch_resnet(args.arch, args.classes, 1.0, args.seed),
                              args.format, out.parent)
    written.replace(out)
    print(out)


if __name__ == "__main__":
    main()
