"""Network definitions (``nn.Module`` only) and a ``create_model(name, **cfg)`` factory.

Names: ``unet`` (HRNet paper, Table 4), ``resunet`` (MANet stage 1), and the MANet stage-2
classifiers ``{resnet34,resnet50,vgg16,inception_v3}`` with ``attention`` in ``none|mask|cbam``
(these take ``(image, mask)``).

One-input classifiers (``forward(image)``): ``cxnet_base`` and ``covid_cxnet`` (COVID-CXNet's base
CNN and its DenseNet-121 / CheXNet model), ``hrnet`` (the HRNet paper's classifier, timm) and that
paper's timm baselines ``timm_resnet152``, ``timm_densenet121``, ``timm_efficientnet_b4``.

Every classifier exposes ``gradcam_layer``, the module Grad-CAM hooks.
"""

from ._torchvision_ops import ensure_torchvision_ops

ensure_torchvision_ops()  # before anything imports torchvision (timm, pytorch-grad-cam)

from . import cxnet, inception, resnet, timm_classifiers, unet, vgg  # noqa: E402

_FACTORIES = {
    "unet": unet.UNet,
    "resunet": unet.ResUNet,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
    "vgg16": vgg.vgg16,
    "inception_v3": inception.inception_v3,
    "cxnet_base": cxnet.CovidCxNetBase,
    "covid_cxnet": cxnet.CovidCxNet,
    "hrnet": timm_classifiers.hrnet,
    "timm_resnet152": timm_classifiers.timm_resnet152,
    "timm_densenet121": timm_classifiers.timm_densenet121,
    "timm_efficientnet_b4": timm_classifiers.timm_efficientnet_b4,
}


def available_models() -> list[str]:
    return sorted(_FACTORIES)


def create_model(name: str, **cfg):
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models())}") from None
    return factory(**cfg)
