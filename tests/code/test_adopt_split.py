"""Where an adopted model splits, what F_f holds, the preprocessing it records, and its checkpoint."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import timm
import torch
import torchvision.models as tvm
from safetensors.torch import save_file

from lau.adopt import AdoptedModel, adopt
from lau.checkpoint import CONFIG, WEIGHTS, canonical_safetensors, load_checkpoint, save_checkpoint
from lau.features import cache_key
from lau.zoo import TIMM, TORCHVISION, build_net, find_head, head_groups, resolve_preprocessing

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("library, name, head, depths", [
    (TORCHVISION, "resnet18", "fc", 1),
    (TORCHVISION, "resnext50_32x4d", "fc", 1),
    (TORCHVISION, "wide_resnet50_2", "fc", 1),
    (TORCHVISION, "vgg11", "classifier.6", 3),
    (TORCHVISION, "mobilenet_v2", "classifier.1", 1),
    (TORCHVISION, "mobilenet_v3_small", "classifier.3", 2),
    (TORCHVISION, "efficientnet_b0", "classifier.1", 1),
    (TORCHVISION, "convnext_tiny", "classifier.2", 1),
    (TORCHVISION, "regnet_y_400mf", "fc", 1),
    (TORCHVISION, "vit_b_16", "heads.head", 1),
    (TORCHVISION, "swin_t", "head", 1),
    (TORCHVISION, "densenet121", "classifier", 1),
    (TIMM, "resnet18", "fc", 1),
    (TIMM, "convnext_atto", "head.fc", 1),
    (TIMM, "vit_tiny_patch16_224", "head", 1),
    (TIMM, "efficientnet_b0", "classifier", 1),
])
def test_the_classification_module_is_found_for_each_family(library: str, name: str, head: str,
                                                            depths: int) -> None:
    net, _ = build_net(library, name, 5, 32)
    assert find_head(net, library) == head
    if library == TORCHVISION:
        assert len(head_groups(net, head)) == depths


def test_vgg_classifier_splits_at_each_hidden_linear_layer() -> None:
    net, _ = build_net(TORCHVISION, "vgg11", 5, 32)
    assert head_groups(net, "classifier.6") == [["classifier.0", "classifier.1", "classifier.2"],
                                                ["classifier.3", "classifier.4", "classifier.5"],
                                                ["classifier.6"]]


@pytest.mark.parametrize("arch, make, depths", [
    ("torchvision:mobilenet_v3_small", lambda: tvm.mobilenet_v3_small(num_classes=5), 2),
    ("torchvision:densenet121", lambda: tvm.densenet121(num_classes=5), 1),
    ("timm:vit_tiny_patch16_224", lambda: timm.create_model("vit_tiny_patch16_224", num_classes=5, img_size=32), 1),
])
def test_features_then_head_give_the_networks_output(arch: str, make, depths: int) -> None:
    torch.manual_seed(0)
    net = make().eval()
    model = adopt(arch, net.state_dict(), num_classes=5, image_size=32, mean=MEAN, std=STD)
    assert model.num_blocks == depths + 1
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = net((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
        for depth in range(1, depths + 1):
            features = model.forward_features(x, depth)
            assert torch.allclose(model.forward_head(features, depth), expected, atol=1e-5)
            assert torch.allclose(model.head(depth)(features), expected, atol=1e-5)
            pre = model.forward_head(features, depth, pre_logits=True)
            assert torch.allclose(model.blocks[-1](pre), expected, atol=1e-5)  # as lau.metrics reads it


@pytest.mark.parametrize("arch, make", [
    ("torchvision:mobilenet_v3_small", lambda: tvm.mobilenet_v3_small(num_classes=5)),
    ("timm:vit_tiny_patch16_224", lambda: timm.create_model("vit_tiny_patch16_224", num_classes=5, img_size=32)),
])
def test_feature_modules_hold_every_tensor_but_the_heads(arch: str, make) -> None:
    """F_f's modules cover the network exactly once outside F_c (a ViT's class token and position
    table included): they are what the feature cache key hashes and what LAU freezes."""
    model = adopt(arch, make().state_dict(), num_classes=5, image_size=32)
    for depth in range(1, model.num_blocks):
        pointers = [t.data_ptr() for m in model.feature_modules(depth) for t in m.state_dict().values()]
        head = set(model.head_keys(depth))
        outside = {v.data_ptr() for k, v in model.state_dict().items() if k not in head}
        assert sorted(pointers) == sorted(outside | {model.normalize.mean.data_ptr(), model.normalize.std.data_ptr()})
        model.freeze_features(depth)
        trainable = {k for k, p in model.net.named_parameters() if p.requires_grad}
        assert trainable == {k for k in head if k.endswith(("weight", "bias"))}
        model.requires_grad_(True)


def test_preprocessing_comes_from_the_weights_metadata_unless_flags_say_otherwise() -> None:
    vit = resolve_preprocessing(TIMM, "vit_tiny_patch16_224")
    assert (vit.image_size, vit.mean, vit.std) == (224, (0.5,) * 3, (0.5,) * 3)
    assert "pretrained_cfg of vit_tiny_patch16_224" in vit.source
    b3 = resolve_preprocessing(TORCHVISION, "efficientnet_b3", weights_meta="EfficientNet_B3_Weights.IMAGENET1K_V1")
    assert (b3.image_size, b3.mean, b3.std) == (300, MEAN, STD) and "EfficientNet_B3_Weights" in b3.source
    default = resolve_preprocessing(TORCHVISION, "resnet18")
    assert (default.image_size, default.mean) == (224, MEAN) and "ResNet18_Weights" in default.source
    flags = resolve_preprocessing(TORCHVISION, "resnet18", image_size=64, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert (flags.image_size, flags.mean, flags.std, flags.source) == (64, (0.5,) * 3, (0.25,) * 3, "flags")
    partial = resolve_preprocessing(TIMM, "vit_tiny_patch16_224", image_size=32)
    assert (partial.image_size, partial.mean) == (32, (0.5,) * 3) and partial.source.startswith("flags (image_size)")


def test_the_feature_cache_key_follows_the_preprocessing() -> None:
    torch.manual_seed(0)
    state = tvm.resnet18(num_classes=4).state_dict()
    one = adopt("torchvision:resnet18", state, num_classes=4, image_size=32, mean=MEAN, std=STD)
    same = adopt("torchvision:resnet18", state, num_classes=4, image_size=32, mean=MEAN, std=STD)
    other_std = adopt("torchvision:resnet18", state, num_classes=4, image_size=32, mean=MEAN, std=(0.5,) * 3)
    other_size = adopt("torchvision:resnet18", state, num_classes=4, image_size=64, mean=MEAN, std=STD)
    assert cache_key(one, 1, "v1") == cache_key(same, 1, "v1")
    assert len({cache_key(m, 1, "v1") for m in (one, other_std, other_size)}) == 3


def test_the_checkpoint_holds_the_teams_keys_and_rebuilds_without_unpickling(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", num_classes=4, img_size=32).eval()
    model = adopt("timm:vit_tiny_patch16_224", net.state_dict(), num_classes=4, class_names=tuple("abcd"),
                  image_size=32)
    folder = save_checkpoint(model, tmp_path / "ckpt")
    config = json.loads((folder / CONFIG).read_text())
    assert config["spec"]["arch"] == "timm:vit_tiny_patch16_224" and config["spec"]["num_classes"] == 4
    assert config["spec"]["extra"] == {"head": "head", "builder_kwargs": {"img_size": 32},
                                       "preprocessing": "flags (image_size) + timm pretrained_cfg of vit_tiny_patch16_224"}
    assert config["spec"]["mean"] == [0.5] * 3 and config["spec"]["image_size"] == 32

    def no_unpickling(*_args, **_kwargs):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    loaded, _ = load_checkpoint(folder)

    assert isinstance(loaded, AdoptedModel) and type(loaded.net) is type(net)
    assert loaded.spec == model.spec and not loaded.training
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in net.state_dict().items())
    tampered = {**config, "spec": {**config["spec"], "extra": {**config["spec"]["extra"], "head": "nohead"}}}
    (folder / CONFIG).write_text(json.dumps(tampered))
    from lau.errors import BadInput

    with pytest.raises(BadInput, match="'nohead' does not exist"):
        load_checkpoint(folder)


def test_equal_tensors_give_equal_safetensors_bytes_whatever_their_order(tmp_path: Path) -> None:
    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, 2), "c": torch.zeros(1, dtype=torch.int64)}
    save_file(tensors, str(tmp_path / "one"), {"z": "1", "k": "2"})
    save_file(dict(reversed(tensors.items())), str(tmp_path / "two"), {"k": "2", "z": "1"})
    one, two = canonical_safetensors(tmp_path / "one"), canonical_safetensors(tmp_path / "two")
    assert one.read_bytes() == two.read_bytes()
    assert WEIGHTS.endswith(".safetensors")


def test_building_an_adopted_network_leaves_other_threads_initialisation_alone() -> None:
    """Adoption skips weight initialisation (the team's weights overwrite it) in its own thread only:
    a model trained concurrently in another thread (a Prefect task) still starts from seeded init."""
    import threading

    from lau.zoo import _SkipInit

    torch.manual_seed(0)
    reference = torch.nn.Linear(64, 64).weight.detach().clone()
    entered, built = threading.Event(), threading.Event()
    seen: dict[str, torch.Tensor] = {}

    def adopting() -> None:
        with _SkipInit():
            entered.set()
            built.wait(timeout=30)

    def training() -> None:
        entered.wait(timeout=30)
        torch.manual_seed(0)
        seen["weight"] = torch.nn.Linear(64, 64).weight.detach().clone()
        built.set()

    threads = [threading.Thread(target=adopting), threading.Thread(target=training)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert torch.equal(seen["weight"], reference)
