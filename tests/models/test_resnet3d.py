"""Paper 004's 3D ResNet34 and its online attention (Eq. 1-2), checked by hand on a tiny network."""

import pytest
import torch
import torch.nn.functional as F

import models
from models.resnet3d import AttentionResNet3d, soft_mask


def tiny(**cfg) -> AttentionResNet3d:
    return models.create_model("resnet3d34_attention", width=4, **cfg)


def test_registered_with_the_factory():
    assert "resnet3d34_attention" in models.available_models()
    assert isinstance(tiny(), AttentionResNet3d)


@pytest.mark.parametrize("shape", [(32, 32, 32), (48, 64, 80), (33, 40, 17)])
def test_features_at_one_sixteenth_and_attention_at_input_size(shape):
    model = tiny().eval()
    x = torch.rand(2, 1, *shape)
    with torch.no_grad():
        features = model.features(x)
        logits, raw, attention = model.forward_with_attention(x)
    expected = tuple(-(-s // 16) for s in shape)  # each stride-2 step rounds up (padding 1 or 3)
    assert features.shape == (2, model.feature_channels, *expected)
    assert raw.shape == (2, 1, *expected)
    assert attention.shape == (2, 1, *shape)
    assert logits.shape == (2, 1)
    assert torch.equal(logits, model(x))  # the plain forward is the attention forward's classification


def test_the_last_stage_keeps_the_resolution():
    model = tiny()
    strides = [block.conv1.stride for block in model.stages[-1]]
    assert strides == [(1, 1, 1)] * 3
    assert [len(stage) for stage in model.stages] == [3, 4, 6, 3]
    assert model.feature_channels == 32  # width x 8


def test_no_parameters_beyond_a_plain_3d_resnet():
    model = tiny()
    names = [name for name, _ in model.named_parameters()]
    assert not [n for n in names if "attention" in n or "cam" in n]
    head = [n for n in names if not n.startswith(("stem.", "stages."))]
    assert head == ["fc.weight", "fc.bias"]
    assert set(model.state_dict()) - {n for n, _ in model.named_buffers()} == set(names)


def test_attention_by_hand_kernel_is_the_fc_weight():
    model = tiny(alpha=100.0, beta=0.4).eval()
    with torch.no_grad():
        model.fc.weight.normal_()
        model.fc.bias.fill_(5.0)  # the bias must not enter the attention
    x = torch.rand(1, 1, 32, 48, 32)
    with torch.no_grad():
        features = model.features(x)
        _, raw, attention = model.forward_with_attention(x)
    w = model.fc.weight[0]
    by_hand = torch.clamp(torch.einsum("nczyx,c->nzyx", features, w), min=0)[:, None]
    assert torch.allclose(raw, by_hand, atol=1e-5)
    up = F.interpolate(by_hand, size=(32, 48, 32), mode="trilinear", align_corners=False)
    normalised = (up - up.min()) / (up.max() - up.min() + 1e-6)
    assert torch.allclose(attention, 1 / (1 + torch.exp(-100 * (normalised - 0.4))), atol=1e-5)
    assert attention.min() >= 0 and attention.max() <= 1


def test_soft_mask_normalises_each_sample_on_its_own():
    a = torch.zeros(2, 1, 2, 2, 2)
    a[0, 0, 0, 0, 0], a[0, 0, 1, 1, 1] = 1.0, 0.5
    a[1, 0, 0, 0, 0] = 100.0
    t = soft_mask(a, 100.0, 0.4)
    assert t[0, 0, 0, 0, 0] == pytest.approx(torch.sigmoid(torch.tensor(60.0)).item())
    assert t[0, 0, 1, 1, 1] == pytest.approx(torch.sigmoid(torch.tensor(10.0)).item(), rel=1e-4)
    assert t[1, 0, 0, 0, 0] == pytest.approx(t[0, 0, 0, 0, 0].item())  # scale-free
    flat = soft_mask(torch.zeros(1, 1, 2, 2, 2), 100.0, 0.4)  # ReLU killed everything: no attention anywhere
    assert flat.max() < 1e-16


def test_gradient_reaches_the_fc_weight_through_both_paths_exactly_once():
    """d(BCE + lambda L)/dW from autograd = the classification path's gradient (by hand: GAP features)
    + the attention path's (a separate copy of W in the kernel), with nothing counted twice."""
    model = tiny().eval()  # eval: batch norm fixed, so the features are a plain function of the input
    torch.manual_seed(1)
    with torch.no_grad():  # positive weights over post-ReLU features: A > 0, so the ReLU passes gradients
        model.fc.weight.normal_(std=0.5).abs_()
    x, y = torch.rand(3, 1, 32, 32, 32), torch.tensor([[1.0], [0.0], [1.0]])
    target = (torch.rand(3, 1, 32, 32, 32) > 0.7).float()

    def attention_term(t):
        return ((t - target) ** 2).sum() / (t.sum() + target.sum())

    logits, _, attention = model.forward_with_attention(x)
    loss = F.binary_cross_entropy_with_logits(logits, y) + 0.5 * attention_term(attention)
    (autograd,) = torch.autograd.grad(loss, model.fc.weight)

    with torch.no_grad():
        features = model.features(x)
        pooled = features.mean(dim=(2, 3, 4))
        p = torch.sigmoid(pooled @ model.fc.weight.T + model.fc.bias)
    classification = ((p - y) * pooled).sum(0, keepdim=True) / len(y)  # d BCE / dW by hand
    kernel = model.fc.weight.detach().clone().requires_grad_()
    raw = F.relu(F.conv3d(features, kernel.view(1, -1, 1, 1, 1)))
    (attention_path,) = torch.autograd.grad(0.5 * attention_term(model.attention_map(raw, x.shape[2:])), kernel)
    assert attention_path.abs().sum() > 0
    assert torch.allclose(autograd, classification + attention_path, rtol=1e-4, atol=1e-6)


def test_backward_of_the_attention_loss_alone_reaches_the_backbone_and_fc():
    model = tiny()
    _, _, attention = model.forward_with_attention(torch.rand(2, 1, 32, 32, 32))
    attention.mean().backward()
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0
    assert model.fc.bias.grad is None  # the bias is not in the kernel
    assert model.stem[0].weight.grad.abs().sum() > 0


def test_attention_stays_float32_under_autocast():
    model = tiny().eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, _, attention = model.forward_with_attention(torch.rand(1, 1, 32, 32, 32))
    assert attention.dtype == torch.float32


def test_gradcam_layer_is_the_last_block():
    model = tiny()
    assert model.gradcam_layer is model.stages[-1][-1]
