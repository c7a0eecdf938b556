"""Mask attention (MANet, Eq. 1) in the four classification backbones.

    I_{i+1} = A(BN(conv(I_i; k, s, p)) * P(M_i; k, s, p)),    M_{i+1} = P(M_i; k, s, p)

P is ``avg_pool2d`` with the conv's kernel/stride/padding and ``count_include_pad=True``. The tests
recompute every map and every MA output from the layers' own inputs with ``torch.nn.functional``, so
they do not reuse the code under test; BN statistics and affine parameters are randomised (eval mode)
so that pre-activations are negative in places and the map changes the output.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models  # (patches torchvision's operators before torchvision is imported)
import torchvision
from models import create_model
from models.inception import InceptionModule, MaskAttentionInception3
from models.mask_attention import MaskAttentionConv, pool_like, pool_mask
from models.resnet import BasicBlock, Bottleneck
from models.vgg import MaskAttentionVGG

BACKBONES = ("resnet34", "resnet50", "vgg16", "inception_v3")
# Small widths keep the CPU cost of the tests low; the layouts are the full ones.
SMALL = {
    "resnet34": dict(width=8),
    "resnet50": dict(width=8),
    "vgg16": dict(width=8, hidden=16),
    "inception_v3": dict(width=16),
}
REL = 1e-5  # float32 recomputation error, relative to the largest value involved in the block


def F_(*rows):
    """A tensor from rows of fractions (written by hand), shape (1, 1, H, W)."""
    return torch.tensor([[float(Fraction(v)) for v in row] for row in rows], dtype=torch.float64)[None, None]


def close(actual, expected, *involved):
    """float32 equality up to rounding: tolerance REL times the largest magnitude involved (activations
    in deep random-BN nets reach ~1e3 and residual sums cancel); the MA effects checked are O(that)."""
    scale = max([1.0] + [float(t.abs().max()) for t in (expected, *involved)])
    torch.testing.assert_close(actual.double(), expected.double(), rtol=0, atol=REL * scale)


def exact(actual, expected):
    """Hand-computed float64 values: equal up to rounding of the fractions."""
    torch.testing.assert_close(actual.double(), expected.double(), rtol=0, atol=1e-12)


def randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(n, generator=generator) * 0.5 + 1.0)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.5)
    return model.eval()


def small_model(name, attention="mask", **extra):
    return create_model(name, attention=attention, num_classes=3, in_channels=1, **{**SMALL[name], **extra})


def lung_mask(size=96, batch=1):
    """Two 'lungs' (ellipses), zero elsewhere: maps take values strictly between 0 and 1 at their edges."""
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    c, ry, rx = size / 2, size * 0.3, size * 0.14
    left = ((yy - c) / ry) ** 2 + ((xx - size * 0.3) / rx) ** 2 <= 1
    right = ((yy - c) / ry) ** 2 + ((xx - size * 0.7) / rx) ** 2 <= 1
    return (left | right).float()[None, None].repeat(batch, 1, 1, 1)


def relu(x):
    return x.clamp(min=0)


def conv_bn(block: MaskAttentionConv, x):
    """BN(conv(x)) written with the functional API from the block's tensors (eval-mode BN)."""
    conv, bn = block.conv, block.bn
    y = F.conv2d(x, conv.weight, None, conv.stride, conv.padding)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (y - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]


def avg(mask, kernel, stride, padding):
    return F.avg_pool2d(mask, kernel, stride, padding, count_include_pad=True)


# ----------------------------------------------------------------------------- hand-computed maths
MASK_4x4 = F_(
    [1, 1, 0, 0],
    [1, 1, 1, 0],
    [0, 1, 1, 1],
    [0, 0, 1, 1],
)
# 3x3 window sums around each pixel (zero padding counts as outside), over 9.
P3 = F_(
    ["4/9", "5/9", "3/9", "1/9"],
    ["5/9", "7/9", "6/9", "3/9"],
    ["3/9", "6/9", "7/9", "5/9"],
    ["1/9", "3/9", "5/9", "4/9"],
)
P2 = F_(["1", "1/4"], ["1/4", "1"])  # 2x2 blocks, stride 2
P3_THEN_P2 = F_(["7/12", "13/36"], ["13/36", "7/12"])  # (4+5+5+7)/36, (3+1+6+3)/36, ...


def test_pool_mask_hand_computed():
    exact(pool_mask(MASK_4x4, 3, 1, 1), P3)
    exact(pool_mask(MASK_4x4, 2, 2, 0), P2)
    exact(pool_mask(pool_mask(MASK_4x4, 3, 1, 1), 2, 2, 0), P3_THEN_P2)
    # pool_like reads kernel/stride/padding off a layer
    exact(pool_like(MASK_4x4, nn.Conv2d(1, 1, 3, 1, 1)), P3)
    exact(pool_like(MASK_4x4, nn.MaxPool2d(2, 2)), P2)
    # padding counts as outside: an all-ones map is 4/9 at corners, 6/9 on edges, 1 inside
    ones = pool_mask(torch.ones(1, 1, 4, 4, dtype=torch.float64), 3, 1, 1)
    exact(ones, F_(
        ["4/9", "6/9", "6/9", "4/9"],
        ["6/9", 1, 1, "6/9"],
        ["6/9", 1, 1, "6/9"],
        ["4/9", "6/9", "6/9", "4/9"],
    ))


def _fixed_block(kernel, stride, padding, activation=True, use_mask=True):
    """Channel 0 copies the pixel under the kernel's anchor, channel 1 negates it; known BN stats."""
    block = MaskAttentionConv(1, 2, kernel, stride, padding, use_mask=use_mask, activation=activation).double()
    with torch.no_grad():
        block.conv.weight.zero_()
        anchor = (kernel // 2, kernel // 2) if padding else (0, 0)
        block.conv.weight[0, 0, anchor[0], anchor[1]] = 1.0
        block.conv.weight[1, 0, anchor[0], anchor[1]] = -1.0
        block.bn.running_mean.copy_(torch.tensor([1.0, -4.0]))
        block.bn.running_var.copy_(torch.tensor([4.0, 1.0]))
        block.bn.weight.copy_(torch.tensor([1.0, 2.0]))
        block.bn.bias.copy_(torch.tensor([0.0, 1.0]))
    block.bn.eps = 0.0
    return block.eval()


X_4x4 = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
# BN by hand: channel 0 (x - 1) / 2, channel 1 2 * (-x + 4) + 1 = 9 - 2x.


def test_mask_attention_conv_hand_computed():
    block = _fixed_block(3, 1, 1)
    out, new_map = block(X_4x4, MASK_4x4)
    exact(new_map, P3)
    # relu(((x - 1) / 2) * P3): the -1/2 at (0, 0) becomes -2/9 and is zeroed
    exact(out[:, :1], F_(
        [0, 0, "1/6", "1/9"],
        ["5/6", "14/9", "5/3", 1],
        ["7/6", "8/3", "7/2", "25/9"],
        ["11/18", 2, "65/18", "28/9"],
    ))
    # relu((9 - 2x) * P3): only the first five pixels stay positive
    exact(out[:, 1:], F_(
        [4, "35/9", "5/3", "1/3"],
        ["5/9", 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ))
    # without the activation the scaled negative values are there (scaling happens before the ReLU)
    pre, _ = _fixed_block(3, 1, 1, activation=False)(X_4x4, MASK_4x4)
    exact(pre[:, 1:], F_(
        [4, "35/9", "5/3", "1/3"],
        ["5/9", "-7/9", -2, "-5/3"],
        ["-7/3", -6, "-77/9", "-65/9"],
        ["-5/3", "-17/3", "-95/9", "-28/3"],
    ))
    # MA off: the plain block ignores the map for the features but still moves it
    plain, plain_map = _fixed_block(3, 1, 1, use_mask=False)(X_4x4, MASK_4x4)
    exact(plain_map, P3)
    exact(plain[:, :1], relu((X_4x4 - 1) / 2))


def test_mask_attention_conv_stride_two_hand_computed():
    block = _fixed_block(2, 2, 0)  # weight picks the top-left pixel of each 2x2 window: 0, 2, 8, 10
    out, new_map = block(X_4x4, MASK_4x4)
    exact(new_map, P2)
    # ((x - 1) / 2) = [[-1/2, 1/2], [7/2, 9/2]] times [[1, 1/4], [1/4, 1]]
    exact(out[:, :1], F_([0, "1/8"], ["7/8", "9/2"]))
    # (9 - 2x) = [[9, 5], [-7, -11]] times the map
    exact(out[:, 1:], F_([9, "5/4"], [0, 0]))


def test_mask_attention_conv_keeps_map_out_of_autograd_and_parameters():
    block = MaskAttentionConv(1, 2, 3, 1, 1)
    assert [name for name, _ in block.named_parameters()] == ["conv.weight", "bn.weight", "bn.bias"]
    buffers = sorted(name for name, _ in block.named_buffers())
    assert buffers == ["bn.num_batches_tracked", "bn.running_mean", "bn.running_var"]
    _, new_map = block(torch.randn(1, 1, 8, 8), torch.ones(1, 1, 8, 8))
    assert not new_map.requires_grad


# ----------------------------------------------------------------------------- per-block checks
class Recorder:
    """Forward hooks that check every MA block against Eq. 1 as it runs."""

    def __init__(self, model):
        self.model = model
        self.convs = []  # (name, block, x_in, m_in, y, m_out), in call order
        self.ma_points = []  # (name, features, map) wherever features were scaled by a map
        self.sensitive = 0  # MA convs where the map changed the output
        self.pre = {}  # id(conv) -> BN output, for Inception heads
        self.block_checks = 0
        self.handles = []
        for name, module in model.named_modules():
            if isinstance(module, MaskAttentionConv):
                self.handles.append(module.register_forward_hook(self._conv_hook(name)))
            elif isinstance(module, BasicBlock):
                self.handles.append(module.register_forward_hook(self._basic_hook(name)))
            elif isinstance(module, Bottleneck):
                self.handles.append(module.register_forward_hook(self._bottleneck_hook(name)))
            elif isinstance(module, InceptionModule):
                self.handles.append(module.register_forward_hook(self._inception_hook(name)))

    def remove(self):
        for handle in self.handles:
            handle.remove()

    def _conv_hook(self, name):
        def hook(block, inputs, outputs):
            x, m_in = inputs
            y, m_out = outputs
            conv = block.conv
            expected_map = avg(m_in, conv.kernel_size, conv.stride, conv.padding)
            assert torch.equal(m_out, expected_map), name
            pre = conv_bn(block, x)
            activate = relu if isinstance(block.act, nn.ReLU) else (lambda t: t)
            if block.use_mask:
                expected = activate(pre * expected_map)
                close(y, expected, pre)
                self.ma_points.append((name, y.detach().clone(), m_out.clone()))
                if (y - activate(pre)).abs().max() > 1e-3:
                    self.sensitive += 1
            else:
                close(y, activate(pre), pre)
            self.pre[id(block)] = pre.detach().clone()
            self.convs.append((name, block, x.detach().clone(), m_in.clone(), y.detach().clone(), m_out.clone()))

        return hook

    def _basic_hook(self, name):
        def hook(block, inputs, outputs):
            x, m_in = inputs
            y, m_out = outputs
            stride = block.conv1.conv.stride
            m1 = avg(m_in, 3, stride, 1)
            m2 = avg(m1, 3, 1, 1)
            assert torch.equal(m_out, m2), name  # the deep path's (larger) receptive field
            if not block.conv1.use_mask:  # plain block: the map moves but nothing is scaled
                m1 = m2 = 1.0
            h = relu(conv_bn(block.conv1, x) * m1)
            pre, shortcut = conv_bn(block.conv2, h) * m2, block.shortcut(x)
            close(y, relu(pre + shortcut), pre, shortcut)  # the deep path is scaled, the shortcut is not
            self.block_checks += 1

        return hook

    def _bottleneck_hook(self, name):
        def hook(block, inputs, outputs):
            x, m_in = inputs
            y, m_out = outputs
            m2 = avg(m_in, 3, block.conv2.conv.stride, 1)
            assert torch.equal(m_out, m2), name  # 1x1 convolutions leave the map unchanged
            h = relu(conv_bn(block.conv1, x))  # no MA at the 1x1 convolutions
            h = relu(conv_bn(block.conv2, h) * (m2 if block.conv2.use_mask else 1.0))  # MA once, at the 3x3
            pre, shortcut = conv_bn(block.conv3, h), block.shortcut(x)
            close(y, relu(pre + shortcut), pre, shortcut)
            self.block_checks += 1

        return hook

    def _inception_hook(self, name):
        def hook(module, inputs, outputs):
            x, m_in = inputs
            y, m_out = outputs
            m = m_in
            for kernel, stride, padding in INCEPTION_CHAINS[name[-2:]]:
                m = avg(m, kernel, stride, padding)
            assert torch.equal(m_out, m), name
            parts = []
            for branch in module.branches:
                if len(branch.heads):
                    for head in branch.heads:
                        pre = self.pre[id(head)]
                        assert pre.shape[-2:] == m.shape[-2:], (name, pre.shape, m.shape)
                        scale = m if module.use_mask else 1.0
                        parts.append(relu(pre * scale))  # every branch's final conv-BN output times M_out
                else:
                    parts.append(F.max_pool2d(x, 3, 2))  # max-pool branch: not rescaled
            close(y, torch.cat(parts, 1))
            if module.use_mask:
                self.ma_points.append((name, y.detach().clone(), m_out.clone()))
            self.block_checks += 1

        return hook


# The chain of the branch with the largest receptive field, written out per module type.
_A = [(1, 1, 0), (5, 1, 2)]  # 1x1 -> 5x5 (RF 5; ties with 1x1-3x3-3x3, the first branch wins)
_B = [(1, 1, 0), (3, 1, 1), (3, 2, 0)]  # 1x1 -> 3x3 -> 3x3/2 (RF 5 > 3)
_C = [(1, 1, 0), ((7, 1), 1, (3, 0)), ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0)), ((1, 7), 1, (0, 3))]  # 13x13
_D = [(1, 1, 0), ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0)), (3, 2, 0)]  # 9x9 > 3x3
_E = [(1, 1, 0), (3, 1, 1), ((1, 3), 1, (0, 1))]  # 3x5 (ties with the 5x3 head, first wins)
INCEPTION_CHAINS = {"5b": _A, "5c": _A, "5d": _A, "6a": _B, "6b": _C, "6c": _C, "6d": _C, "6e": _C,
                    "7a": _D, "7b": _E, "7c": _E}
EXPECTED_MA_CONVS = {"resnet34": 1 + 32, "resnet50": 1 + 16, "vgg16": 13, "inception_v3": 5}
EXPECTED_BLOCKS = {"resnet34": 16, "resnet50": 16, "vgg16": 0, "inception_v3": 11}


@pytest.mark.parametrize("name", BACKBONES)
def test_every_ma_block_follows_eq1(name):
    model = randomize_bn(small_model(name))
    recorder = Recorder(model)
    with torch.no_grad():
        model(torch.randn(1, 1, 96, 96), lung_mask(96))
    recorder.remove()
    ma_convs = [c for c in recorder.convs if c[1].use_mask]
    assert len(ma_convs) == EXPECTED_MA_CONVS[name]
    assert recorder.block_checks == EXPECTED_BLOCKS[name]
    assert recorder.sensitive >= len(ma_convs) // 2  # the maps did change the outputs
    if name == "vgg16":
        _check_vgg_pools(recorder.convs)


def _check_vgg_pools(convs):
    """Between convs the features and map pass unchanged, across a stage both go through 2x2/2 pools
    (max for the features, no rescale; average for the map)."""
    assert len(convs) == 13
    for (name_a, _, _, _, y, m_out), (name_b, _, x, m_in, _, _) in zip(convs, convs[1:]):
        if name_a.split(".")[1] == name_b.split(".")[1]:
            assert torch.equal(x, y) and torch.equal(m_in, m_out)
        else:
            assert torch.equal(x, F.max_pool2d(y, 2, 2))
            assert torch.equal(m_in, avg(m_out, 2, 2, 0))


def test_plain_and_cbam_models_apply_no_mask():
    for name in BACKBONES:
        for attention in ("none", "cbam"):
            model = small_model(name, attention)
            assert not any(getattr(m, "use_mask", False) for m in model.modules()), (name, attention)


# ----------------------------------------------------------------------------- parameters
PAPER_PARAMS_M = {"resnet34": 21.28, "resnet50": 23.51, "vgg16": 134.29, "inception_v3": 21.80}  # Table 3


@pytest.mark.parametrize("name", BACKBONES)
def test_mask_attention_adds_no_parameters(name):
    counts, shapes = {}, {}
    with torch.device("meta"):  # full size, no memory
        for attention in ("none", "mask", "cbam"):
            model = create_model(name, attention=attention, in_channels=3, num_classes=5)
            counts[attention] = sum(p.numel() for p in model.parameters())
            shapes[attention] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert counts["mask"] == counts["none"]
    assert shapes["mask"] == shapes["none"]  # same names, same buffers: weights move between them
    assert counts["cbam"] > counts["none"]
    assert any("cbam" in k for k in shapes["cbam"])
    forbidden = ("mask", "attention", "map", "ma.")
    assert not [k for k in shapes["mask"] if any(word in k.lower() for word in forbidden)]
    assert abs(counts["none"] / 1e6 - PAPER_PARAMS_M[name]) <= 0.01


def _copy_in_order(source: nn.Module, target: nn.Module):
    """Copy weights and BN statistics tensor by tensor; the layouts must list the same shapes in order."""
    src, dst = list(source.state_dict().values()), list(target.state_dict().values())
    assert [tuple(v.shape) for v in src] == [tuple(v.shape) for v in dst]
    with torch.no_grad():
        for s, d in zip(src, dst):
            d.copy_(s)


def test_inception_plain_matches_torchvision_inception3():
    ours = randomize_bn(create_model("inception_v3", attention="none", in_channels=3, num_classes=5))
    theirs = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=5)
    _copy_in_order(ours, theirs)
    theirs.eval()
    image = torch.randn(1, 3, 75, 75)  # torchvision's minimum size works here too
    with torch.no_grad():
        expected = theirs(image)
        actual = ours(image, torch.ones(1, 1, 75, 75))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_vgg_plain_matches_torchvision_vgg16_bn_features():
    from torchvision.models.vgg import cfgs, make_layers

    ours = randomize_bn(create_model("vgg16", attention="none", in_channels=3, num_classes=5, hidden=8))
    theirs = make_layers(cfgs["D"], batch_norm=True).eval()
    for module in theirs:
        if isinstance(module, nn.Conv2d):
            nn.init.zeros_(module.bias)  # ours are bias-free (the paper's unbiased convolutions)
    src = {k: v for k, v in ours.state_dict().items() if k.startswith("stages.")}
    dst = [(k, v) for k, v in theirs.state_dict().items() if not (k.endswith(".bias") and _is_conv(theirs, k))]
    assert [tuple(v.shape) for v in src.values()] == [tuple(v.shape) for _, v in dst]
    with torch.no_grad():
        for s, (_, d) in zip(src.values(), dst):
            d.copy_(s)
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = theirs(image)
        actual = ours.forward_features(image, torch.ones(1, 1, 32, 32))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def _is_conv(sequential, key):
    return isinstance(sequential[int(key.split(".")[0])], nn.Conv2d)


# ----------------------------------------------------------------------------- all-ones mask
def _edge_profile(n, kernel, stride, padding):
    """Fraction of each output's window inside [0, n) along one axis."""
    out = (n + 2 * padding - kernel) // stride + 1
    return torch.tensor([len(set(range(i * stride - padding, i * stride - padding + kernel)) & set(range(n))) / kernel
                         for i in range(out)], dtype=torch.float64)


FIRST_MA_CONV = {"resnet34": "stem", "resnet50": "stem", "vgg16": "stages.0.convs.0", "inception_v3": "Conv2d_2b_3x3"}


@pytest.mark.parametrize("name", BACKBONES)
def test_all_ones_mask_is_identity_inside_and_scales_only_padded_borders(name):
    ma = randomize_bn(small_model(name))
    plain = small_model(name, "none")
    plain.load_state_dict(ma.state_dict())
    plain.eval()
    outputs = {}
    for key, model in (("ma", ma), ("plain", plain)):
        recorder = Recorder(model)
        with torch.no_grad():
            model(torch.randn(1, 1, 96, 96, generator=torch.Generator().manual_seed(3)), torch.ones(1, 1, 96, 96))
        recorder.remove()
        outputs[key] = {c[0]: c for c in recorder.convs}
    target = FIRST_MA_CONV[name]
    _, block, _, m_in, y_ma, m_out = outputs["ma"][target]
    y_plain = outputs["plain"][target][4]
    assert torch.equal(m_in, torch.ones_like(m_in))  # nothing before it had padding
    k, s, p = block.conv.kernel_size[0], block.conv.stride[0], block.conv.padding[0]
    profile = _edge_profile(m_in.shape[-1], k, s, p)
    expected_map = torch.outer(profile, profile)[None, None]
    close(m_out, expected_map)
    inside = m_out == 1.0
    assert inside.any() and (~inside).any()
    assert torch.equal(y_ma[inside.expand_as(y_ma)], y_plain[inside.expand_as(y_plain)])  # interior: identical
    border_diff = (y_ma - y_plain).abs()[(~inside).expand_as(y_ma)]
    assert border_diff.max() > 1e-3  # at padded borders the map < 1 changes the output
    if name == "inception_v3":  # the two stem convs before it have no padding: maps exactly 1, outputs identical
        for conv in ("Conv2d_1a_3x3", "Conv2d_2a_3x3"):
            assert torch.equal(outputs["ma"][conv][5], torch.ones_like(outputs["ma"][conv][5]))
            assert torch.equal(outputs["ma"][conv][4], outputs["plain"][conv][4])
    if name == "vgg16":  # two 3x3/p1 convs: interior [2:-2] map is exactly 1 and the outputs agree there
        _, _, _, _, y2, m2 = outputs["ma"]["stages.0.convs.1"]
        y2_plain = outputs["plain"]["stages.0.convs.1"][4]
        assert torch.equal(m2[..., 2:-2, 2:-2], torch.ones_like(m2[..., 2:-2, 2:-2]))
        assert (m2[..., :2, :] < 1).all() and (m2[..., :, -2:] < 1).all()
        assert torch.equal(y2[..., 2:-2, 2:-2], y2_plain[..., 2:-2, 2:-2])
        assert (y2 - y2_plain)[..., :2, :].abs().max() > 1e-3


# ----------------------------------------------------------------------------- zero outside the lung
def corner_mask(size=96):
    mask = torch.zeros(1, 1, size, size)
    mask[..., 8:24, 8:24] = 1.0
    return mask


@pytest.mark.parametrize("name", BACKBONES)
def test_features_outside_the_lung_receptive_field_are_exactly_zero(name):
    model = randomize_bn(small_model(name))
    recorder = Recorder(model)
    with torch.no_grad():
        model(torch.randn(1, 1, 96, 96) + 1.0, corner_mask())
    recorder.remove()
    with_zeros = 0
    for point, features, attention_map in recorder.ma_points:
        outside = (attention_map == 0).expand_as(features)
        assert torch.equal(features[outside], torch.zeros_like(features[outside])), point
        if outside.any() and features[~outside].abs().max() > 0:
            with_zeros += 1
    assert with_zeros >= 3  # the check bites: maps with zeros and non-zero features inside


def test_vgg_features_beyond_receptive_field_are_zero():
    """After two 3x3 convs (RF 5) nothing further than 2 px from the 16x16 lung square survives."""
    model = randomize_bn(small_model("vgg16"))
    recorder = Recorder(model)
    with torch.no_grad():
        model(torch.randn(1, 1, 96, 96) + 1.0, corner_mask())
    recorder.remove()
    y = {c[0]: c for c in recorder.convs}["stages.0.convs.1"][4]
    assert torch.equal(y[..., 26:, :], torch.zeros_like(y[..., 26:, :]))
    assert torch.equal(y[..., :, 26:], torch.zeros_like(y[..., :, 26:]))
    assert torch.equal(y[..., :6, :], torch.zeros_like(y[..., :6, :]))
    assert y[..., 10:22, 10:22].abs().max() > 0


# ----------------------------------------------------------------------------- training and Grad-CAM
@pytest.mark.parametrize("name", BACKBONES)
def test_forward_backward_and_no_gradient_into_the_mask(name):
    size = 80 if name == "inception_v3" else 64
    model = small_model(name).train()
    image = torch.randn(2, 1, size, size, requires_grad=True)
    mask = lung_mask(size, batch=2)
    out = model(image, mask)
    assert out.shape == (2, 3)
    out.square().mean().backward()
    assert not mask.requires_grad and mask.grad is None
    assert image.grad is not None and image.grad.abs().sum() > 0
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("attention", ("none", "mask", "cbam"))
def test_output_shape_every_variant(name, attention):
    size = 80 if name == "inception_v3" else 64
    model = small_model(name, attention).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size), lung_mask(size)).shape == (1, 3)


@pytest.mark.parametrize("name", BACKBONES)
def test_gradcam_layer_outputs_a_plain_tensor_with_gradients(name):
    size = 80 if name == "inception_v3" else 64
    model = small_model(name).eval()
    seen = {}

    def hook(module, inputs, output):
        seen["type"] = type(output)
        seen["shape"] = tuple(output.shape)
        output.register_hook(lambda grad: seen.__setitem__("grad", tuple(grad.shape)))

    handle = model.gradcam_layer.register_forward_hook(hook)
    out = model(torch.randn(1, 1, size, size), lung_mask(size))
    out[0, 1].backward()
    handle.remove()
    assert seen["type"] is torch.Tensor
    assert len(seen["shape"]) == 4 and seen["shape"][1] == model.feature_channels
    assert seen["grad"] == seen["shape"]


def test_factory_registers_vgg16_and_inception_v3():
    assert {"vgg16", "inception_v3"} <= set(models.available_models())
    assert isinstance(create_model("vgg16", width=4, hidden=8), MaskAttentionVGG)
    assert isinstance(create_model("inception_v3", width=8), MaskAttentionInception3)


def test_inception_smallest_input_is_75_px():
    model = small_model("inception_v3").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 75, 75), torch.ones(1, 1, 75, 75)).shape == (1, 3)
        with pytest.raises(RuntimeError):
            model(torch.randn(1, 1, 74, 74), torch.ones(1, 1, 74, 74))


def _first_conv_gradient(size: int) -> float:
    """Gradient norm reaching the first convolution of MA Inception-v3 on lung-shaped masks."""
    from core.phantoms import make_phantom

    torch.manual_seed(0)
    model = create_model("inception_v3", attention="mask", num_classes=3, width=8)
    phantoms = [make_phantom(label, seed=i, size=size) for i, label in enumerate(("normal", "covid", "tb", "viral"))]
    mask = torch.stack([torch.from_numpy(p.lung_mask.astype("float32"))[None] for p in phantoms])
    image = torch.stack([torch.from_numpy(p.pixels)[None] for p in phantoms]) * 2 - 1
    F.cross_entropy(model(image * mask, mask), torch.tensor([0, 1, 2, 0])).backward()
    return float(model.Conv2d_1a_3x3.conv.weight.grad.norm())


def test_inception_mask_attention_trains_at_the_paper_size_but_not_at_96_px():
    """Eq. 1 compounds the map through every module: at 96 px the Mixed_6 maps (5 x 5, 7-wide kernels
    with zero padding) shrink ~10x per module and the first layer gets no gradient (the cpu-quick
    profile's Inception + MA collapse); at the paper's 299 px the signal survives."""
    assert _first_conv_gradient(299) > 1e-2
    assert _first_conv_gradient(96) < 1e-6
