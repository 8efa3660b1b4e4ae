"""Model registry: the built-ins, parameter matching, the LCN's geometry, user builders, and the ladder."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.core import layers, models
from pipeline.errors import ParamsError
from pipeline.params import Params, validate_params
from tests.helpers import params_with

LADDER = ["linear", "mlp", "lcn", "cnn"]
SPECTRUM = [*LADDER, "resnet", "mixer", "vit", "gru", "resnet1d"]


def params(**overrides: object) -> Params:
    return validate_params(params_with(overrides))


def built(configs: dict[str, models.ModelConfig]) -> dict[str, nn.Module]:
    return {name: models.build(config) for name, config in configs.items()}


def test_registry_holds_the_built_ins_with_their_roles() -> None:
    assert {name: arch.role for name, arch in models.REGISTRY.items()} == {
        "linear": "linear",
        "mlp": "dense",
        "cnn": "shared",
        "lcn": "local",
        "mnist1d_mlp": "dense",
        "mnist1d_cnn": "shared",
        "resnet": "residual",
        "resnet1d": "residual",
        "mixer": "mixing",
        "vit": "attention",
        "gru": "recurrent",
    }
    assert {arch.role for arch in models.REGISTRY.values()} <= set(models.ROLES)


def test_default_cnn_is_the_textbook_model() -> None:
    cnn = models.build(models.resolve(params(), (1, 28, 28), 10)["cnn"])
    kinds = [type(layer) for layer in cnn]
    assert kinds == [nn.Conv2d, nn.MaxPool2d, nn.ReLU, nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    conv, dense, head = cnn[0], cnn[4], cnn[6]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (1, 32, (3, 3), (0, 0))
    assert cnn[1].kernel_size == 2
    # 28 -> conv 3x3 valid -> 26 -> pool 2 -> 13, so Dense(128) sees 32 * 13 * 13 inputs.
    assert (dense.in_features, dense.out_features, head.out_features) == (32 * 13 * 13, 128, 10)
    by_hand = (32 * 1 * 3 * 3 + 32) + (32 * 13 * 13 * 128 + 128) + (128 * 10 + 10)
    assert models.count_params(cnn) == by_hand == 693_962
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_ladder_built_ins_have_the_counts_worked_out_by_hand() -> None:
    counts = {
        m: models.count_params(module)
        for m, module in built(models.resolve(params(models=LADDER), (1, 28, 28), 10)).items()
    }
    assert counts["linear"] == 784 * 10 + 10
    assert counts["mlp"] == 795 * 873 + 10  # 784h + h + 10h + 10 closest to the CNN's 693,962 at h = 873
    # The LCN: one 3x3 filter and bias per output position (26 x 26) and channel, then the CNN's head.
    assert counts["lcn"] == 26 * 26 * 32 * (9 + 1) + (32 * 13 * 13 * 128 + 128) + (128 * 10 + 10) == 909_962
    assert counts["cnn"] == 693_962


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (1, 40)])
def test_every_built_in_runs_on_every_catalog_shape(shape: tuple[int, ...]) -> None:
    modules = built(models.resolve(params(models=SPECTRUM), shape, 10))
    counts = {name: models.count_params(module) for name, module in modules.items()}
    for matched in ("mlp", "mixer", "vit"):
        assert abs(counts[matched] - counts["cnn"]) / counts["cnn"] <= 0.01, matched
    x = torch.zeros((3, *shape))
    assert {name: tuple(module(x).shape) for name, module in modules.items()} == {name: (3, 10) for name in SPECTRUM}


def test_vit_and_mixer_are_matched_to_the_textbook_cnn_on_mnist() -> None:
    """The width is solved first (its step moves the count by about 2%), then the MLP width closes the rest."""
    configs = models.resolve(params(models=["cnn", "mixer", "vit"]), (1, 28, 28), 10)
    vit, mixer = configs["vit"].settings, configs["mixer"].settings
    assert (vit["width"], vit["mlp_hidden"], mixer["width"], mixer["channel_hidden"]) == (119, 473, 144, 580)
    counts = {m: models.count_params(module) for m, module in built(configs).items()}
    assert counts == {"cnn": 693_962, "mixer": 694_170, "vit": 694_256}
    # A 4x4 grid of 7x7 patches: 16 tokens of 49 pixels for either model.
    assert built(configs)["vit"].patches.tokens == 16


def test_the_recurrent_and_residual_1d_baselines_have_their_published_counts() -> None:
    """greydanus/mnist1d's GRUBase (5,134 parameters) and michael-beebe/mnist1d's ResNet1D (26,250)."""
    configs = models.resolve(params(models=["gru", "resnet1d"], reference=None), (1, 40), 10)
    modules = built(configs)
    assert {m: models.count_params(module) for m, module in modules.items()} == {"gru": 5_134, "resnet1d": 26_250}
    gru = modules["gru"].gru
    assert (gru.input_size, gru.hidden_size, gru.bidirectional) == (1, 6, True)
    # An image is read row by row: 28 steps of 28 pixels.
    image_gru = models.build(models.resolve(params(models=["gru"], reference=None), (1, 28, 28), 10)["gru"])
    assert (image_gru.gru.input_size, image_gru.head.in_features) == (28, 28 * 2 * 6)


def test_attention_is_global_and_input_dependent_where_the_mixer_is_positional() -> None:
    """Without position embeddings a mean-pooled ViT cannot tell where a patch is (attention mixes every token with
    weights computed from the tokens), while the Mixer's token MLP weighs each position on its own."""
    torch.manual_seed(0)
    configs = models.resolve(params(models=["mixer", "vit"], reference=None), (1, 8, 8), 10)
    vit, mixer = (models.build(configs[m]).eval() for m in ("vit", "mixer"))
    for model in (vit, mixer):
        nn.init.zeros_(model.patches.position)
    x = torch.randn(4, 1, 8, 8)
    swapped = x.clone()
    swapped[..., :2, :2], swapped[..., 6:, 6:] = x[..., 6:, 6:], x[..., :2, :2]  # two 2x2 patches trade places
    assert torch.allclose(vit(x), vit(swapped), atol=1e-5)
    assert not torch.allclose(mixer(x), mixer(swapped), atol=1e-3)


def test_attention_runs_the_textbook_formula() -> None:
    """softmax(QK^T / sqrt(d)) V per head, through the fused kernel."""
    torch.manual_seed(0)
    attention = layers.Attention(width=12, heads=3, head_dim=5)
    x = torch.randn(2, 7, 12)
    q, k, v = attention.qkv(x).view(2, 7, 3, 3, 5).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 5**0.5, dim=-1)
    by_hand = attention.out((weights @ v).transpose(1, 2).reshape(2, 7, 15))
    assert torch.allclose(attention(x), by_hand, atol=1e-6)


@pytest.mark.parametrize("activation", sorted(layers.ACTIVATIONS))
def test_every_model_with_an_activation_uses_the_one_its_settings_name(activation: str) -> None:
    with_activation = [name for name, arch in models.REGISTRY.items() if arch.has_activation]
    assert set(with_activation) == {
        "mlp",
        "cnn",
        "lcn",
        "resnet",
        "resnet1d",
        "mixer",
        "vit",
        "mnist1d_mlp",
        "mnist1d_cnn",
    }
    section = {f"model.{name}": {"activation": activation} for name in with_activation}
    configs = models.resolve(params(models=with_activation, reference="cnn", **section), (1, 40), 10)
    chosen = layers.ACTIVATIONS[activation]
    for name, module in built(configs).items():
        kinds = {type(m) for m in module.modules() if type(m) in layers.ACTIVATIONS.values()}
        assert kinds == {chosen}, name


def test_activation_names_agree_with_the_schema() -> None:
    assert set(layers.ACTIVATIONS) == set(models.Activation.__args__)
    assert layers.MONOTONE < set(layers.ACTIVATIONS)


def test_a_non_monotone_activation_runs_before_the_pool() -> None:
    """Pooling first is exact only for a monotone activation: GELU dips below zero, so it keeps the written order."""
    for activation, order in (("relu", [nn.MaxPool2d, nn.ReLU]), ("gelu", [nn.GELU, nn.MaxPool2d])):
        configs = models.resolve(params(models=["cnn"], **{"model.cnn": {"activation": activation}}), (1, 8, 8), 10)
        assert [type(layer) for layer in models.build(configs["cnn"])][1:3] == order


def test_bad_settings_of_the_new_models_are_one_line_each() -> None:
    with pytest.raises(ParamsError, match=r"model.resnet: .*widths has 2 stages and blocks 3"):
        models.resolve(
            params(models=["resnet"], reference=None, **{"model.resnet": {"widths": [8, 16]}}), (1, 8, 8), 10
        )
    with pytest.raises(ParamsError, match=r"model.vit: a patch of 9 does not fit inputs of size \[8, 8\]"):
        models.resolve(params(models=["vit"], reference=None, **{"model.vit": {"patch": 9}}), (1, 8, 8), 10)
    with pytest.raises(ParamsError, match=r"model.vit.activation: .*'relu'"):
        models.resolve(params(models=["vit"], reference=None, **{"model.vit": {"activation": "swish"}}), (1, 8, 8), 10)


def test_lcn_is_a_convolution_without_weight_sharing() -> None:
    """With every position's filter set to the same weights, the LCN computes exactly the CNN's function."""
    configs = models.resolve(params(models=["cnn", "lcn"]), (1, 12, 12), 10)
    cnn, lcn = models.build(configs["cnn"]), models.build(configs["lcn"])
    conv, local = cnn[0], lcn[0]
    assert isinstance(local, layers.LocallyConnected) and local.out_size == (10, 10)
    with torch.no_grad():
        local.weight.copy_(conv.weight.reshape(1, 32, 9).expand_as(local.weight))
        local.bias.copy_(conv.bias.reshape(32, 1).expand_as(local.bias))
        for a, b in zip(list(cnn)[1:], list(lcn)[1:]):
            b.load_state_dict(a.state_dict())
    x = torch.randn(4, 1, 12, 12)
    torch.testing.assert_close(lcn(x), cnn(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        local.weight[5].add_(1.0)  # one position's filter changes: only that position's outputs move
    assert not torch.allclose(lcn(x), cnn(x))


def test_lcn_follows_its_geometry_source() -> None:
    custom = {"model.cnn.conv": [{"channels": 4, "kernel": 5, "padding": 2, "pool": 2}], "model.cnn.hidden": [16]}
    configs = models.resolve(params(models=["cnn", "lcn"], **custom), (1, 40), 10)
    assert configs["lcn"].settings["conv"] == configs["cnn"].settings["conv"] and configs["lcn"].settings["hidden"] == [
        16
    ]
    with pytest.raises(ParamsError, match=r"model.lcn.geometry: 'mlp' has no conv blocks to copy"):
        models.resolve(
            params(models=["mlp", "lcn"], reference="mlp", **{"model.lcn": {"geometry": "mlp"}}), (1, 40), 10
        )


def test_mnist1d_reference_models_match_the_authors_counts() -> None:
    configs = models.resolve(params(models=["mnist1d_cnn", "mnist1d_mlp", "linear"], reference=None), (1, 40), 10)
    modules = built(configs)
    assert {m: models.count_params(module) for m, module in modules.items()} == {
        "mnist1d_cnn": 5_210,
        "mnist1d_mlp": 15_210,
        "linear": 410,
    }
    convs = [layer for layer in modules["mnist1d_cnn"] if isinstance(layer, nn.Conv1d)]
    assert [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [(5, 2, 1), (3, 2, 1), (3, 2, 1)]
    assert not any(isinstance(layer, nn.MaxPool1d) for layer in modules["mnist1d_cnn"])
    residual = next(layer for layer in modules["mnist1d_mlp"] if isinstance(layer, layers.Residual))
    h = torch.randn(2, 100)
    assert torch.equal(residual(h), h + residual.layer(h))


def test_deeper_mlp_is_matched_too() -> None:
    configs = models.resolve(params(**{"model.mlp.depth": 2}), (1, 28, 28), 10)
    counts = {m: models.count_params(module) for m, module in built(configs).items()}
    assert configs["mlp"].settings["depth"] == 2 and abs(counts["mlp"] - counts["cnn"]) / counts["cnn"] <= 0.01


def test_match_none_uses_fixed_width() -> None:
    configs = models.resolve(params(**{"model.mlp.match": "none", "model.mlp.width": 64}), (1, 28, 28), 10)
    assert configs["mlp"].settings["width"] == 64


def test_models_are_sized_against_the_reference_not_the_first_entry() -> None:
    configs = models.resolve(params(models=["linear", "mlp", "cnn"], reference="cnn"), (1, 28, 28), 10)
    assert configs["mlp"].settings["width"] == 873
    with pytest.raises(ParamsError, match=r"model.mlp: cannot match the reference linear's 7,850 parameters"):
        models.resolve(params(models=["linear", "mlp"], reference=None), (1, 28, 28), 10)


def test_image_smaller_than_receptive_field_is_a_params_error() -> None:
    with pytest.raises(ParamsError, match=r"model.cnn.conv.0: input of size 2x2 is too small"):
        models.resolve(params(), (1, 2, 2), 10)


def test_bad_settings_name_the_alias_and_the_allowed_keys() -> None:
    with pytest.raises(
        ParamsError, match=r"unknown key 'model.cnn.conv.0.stride'; allowed keys here: channels, kernel"
    ):
        params(**{"model.cnn.conv": [{"channels": 8, "kernel": 3, "padding": 0, "pool": 2, "stride": 2}]})
    with pytest.raises(ParamsError, match=r"model.mlp.depth: Input should be greater than 0 \(got 0\)"):
        params(**{"model.mlp.depth": 0})
    with pytest.raises(ParamsError, match=r"model.mine.builder: expected \"package.module:function\", got 'nocolon'"):
        params(models=["cnn", "mine"], **{"model.mine": {"builder": "nocolon"}})


def test_an_alias_may_name_a_registered_architecture() -> None:
    wide = {
        "model.wide": {"arch": "cnn", "conv": [{"channels": 64, "kernel": 3, "padding": 0, "pool": 2}], "hidden": [128]}
    }
    configs = models.resolve(params(models=["cnn", "wide"], **wide), (1, 28, 28), 10)
    assert configs["wide"].arch == "cnn" and configs["wide"].label == "wide" and configs["cnn"].label == "CNN"
    assert built(configs)["wide"][0].out_channels == 64


def test_a_user_builder_from_any_module_is_built_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_zoo.py").write_text(
        "import torch\n"
        "def tiny(input_shape, num_classes, hidden=16):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[-1] * input_shape[-2], hidden),\n"
        "                               torch.nn.ReLU(), torch.nn.Linear(hidden, num_classes))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    configs = models.resolve(
        params(models=["cnn", "tiny"], **{"model.tiny": {"builder": "my_zoo:tiny", "hidden": 7}}), (1, 8, 8), 10
    )
    source = hashlib.sha256((tmp_path / "my_zoo.py").read_bytes()).hexdigest()  # the module is part of the config
    assert configs["tiny"].arch == "builder"
    assert configs["tiny"].settings == {"builder": "my_zoo:tiny", "hidden": 7, "source_sha256": source}
    assert models.count_params(models.build(configs["tiny"])) == 64 * 7 + 7 + 7 * 10 + 10
    sys.modules.pop("my_zoo", None)


def test_ladder_needs_the_dense_local_and_shared_models_of_one_geometry() -> None:
    assert models.ladder(models.resolve(params(models=LADDER), (1, 8, 8), 10)) == models.Ladder("mlp", "lcn", "cnn")
    assert models.ladder(models.resolve(params(), (1, 8, 8), 10)) is None
    assert models.ladder(models.resolve(params(models=["cnn", "lcn"]), (1, 8, 8), 10)) is None


def test_built_from_config_round_trips_weights() -> None:
    config = models.resolve(params(), (3, 32, 32), 10)["cnn"]
    torch.manual_seed(0)
    first = models.build(config)
    second = models.build(config)
    second.load_state_dict(first.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(first(x), second(x))


def test_pool_before_relu_equals_the_textbook_order_in_outputs_and_gradients() -> None:
    config = models.resolve(params(), (1, 28, 28), 10)["cnn"]
    torch.manual_seed(0)
    fast = models.build(config)
    textbook = nn.Sequential(fast[0], nn.ReLU(), nn.MaxPool2d(2), *list(fast)[3:])
    x = torch.randn(16, 1, 28, 28)
    grads = []
    for model in (fast, textbook):
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        assert torch.equal(out, textbook(x))
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_validating_params_and_the_model_section_loads_no_torch() -> None:
    """download and an untuned tune stage validate params.yaml without paying torch's import."""
    import subprocess

    code = (
        "import sys; from pipeline.params import load_params; p = load_params('params.yaml'); "
        "from pipeline.core import models; assert models.REGISTRY['lcn']; print('torch' in sys.modules)"
    )
    from tests.helpers import ROOT

    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
