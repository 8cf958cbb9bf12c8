"""Networks: shapes, upstream parameter names, site channel selection (trainable and faithful), factory."""
import pytest
import torch

from fedicra.errors import UserError
from fedicra.models import (
    MODEL_NAMES,
    UNet,
    aux_head_parameter_names,
    batchnorm_state_names,
    build_model,
    decoder_parameter_names,
    head_parameter_names,
)

LC_MODELS = ("unet_lc", "unet_lc_multihead")
# relative size (fraction of H) of each aux output, per model
AUX_SCALES = {"unet": [], "unet_multihead": [4, 2, 1], "unet_lc": [4], "unet_lc_multihead": [4, 2, 1]}


def _check_shapes(out, name, size, classes):
    assert out["logits"].shape == (1, classes, size, size)
    assert [tuple(a.shape) for a in out["aux"]] == [(1, classes, size // s, size // s) for s in AUX_SCALES[name]]
    assert out["bottleneck"].shape == (1, 256, size // 16, size // 16)
    assert [f.shape[1] for f in out["features"]] == [16, 32, 64, 128, 256]
    assert [d.shape[1] for d in out["decoder"]] == [128, 64, 32, 16]
    if name in LC_MODELS:
        assert out["attention"].shape == (1, 256, 1, 1)
        assert torch.all((out["attention"] > 0) & (out["attention"] < 1))
    else:
        assert out["attention"] is None


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shapes_one_channel(name):
    model = build_model(name, in_channels=1, num_classes=2, num_sites=5, site=1).eval()
    for size in (64, 128, 256):
        with torch.no_grad():
            out = model(torch.rand(1, 1, size, size))
        _check_shapes(out, name, size, 2)


def test_shapes_384_three_channels():
    model = build_model("unet_lc_multihead", in_channels=3, num_classes=3, num_sites=5, site=4).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 384, 384))
    _check_shapes(out, "unet_lc_multihead", 384, 3)
    assert out["bottleneck"].shape[-1] == 24


def test_upstream_parameter_names():
    keys = set(build_model("unet_lc_multihead", 1, 2, num_sites=5).state_dict())
    for key in ("encoder.in_conv.conv_conv.0.weight", "encoder.in_conv.conv_conv.1.running_mean",
                "encoder.down1.maxpool_conv.1.conv_conv.0.weight", "encoder.down4.maxpool_conv.1.conv_conv.4.bias",
                "decoder.up1.conv1x1.weight", "decoder.up4.conv.conv_conv.4.weight", "decoder.out_conv.weight",
                "decoder.out_conv.bias", "decoder.dsn_head1.0.weight", "decoder.dsn_head2.1.running_var",
                "decoder.dsn_head3.4.weight", "encoder.pcs.fc1.0.weight", "encoder.pcs.fc1.2.weight",
                "encoder.pcs.fc2.0.weight", "encoder.pcs.fc2.2.weight"):
        assert key in keys, key
    assert "decoder.dsn_head1.4.bias" not in keys  # aux 1x1 conv has no bias
    assert "decoder.dsn_head.4.weight" in build_model("unet_lc", 1, 2, num_sites=5).state_dict()
    transpose = build_model("unet", 1, 2, upsample="transpose").state_dict()
    assert transpose["decoder.up1.up.weight"].shape == (256, 128, 2, 2)
    assert not any("conv1x1" in k for k in transpose)


def test_parameter_shapes_and_count():
    model = build_model("unet_lc", 1, 2, num_sites=5)
    sd = model.state_dict()
    assert sd["encoder.pcs.fc1.0.weight"].shape == (256, 5, 1, 1)
    assert sd["encoder.pcs.fc2.0.weight"].shape == (16, 512, 1, 1)
    assert sd["encoder.pcs.fc2.2.weight"].shape == (256, 16, 1, 1)
    # 1.81 M parameters: the FedICRA-size U-Net of reference/environment.md
    assert sum(p.numel() for p in build_model("unet", 1, 2).parameters()) == 1_813_474


def test_faithful_pcs_is_unregistered_frozen_and_reproducible():
    torch.manual_seed(0)
    a = build_model("unet_lc_multihead", 1, 2, num_sites=5, site=2, faithful=True)
    torch.manual_seed(123)
    b = build_model("unet_lc_multihead", 1, 2, num_sites=5, site=2, faithful=True)
    assert not any("pcs" in k for k in a.state_dict())
    pcs_ids = {id(p) for p in a.channel_selection.parameters()}
    assert pcs_ids and not pcs_ids & {id(p) for p in a.parameters()}
    assert not any(p.requires_grad for p in a.channel_selection.parameters())
    for (ka, va), (kb, vb) in zip(a.channel_selection.state_dict().items(), b.channel_selection.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    # the frozen PCS draws from its own generator: the registered weights match a PCS-free build
    torch.manual_seed(7)
    faithful = build_model("unet_lc_multihead", 1, 2, num_sites=5, faithful=True).state_dict()
    torch.manual_seed(7)
    plain = UNet(1, 2, aux_heads={"dsn_head1": 2, "dsn_head2": 3, "dsn_head3": 4}).state_dict()
    assert faithful.keys() == plain.keys()
    assert all(torch.equal(faithful[k], plain[k]) for k in plain)


def test_faithful_pcs_follows_dtype_and_passes_gradient_to_encoder():
    model = build_model("unet_lc", 1, 2, num_sites=3, faithful=True).double()
    assert model.channel_selection.fc1[0].weight.dtype == torch.float64
    out = model(torch.rand(2, 1, 32, 32, dtype=torch.float64))
    (out["logits"].sum() + out["attention"].sum()).backward()
    assert model.channel_selection.fc1[0].weight.grad is None
    assert model.encoder.in_conv.conv_conv[0].weight.grad.abs().sum() > 0


def test_default_pcs_is_registered_and_trainable():
    torch.manual_seed(0)
    model = build_model("unet_lc_multihead", 1, 2, num_sites=4, site=1)
    pcs = model.channel_selection
    assert pcs is model.encoder.pcs
    assert {id(p) for p in pcs.parameters()} <= {id(p) for p in model.parameters()}
    out = model(torch.rand(2, 1, 32, 32))
    (out["logits"].square().mean() + out["attention"].square().mean()).backward()
    for name in ("fc1.0.weight", "fc1.2.weight", "fc2.0.weight", "fc2.2.weight"):
        grad = dict(pcs.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("faithful", [False, True])
def test_site_attention_matches_full_forward(faithful):
    torch.manual_seed(0)
    model = build_model("unet_lc_multihead", 1, 2, num_sites=5, site=0, faithful=faithful).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        own = model(x)
        assert torch.allclose(own["attention"], model(x, site=0)["attention"])
        for site in range(1, 5):
            full = model(x, site=site)
            cheap = model.site_attention(own["bottleneck"], site)
            assert cheap.shape == (2, 256, 1, 1)
            assert torch.allclose(cheap, full["attention"], atol=1e-6)
            assert not torch.allclose(cheap, own["attention"])  # the site code matters
            assert torch.equal(full["bottleneck"], own["bottleneck"])  # the site enters only after the encoder


def test_default_site_is_used():
    torch.manual_seed(0)
    model = build_model("unet_lc", 1, 2, num_sites=3, site=2).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)["logits"], model(x, site=2)["logits"])
        model.site = 1
        assert torch.equal(model(x)["logits"], model(x, site=1)["logits"])


def test_bad_input_raises_user_error():
    with pytest.raises(UserError, match="unknown; valid models: unet, unet_multihead, unet_lc"):
        build_model("resnet", 1, 2)
    with pytest.raises(UserError, match="site=5"):
        build_model("unet_lc", 1, 2, num_sites=5, site=5)
    model = build_model("unet_lc", 1, 2, num_sites=2)
    with pytest.raises(UserError, match="site=-1"):
        model(torch.rand(1, 1, 32, 32), site=-1)
    with pytest.raises(UserError, match="site=2"):
        model.site = 2
    with pytest.raises(UserError, match="multiples of 16"):
        model(torch.rand(1, 1, 40, 40))
    with pytest.raises(UserError, match=r"expected \[B,1,H,W\]"):
        model(torch.rand(1, 3, 32, 32))
    with pytest.raises(UserError, match="channel selection"):
        build_model("unet", 1, 2).site_attention(torch.rand(1, 256, 2, 2), 0)
    with pytest.raises(UserError, match="upsample"):
        build_model("unet", 1, 2, upsample="nearest")
    with pytest.raises(UserError, match="num_classes"):
        build_model("unet", 1, 0)


def test_parameter_groups():
    model = build_model("unet_lc_multihead", 1, 2, num_sites=5)
    decoder = decoder_parameter_names(model)
    assert "decoder.up1.conv1x1.weight" in decoder and "decoder.out_conv.bias" in decoder
    assert "decoder.up2.conv.conv_conv.1.weight" in decoder  # BN affine parameters are parameters
    assert all(n.startswith(("decoder.up", "decoder.out_conv")) for n in decoder)
    assert not any("running" in n for n in decoder)
    assert head_parameter_names(model) == ["decoder.out_conv.weight", "decoder.out_conv.bias"]
    aux = aux_head_parameter_names(model)
    assert "decoder.dsn_head3.4.weight" in aux and not set(aux) & set(decoder)
    bn = batchnorm_state_names(model)
    assert "encoder.in_conv.conv_conv.1.num_batches_tracked" in bn and "decoder.dsn_head1.1.running_mean" in bn
    assert not any(n.endswith("conv_conv.0.weight") for n in bn)
