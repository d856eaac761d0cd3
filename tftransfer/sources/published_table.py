"""The published ImageNet checkpoints: where each file is, its threat model, its reported
accuracy and what is known of its checksum (``REGISTRY``, name -> ``Source``). Data only;
``sources.published`` downloads, checks and converts them."""

from __future__ import annotations

from tftransfer.sources.registry import Source

IMAGE_SIZE = 224
_ROBUSTNESS_README = "https://github.com/MadryLab/robustness"
_SALMAN_README = "https://github.com/microsoft/robust-models-transfer"
_HF_MIRROR = "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main/"
_AZURE = "https://robustnessws4285631339.blob.core.windows.net/public-models/robust_imagenet/"
# The shared-access query the robust-models-transfer README publishes with each link.
_AZURE_QUERY = ("?sv=2020-08-04&ss=bfqt&srt=sco&sp=rwdlacupitfx&se=2051-10-06T07:09:59Z"
                "&st=2021-10-05T23:09:59Z&spr=https,http"
                "&sig=U69sEOSMlliobiw8OgiZpLTaYyOA5yt5pHHH5%2FKUYgI%3D")


# The sha256 of each file of https://huggingface.co/madrylab/robust-imagenet-models as its
# page shows it ("Git LFS Details - SHA256"), e.g. .../blob/3f04ac9/resnet50_l2_eps3.ckpt
# (commit 3f04ac96136001cfe402022100728124cbe3fac5; the files were uploaded in 19f056c and
# not changed since). Not found, so not recorded: resnet50_l2_eps0.25, resnet50_linf_eps1.0,
# resnet18_l2_eps0.03, resnet18_linf_eps8.0.
_HF_SHA256_SOURCE = ("https://huggingface.co/madrylab/robust-imagenet-models/blob/"
                     "3f04ac96136001cfe402022100728124cbe3fac5/")
_HF_SHA256 = {
    "resnet50_l2_eps0.ckpt": "72d4a99582db5d7fa86c3fd2a089f0bfd6a10f69d635bca51f6ad72ac6b458f0",
    "resnet50_l2_eps0.01.ckpt": "53d7a7c09d2733b113e255ac9fc578091f44adb8d00eee274c0e71dd1f4dc41e",
    "resnet50_l2_eps0.03.ckpt": "e375df3bf07bf1360c04b0aff5cc19bb215e850b1af713327c87cf0353a5598f",
    "resnet50_l2_eps0.05.ckpt": "e09d8763fcf825542f07389a1904adf15930451b8661a0de209c3bc39828c2ea",
    "resnet50_l2_eps0.1.ckpt": "3298f8cf689e514d096df883ab491a11ee32c3b8d456d674add29d7b50721a43",
    "resnet50_l2_eps0.5.ckpt": "a5fc6fcc54946b73af7bd74289b0003cc9d2744fa0ff55c1a3d9fb2bce8fbd30",
    "resnet50_l2_eps1.ckpt": "09f5273a568830ae23caf9162a06f4831a920293e0da1801aa182289052dcf90",
    "resnet50_l2_eps3.ckpt": "380b14e6f9750bffa1447cf7017f65da4dc5ce71a3dd112f107515dcf7b14d9d",
    "resnet50_l2_eps5.ckpt": "c50db4bbd9a61bc0e0a33290e1f07a79080e16489aa5ada869efc88306f497be",
    "resnet50_linf_eps0.5.ckpt": "9612d8096ef5378b4a32746072f72fedcb02c7ff4b747bc7163274f7ec2f0fd8",
    "resnet50_linf_eps2.0.ckpt": "59f28de783a049cb4d91ba1c0a09c314db2cc4bb1e859566e023f842b02772ac",
    "resnet50_linf_eps4.0.ckpt": "9e62216975c111b8081481533b6142dec34be69abe5d90b54d7f860015c263db",
    "resnet50_linf_eps8.0.ckpt": "b907957f8e3ce209816813d8811c682e965a1b0f48455def828d35a4cc2953dc",
    "resnet18_l2_eps0.ckpt": "d762c58693a2ecaf93160060bb2c32493598540a08852fb3068e95e88f032623",
    "resnet18_l2_eps0.01.ckpt": "629a82377947785e5481eeaf4e22e3ca59a2eedeb4e385730ee2392b2678407d",
    "resnet18_l2_eps0.05.ckpt": "00912b1aa6d60cf7536b52762ed702e0b9cae822187200f42fe4f6a678771bed",
    "resnet18_l2_eps0.1.ckpt": "2477188559680d096a4eccf5bc7610317cab4b46a97094072d38a29a11bfa8fc",
    "resnet18_l2_eps0.25.ckpt": "2bed566c554755a0f6f82ddbe83c707d259801308f966e787bcd287f969c7911",
    "resnet18_l2_eps0.5.ckpt": "69a10462280f266ab855547fde0649ac909f06174ed8df83b8bf2ea0f6fc8150",
    "resnet18_l2_eps1.ckpt": "92e6c37af550167c7c49c77ad31aad027de4e1f47fbef57546a48ef43626ebcf",
    "resnet18_l2_eps3.ckpt": "b4315784a1a10257b05906aee94d6884678f7b77412d10100d7c05daa959eab0",
    "resnet18_l2_eps5.ckpt": "d3ef126afdf9144a22020988dc46f552a0c39347e954c34359a3cb6bf83df186",
    "resnet18_linf_eps0.5.ckpt": "48d5e933d4ec99b390a0b7c628a4303343f9517a46245cbd7d2f2c034cbd93ee",
    "resnet18_linf_eps1.0.ckpt": "b49800111d38197deefb0c236055fbdd9d91a0607e55d6cc0bce15504adc9582",
    "resnet18_linf_eps2.0.ckpt": "bf2611291cc5f792c7f8f17ff6f841f9a0ede32dbe575cbd5bc57233139ae8bd",
    "resnet18_linf_eps4.0.ckpt": "6f8ccef1ae4958c381617081e9e0fb5f50e7cccd4965192d1caa452fd6c5cd1e",
}
# torch.hub's naming convention: "filename-<sha256>.ext, where <sha256> is the first eight or
# more digits of the SHA256 hash of the contents of the file" (torch.hub.load_state_dict_from_url).
_TORCH_HUB_HASH = "https://pytorch.org/docs/stable/hub.html#torch.hub.load_state_dict_from_url"
# The four files above whose mirror page was not found: a sha256 is public, but not recorded here.
_HF_NOT_COPIED = ("not recorded: the Hugging Face mirror's page for this file, which shows its "
                  "sha256, could not be read when the others were copied")
# Looked for on 2026-12-07 and not found: a sha256 (or md5) of the robustness library's files.
_NO_PUBLIC_CHECKSUM = (
    "no public checksum: the robustness README links the files without one, and none is given "
    "in its GitHub issues or in the public code that downloads these Dropbox files")


def _published(name: str, file_name: str, urls: tuple, arch: str, attack: str, eps: float,
               eps_label: str, top1: float | None, sha256: str | None, origin: str,
               sha256_source: str | None = None, checksum_note: str = "") -> Source:
    """The record of one published ImageNet checkpoint (224 px, converted on first use)."""
    return Source(
        name=name, arch=arch, attack=attack, eps=eps, eps_label=eps_label, dataset="imagenet",
        image_size=IMAGE_SIZE, description=f"published ImageNet {arch}, {attack} eps {eps_label}",
        metrics={} if top1 is None else {"imagenet_top1": top1}, file_name=file_name,
        urls=urls, sha256=sha256, sha256_source=sha256_source, origin=origin,
        checksum_note=checksum_note)


def _salman(arch: str, attack: str, eps_label: str, file_eps: str, top1: float) -> Source:
    """An entry of Salman et al.'s table (robust-models-transfer README)."""
    file_name = f"{arch}_{attack}_eps{file_eps}.ckpt"
    eps = float(eps_label) if attack == "l2" else float(eps_label) / 255.0
    sha256 = _HF_SHA256.get(file_name)
    return _published(
        f"salman-{arch}-{attack}-eps{eps_label}", file_name,
        (_HF_MIRROR + file_name, _AZURE + file_name + _AZURE_QUERY), arch,
        "none" if eps == 0 else attack, eps,
        eps_label if attack == "l2" else f"{eps_label}/255", top1, sha256, _SALMAN_README,
        sha256_source=_HF_SHA256_SOURCE + file_name if sha256 else None,
        checksum_note="" if sha256 else _HF_NOT_COPIED)


# (eps as written, eps in the file name, ResNet-18 top-1, ResNet-50 top-1)
_SALMAN_L2 = (
    ("0", "0", 69.79, 75.80), ("0.01", "0.01", 69.90, 75.68), ("0.03", "0.03", 69.24, 75.76),
    ("0.05", "0.05", 69.15, 75.59), ("0.1", "0.1", 68.77, 74.78), ("0.25", "0.25", 67.43, 74.14),
    ("0.5", "0.5", 65.49, 73.16), ("1", "1", 62.32, 70.43), ("3", "3", 53.12, 62.83),
    ("5", "5", 45.59, 56.13),
)
_SALMAN_LINF = (
    ("0.5", "0.5", 66.13, 73.73), ("1", "1.0", 63.46, 72.05), ("2", "2.0", 59.63, 69.10),
    ("4", "4.0", 52.49, 63.86), ("8", "8.0", 42.11, 54.53),
)

_ENTRIES = [
    _published("resnet50-natural", "resnet50-0676ba61.pth",
               ("https://download.pytorch.org/models/resnet50-0676ba61.pth",), "resnet50",
               "none", 0.0, "0", 76.13, "0676ba61",
               f"torchvision IMAGENET1K_V1 (the eps=0 model of {_ROBUSTNESS_README})",
               sha256_source=_TORCH_HUB_HASH),
    # The robustness README's Dropbox files: no checksum is published for them.
    # The README links Dropbox pages (?dl=0); ?dl=1 is the same file as a direct download.
    _published("robust-resnet50-l2-eps3", "imagenet_l2_3_0.pt",
               ("https://www.dropbox.com/s/knf4uimlqsi1yz8/imagenet_l2_3_0.pt?dl=1",),
               "resnet50", "l2", 3.0, "3", 57.90, None, _ROBUSTNESS_README,
               checksum_note=_NO_PUBLIC_CHECKSUM),
    _published("robust-resnet50-linf-eps4", "imagenet_linf_4.pt",
               ("https://www.dropbox.com/s/axfuary2w1cnyrg/imagenet_linf_4.pt?dl=1",),
               "resnet50", "linf", 4 / 255, "4/255", 62.42, None, _ROBUSTNESS_README,
               checksum_note=_NO_PUBLIC_CHECKSUM),
    _published("robust-resnet50-linf-eps8", "imagenet_linf_8.pt",
               ("https://www.dropbox.com/s/yxn15a9zklz3s8q/imagenet_linf_8.pt?dl=1",),
               "resnet50", "linf", 8 / 255, "8/255", 47.91, None, _ROBUSTNESS_README,
               checksum_note=_NO_PUBLIC_CHECKSUM),
]
for _arch, _column in (("resnet50", 3), ("resnet18", 2)):
    _ENTRIES += [_salman(_arch, "l2", row[0], row[1], row[_column]) for row in _SALMAN_L2]
    _ENTRIES += [_salman(_arch, "linf", row[0], row[1], row[_column]) for row in _SALMAN_LINF]

REGISTRY: dict[str, Source] = {entry.name: entry for entry in _ENTRIES}
