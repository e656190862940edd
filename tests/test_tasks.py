"""Each task's data shapes, splits, corruption and metrics."""

import pytest
import torch

from harness import HarnessError
from harness.tasks.imbalanced import Imbalanced, class_shares
from harness.tasks.mnist import MNIST, load_mnist
from harness.tasks.regression import Regression, synthetic_function
from tests.conftest import SHARED_DATA


def test_synthetic_regression_shapes_and_clean_evaluation_targets():
    task = Regression(n_train=400, n_val=100, n_test=200, noise=0.0, outlier_fraction=0.25, outlier_scale=10.0)
    data = task.load()
    assert data.train.x.shape == (400, 8) and data.train.y.shape == (400, 1)
    assert data.val.y.shape == (100, 1) and data.test.y.shape == (200, 1)
    for split in (data.val, data.test):  # held-out targets are the clean function
        assert torch.allclose(split.y.squeeze(1), synthetic_function(split.x), atol=1e-5)
    corrupted = (data.train.y.squeeze(1) - synthetic_function(data.train.x)).abs() > 1e-4
    assert corrupted.sum().item() == 100  # exactly 25% of the training targets
    assert task.model()(data.train.x).shape == (400, 1)


def test_regression_data_is_fixed_by_data_seed():
    a, b, c = Regression(data_seed=1).load(), Regression(data_seed=1).load(), Regression(data_seed=2).load()
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)


def test_diabetes_ships_with_sklearn_and_is_standardised():
    task = Regression(dataset="diabetes")
    data = task.load()
    assert len(data.train) + len(data.val) + len(data.test) == 442 and data.train.x.shape[1] == 10
    assert data.train.y.mean().abs() < 1e-5 and data.train.x.mean(0).abs().max() < 1e-5
    assert task.model()(data.test.x).shape == (len(data.test), 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"outlier_fraction": 1.0}, "outlier_fraction"),
        ({"outlier_fraction": -0.1}, "outlier_fraction"),
        ({"dataset": "boston"}, "allowed: synthetic, diabetes"),
        ({"n_train": 0}, "n_train"),
        ({"noise": -1}, "noise"),
    ],
)
def test_regression_refuses_bad_knobs(kwargs, message):
    with pytest.raises(HarnessError, match=message):
        Regression(**kwargs)


def test_synthetic_imbalanced_has_the_requested_skew():
    task = Imbalanced(imbalance_ratio=20, n_train=4200, n_val=100, n_test=100)
    data = task.load()
    counts = torch.bincount(data.train.y, minlength=2).float()
    assert counts[0] / counts[1] == pytest.approx(20, rel=0.25)
    assert task.minority_class == 1
    m = task.metrics(task.model()(data.test.x), data.test.y)
    assert {"accuracy", "macro_f1", "balanced_accuracy", "minority_recall", "average_precision"} <= set(m)


def test_class_shares_decay_exponentially_to_the_ratio():
    s = class_shares(5, 100.0)
    assert sum(s) == pytest.approx(1.0) and s[0] / s[-1] == pytest.approx(100.0)
    assert s[1] / s[2] == pytest.approx(s[2] / s[3])


@pytest.mark.parametrize("ratio", [0.5, "x"])
def test_imbalance_ratio_below_one_is_refused(ratio):
    with pytest.raises(HarnessError, match="imbalance_ratio"):
        Imbalanced(imbalance_ratio=ratio)


def test_mnist_reads_idx_files_through_torchvision(tiny_mnist):
    task = MNIST(data_dir=str(tiny_mnist), download=False, val_size=50)
    data = task.load()
    assert (
        data.train.x.shape == (250, 1, 28, 28) and data.val.x.shape == (50, 1, 28, 28) and data.test.x.shape == (100, 1, 28, 28)
    )
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    assert task.model()(data.test.x).shape == (100, 10)
    assert MNIST(data_dir=str(tiny_mnist), model="cnn", val_size=50).model()(data.test.x).shape == (100, 10)
    raw = MNIST(data_dir=str(tiny_mnist), normalize="none", val_size=50).load()
    assert raw.test.x.max().item() == 255.0


def test_label_noise_flips_that_share_of_training_labels_only(tiny_mnist):
    clean = MNIST(data_dir=str(tiny_mnist), download=False, val_size=50).load()
    noisy = MNIST(data_dir=str(tiny_mnist), download=False, val_size=50, label_noise=0.4).load()
    flipped = clean.train.y != noisy.train.y
    assert flipped.sum().item() == round(0.4 * 250)  # every chosen label moves to another class
    assert torch.equal(clean.train.x, noisy.train.x)
    assert torch.equal(clean.val.y, noisy.val.y) and torch.equal(clean.test.y, noisy.test.y)
    again = MNIST(data_dir=str(tiny_mnist), download=False, val_size=50, label_noise=0.4).load()
    assert torch.equal(again.train.y, noisy.train.y)  # fixed by the data seed
    assert set(noisy.train.y[flipped].tolist()) - set(range(10)) == set()
    with pytest.raises(HarnessError, match=r"task.label_noise must be a number in \[0, 1\)"):
        MNIST(data_dir=str(tiny_mnist), label_noise=1.5)


def test_long_tailed_mnist_has_balanced_test_and_decaying_train(tiny_mnist):
    task = Imbalanced(dataset="mnist_lt", imbalance_ratio=10, data_dir=str(tiny_mnist), download=False, val_size=50)
    data = task.load()
    counts = torch.bincount(data.train.y, minlength=10)
    assert counts[0] >= counts[9] * 5 and counts[9] >= 1
    assert torch.bincount(data.test.y, minlength=10).unique().numel() == 1  # balanced
    assert task.minority_class == 9


def test_missing_mnist_without_download_says_where_to_put_it(tmp_path):
    with pytest.raises(HarnessError, match=r"MNIST is not in .*MNIST/raw.*train-images-idx3-ubyte"):
        load_mnist(tmp_path, download=False)


def test_real_mnist_from_shared_data():
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip("../shared/data/MNIST/raw is not beside this checkout")
    xtr, ytr, xte, yte = load_mnist(SHARED_DATA, download=False)
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert torch.bincount(ytr).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_real_fashion_mnist_from_shared_data_is_normalised_with_its_own_statistics():
    if not (SHARED_DATA / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists():
        pytest.skip("../shared/data/FashionMNIST/raw is not beside this checkout")
    xtr, ytr, xte, yte = load_mnist(SHARED_DATA, download=False, dataset="fashion_mnist")
    assert xtr.shape == (60000, 28, 28) and torch.bincount(ytr).tolist() == [6000] * 10
    assert torch.bincount(yte).tolist() == [1000] * 10
    data = MNIST(data_dir=str(SHARED_DATA), dataset="fashion_mnist", download=False, n_train=20000).load()
    assert abs(data.train.x.mean().item()) < 0.02 and abs(data.train.x.std().item() - 1) < 0.02  # its mean/std, not MNIST's
    assert not torch.equal(xtr, load_mnist(SHARED_DATA, download=False)[0])


def test_fashion_mnist_is_read_from_its_own_folder(tiny_mnist):
    with pytest.raises(
        HarnessError, match=r"FashionMNIST is not in .*FashionMNIST/raw.*set data_dir to the folder that holds FashionMNIST/raw"
    ):
        MNIST(data_dir=str(tiny_mnist), dataset="fashion_mnist", download=False).load()
    with pytest.raises(HarnessError, match=r"task.dataset='kmnist' is unknown; allowed: mnist, fashion_mnist"):
        MNIST(dataset="kmnist")
    task = Imbalanced(dataset="fashion_mnist_lt", data_dir=str(tiny_mnist), download=False)
    assert task.sources()[0].parent.name == "raw" and task.sources()[0].parent.parent.name == "FashionMNIST"
    assert Imbalanced(dataset="synthetic").sources() == []  # generated data: no files to hash


def test_segmentation_masks_follow_the_foreground_share_and_metrics_score_them():
    from harness.tasks.segmentation import Segmentation, segmentation_metrics

    for share in (0.03, 0.2):
        data = Segmentation(foreground=share, n_train=400, n_val=50, n_test=50).load()
        assert data.train.x.shape == (400, 1, 32, 32) and data.train.y.shape == (400, 32, 32)
        assert abs(data.train.y.float().mean().item() - share) < share * 0.3  # the discs cover about that share
    y = data.test.y
    perfect = torch.nn.functional.one_hot(y, 2).movedim(-1, 1).float()
    scores = segmentation_metrics(perfect, y)
    assert scores["dice"].item() == scores["iou"].item() == scores["pixel_accuracy"].item() == 1.0
    background = segmentation_metrics(torch.stack([torch.ones_like(y), torch.zeros_like(y)], 1).float(), y)
    assert background["dice"].item() == 0.0 and background["pixel_accuracy"].item() == pytest.approx(1 - y.float().mean().item())
    assert Segmentation().model()(data.test.x[:3]).shape == (3, 2, 32, 32)
    with pytest.raises(HarnessError, match=r"task.foreground must be a share of pixels in \(0, 0.3\]"):
        Segmentation(foreground=0.5)


def test_keras_init_and_noisy_validation(tiny_mnist):
    task = MNIST(data_dir=str(tiny_mnist), download=False, val_size=100, hidden=[84], init="keras")
    first, last = task.model()[1], task.model()[3]
    assert first.bias.abs().sum() == 0 and last.bias.abs().sum() == 0  # Keras: zero biases
    bound = (6 / (784 + 84)) ** 0.5  # Glorot uniform
    assert first.weight.abs().max() <= bound and first.weight.abs().max() > 0.9 * bound
    with pytest.raises(HarnessError, match=r"task.init='he' is unknown; allowed: torch, keras"):
        MNIST(init="he")
    clean = MNIST(data_dir=str(tiny_mnist), download=False, val_size=100, label_noise=0.4).load()
    noisy = MNIST(data_dir=str(tiny_mnist), download=False, val_size=100, label_noise=0.4, noisy_validation=True).load()
    assert (noisy.val.y != clean.val.y).sum().item() == 40 and torch.equal(noisy.test.y, clean.test.y)
    assert torch.equal(noisy.train.y, clean.train.y)
