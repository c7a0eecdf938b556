"""Network definitions (``nn.Module`` only) and a ``create_model(name, **cfg)`` factory.

Names: ``unet`` (HRNet paper, Table 4), ``resunet`` (MANet stage 1), and the MANet stage-2
classifiers ``{resnet34,resnet50,vgg16,inception_v3}`` with ``attention`` in ``none|mask|cbam``
(these take ``(image, mask)``).

One-input classifiers (``forward(image)``): ``cxnet_base`` and ``covid_cxnet`` (COVID-CXNet's base
CNN and its DenseNet-121 / CheXNet model), ``hrnet`` (the HRNet paper's classifier, timm) and that
paper's timm baselines ``timm_resnet152``, ``timm_densenet121``, ``timm_efficientnet_b4``.

CT slices: ``infnet`` (Inf-Net, Fan et al., IEEE TMI 2020, doi:10.1109/TMI.2020.2996645; side outputs in
train mode, the final infection map in eval mode), ``infnet_slim`` (the same on a thin Res2Net for CPU),
``infnet_multiclass`` (its GGO/consolidation UNet, fed slice + infection probability), and paper 002's
``multisource_branch`` (global / heat-map branch), ``multisource_infected`` and ``multisource_fusion``
(the four-branch model; ``forward(global, heatmap_crop, left, right)``).

CT volumes: ``resnet3d34_attention`` (paper 004's 3D ResNet34 with the online attention T(A); ``forward(volume)``,
``forward_with_attention(volume)``).

Every classifier exposes ``gradcam_layer``, the module Grad-CAM hooks.
"""

from ._torchvision_ops import ensure_torchvision_ops

ensure_torchvision_ops()  # before anything imports torchvision (timm, pytorch-grad-cam)

from . import cxnet, inception, infnet, multisource, resnet, resnet3d, timm_classifiers, unet, vgg  # noqa: E402

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
    "infnet": infnet.InfNet,
    "infnet_slim": infnet.infnet_slim,
    "infnet_multiclass": infnet.infnet_multiclass,
    "multisource_branch": multisource.multisource_branch,
    "multisource_infected": multisource.multisource_infected,
    "multisource_fusion": multisource.multisource_fusion,
    "resnet3d34_attention": resnet3d.resnet3d34_attention,
}


def available_models() -> list[str]:
    return sorted(_FACTORIES)


def create_model(name: str, **cfg):
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models())}") from None
    return factory(**cfg)
