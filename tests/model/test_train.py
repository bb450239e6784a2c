"""The training recipe (lau/train.py): the weights kept are those of the best epoch on the
validation images, the learning rate warms up and decays, augmentation shifts images, and a
report gives train / validation / test accuracy."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lau.config import DataConfig, ModelConfig, TrainConfig
from lau.data import Split, prepare
from lau.train import accuracy_of, augment, augment_shift, lr_factor, train_model


@pytest.fixture(scope="module")
def digits() -> Split:
    """sklearn's digits, 60 per class: 42 train / 6 validation / 12 test images per class."""
    return prepare(DataConfig(dataset="digits", max_per_class=60))


def test_the_best_epoch_on_validation_is_the_one_kept(digits: Split, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation accuracy scripted at 40, 80, 60 %: the weights after epoch 2 come back, not the last."""
    import lau.train

    scripted = iter([(40.0, 2.0), (80.0, 1.0), (60.0, 1.5)])
    snapshots: list[dict[str, torch.Tensor]] = []

    def scripted_validation(model, images, labels):  # noqa: ANN001, ANN202
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(lau.train, "evaluate_images", scripted_validation)
    cfg = TrainConfig(epochs=3, batch_size=32, seed=0)
    model = lau.train.fit(lau.train.new_model(digits, ModelConfig(arch="cnn"), 0), digits.train_images,
                          digits.train_labels, cfg, val=(digits.val_images, digits.val_labels))
    kept = model.state_dict()
    assert len(snapshots) == 3
    assert all(torch.equal(kept[k], snapshots[1][k]) for k in kept), "not the weights of epoch 2"
    assert not all(torch.equal(kept[k], snapshots[2][k]) for k in kept)


@pytest.mark.slow
def test_the_report_gives_the_kept_epoch_and_its_accuracies(digits: Split) -> None:
    cfg = TrainConfig(epochs=5, batch_size=32, lr=0.01, schedule="constant", warmup_epochs=0, seed=0)
    trained = train_model(digits, ModelConfig(arch="cnn"), cfg)
    report = trained.report
    val_by_epoch = [record.val_acc for record in report.history]
    assert report.epochs == 5 and val_by_epoch[report.best_epoch - 1] == max(val_by_epoch)
    assert report.val_acc == pytest.approx(max(val_by_epoch), abs=1e-3)
    assert report.val_acc == accuracy_of(trained.model, digits.val_images, digits.val_labels)
    assert report.test_acc == accuracy_of(trained.model, digits.test_images, digits.test_labels)
    assert report.train_acc == accuracy_of(trained.model, digits.train_images, digits.train_labels)
    assert report.test_acc > 80 and not trained.model.training


@pytest.mark.slow
def test_training_without_some_classes_reports_on_the_rest_only(digits: Split) -> None:
    cfg = TrainConfig(epochs=2, batch_size=32, seed=0)
    trained = train_model(digits, ModelConfig(arch="cnn"), cfg, without=(3,))
    keep = digits.test_labels != 3
    assert trained.report.test_acc == accuracy_of(trained.model, digits.test_images[keep], digits.test_labels[keep])
    again = train_model(digits, ModelConfig(arch="cnn"), cfg, without=(3,))
    for name, tensor in trained.model.state_dict().items():  # seeded: the same weights twice
        assert torch.equal(again.model.state_dict()[name], tensor), name


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    factor = lr_factor(TrainConfig(epochs=4, warmup_epochs=1), epochs=4, steps_per_epoch=10)
    values = [factor(step) for step in range(40)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[9:], values[10:])), "cosine decay is monotone"
    assert values[-1] < 0.01
    constant = lr_factor(TrainConfig(epochs=4, warmup_epochs=0, schedule="constant"), 4, 10)
    assert {constant(step) for step in range(40)} == {1.0}


def test_augmentation_shifts_by_an_eighth_of_the_side_when_asked() -> None:
    assert augment_shift("none", torch.zeros(2, 3, 24, 24, dtype=torch.uint8)) == 0
    assert augment_shift("shift", torch.zeros(2, 3, 24, 24, dtype=torch.uint8)) == 3
    assert augment_shift("shift_flip", torch.zeros(2, 1, 28, 28, dtype=torch.uint8)) == 3


def test_augment_translates_each_image_by_its_own_offset() -> None:
    images = torch.zeros(64, 1, 8, 8)
    images[:, :, 3, 4] = 1.0  # one bright pixel
    shifted = augment(images, 2, False, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    positions = {tuple(torch.nonzero(img[0])[0].tolist()) for img in shifted}
    assert len(positions) > 5, "every image gets its own shift"
    assert all(abs(r - 3) <= 2 and abs(c - 4) <= 2 for r, c in positions)
    flipped = augment(images, 0, True, torch.Generator().manual_seed(0))
    assert {tuple(torch.nonzero(img[0])[0].tolist()) for img in flipped} == {(3, 4), (3, 3)}


def test_finetune_config_still_builds() -> None:
    """The baselines build TrainConfigs by keyword: every recipe field has a default."""
    assert dataclasses.replace(TrainConfig(), epochs=1).epochs == 1
