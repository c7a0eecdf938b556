"""Network definitions (``nn.Module`` only) and a ``create_model(name, **cfg)`` factory.

Names: ``unet`` (HRNet paper, Table 4), ``resunet`` (MANet stage 1), and the MANet stage-2
classifiers ``{resnet34,resnet50,vgg16,inception_v3}`` with ``attention`` in ``none|mask|cbam``.
"""

from ._torchvision_ops import ensure_torchvision_ops

ensure_torchvision_ops()  # before anything imports torchvision (timm, pytorch-grad-cam)

from . import inception, resnet, unet, vgg  # noqa: E402

_FACTORIES = {
    "unet": unet.UNet,
    "resunet": unet.ResUNet,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
    "vgg16": vgg.vgg16,
    "inception_v3": inception.inception_v3,
}


def available_models() -> list[str]:
    return sorted(_FACTORIES)


def create_model(name: str, **cfg):
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models())}") from None
    return factory(**cfg)
