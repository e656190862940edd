"""MNIST and Fashion-MNIST from their four IDX files, converted once into normalised tensors.

The IDX files are read from ``<data_dir>/MNIST/raw`` (``<data_dir>/FashionMNIST/raw`` for
``dataset=fashion_mnist``) directly, their headers checked: a file of random bytes is one clear line,
not a traceback. torchvision downloads them there when they are missing and ``download`` is true;
offline, Debian's package ``dataset-fashion-mnist`` holds Fashion-MNIST's files (gzipped, under
/usr/share/datasets/fashion-mnist/). The validation split is drawn from the 60k training images; the
test split is the official 10k.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import struct
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from harness import HarnessError
from harness.tasks import (
    ClassificationTask,
    Data,
    Split,
    check_bool,
    check_choice,
    check_fraction,
    check_positive_int,
    check_seed,
    flip_labels,
    split_indices,
)
from harness.tasks.models import check_model, mlp, small_cnn

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# dataset -> (its folder under data_dir, torchvision's class, the mean and std of its training pixels in [0, 1])
DATASETS = {"mnist": ("MNIST", "MNIST", 0.1307, 0.3081), "fashion_mnist": ("FashionMNIST", "FashionMNIST", 0.2860, 0.3530)}
NORMALIZATIONS = ("standard", "unit", "none")
INITS = ("torch", "keras")  # torch: PyTorch's default (Kaiming uniform, a=sqrt(5)); keras: Glorot uniform, zero biases
IDX_MAGIC = {"images": 2051, "labels": 2049}


def read_idx(path: Path, kind: str, count: int | None = None) -> torch.Tensor:
    """An uncompressed IDX file as a uint8 tensor ([N, 28, 28] images or [N] labels), its header checked."""
    blob = path.read_bytes()
    header = 16 if kind == "images" else 8
    bad = f"{path} is not an MNIST-format IDX {kind} file"
    if len(blob) < header:
        raise HarnessError(f"{bad} (only {len(blob)} bytes)")
    magic, n = struct.unpack(">II", blob[:8])
    if magic != IDX_MAGIC[kind]:
        raise HarnessError(f"{bad} (magic number {magic}, expected {IDX_MAGIC[kind]}); replace it with the real file")
    shape = (n, 28, 28) if kind == "images" else (n,)
    if kind == "images" and struct.unpack(">II", blob[8:16]) != (28, 28):
        raise HarnessError(f"{bad} (images of {struct.unpack('>II', blob[8:16])} pixels, expected 28 x 28)")
    if len(blob) != header + math.prod(shape):
        raise HarnessError(f"{bad} (its header announces {n} items, the file holds {len(blob) - header} bytes of data)")
    if count is not None and n != count:
        raise HarnessError(f"{path} does not match its images: {n} labels for {count} images")
    data = torch.frombuffer(bytearray(blob), dtype=torch.uint8, offset=header).reshape(shape)
    if kind == "labels" and n and int(data.max()) > 9:
        raise HarnessError(f"{bad} (label {int(data.max())}; classes are 0-9)")
    return data


def download_mnist(root: Path, dataset: str = "mnist") -> str | None:
    """Let torchvision fetch the files into root/<folder>/raw; None on success, else why not. A failed
    download leaves no empty folders behind (those it made; nothing else is touched)."""
    folder, cls = DATASETS[dataset][:2]
    made = [p for p in (root / folder / "raw", root / folder, root) if not p.exists()]
    try:
        import torchvision.datasets

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            getattr(torchvision.datasets, cls)(str(root), train=True, download=True)
            getattr(torchvision.datasets, cls)(str(root), train=False, download=True)
    except Exception as e:  # torchvision raises RuntimeError or URLError/OSError when it cannot fetch
        for path in made:  # deepest first; rmdir removes only an empty folder
            with contextlib.suppress(OSError):
                path.rmdir()
        return f"the download failed: {download_reason(e)}"
    return None


def download_reason(e: BaseException) -> str:
    """What went wrong, in one line: torchvision's message ends its first line with a colon and puts
    the reason (the URL error) on the next ones."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    cause = e.__cause__ or e.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} {type(cause).__name__}: {cause}".strip()
    text = text or type(e).__name__
    return text if len(text) <= 400 else text[:400] + " ..."


@functools.lru_cache(maxsize=2)  # a sweep's jobs in one process read the files once
def load_mnist(
    data_dir: str | Path, download: bool = True, dataset: str = "mnist"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images uint8 [60000, 28, 28], train labels, test images, test labels)."""
    root = Path(data_dir).expanduser()
    folder = DATASETS[dataset][0]
    raw = root / folder / "raw"
    if not all((raw / f).is_file() for f in RAW_FILES):
        why = download_mnist(root, dataset) if download else "download=false"
        if why is not None or not all((raw / f).is_file() for f in RAW_FILES):
            raise HarnessError(
                f"{folder} is not in {raw} and {why}. Put the four IDX files ({', '.join(RAW_FILES)}) "
                f"there, or set data_dir to the folder that holds {folder}/raw"
            )
    try:
        out = []
        for images, labels in (RAW_FILES[:2], RAW_FILES[2:]):
            x = read_idx(raw / images, "images")
            out += [x, read_idx(raw / labels, "labels", count=len(x)).long()]
    except OSError as e:
        raise HarnessError(f"cannot read {folder} from {raw}: {e.strerror or e}") from None
    x_train, y_train, x_test, y_test = out
    return x_train, y_train, x_test, y_test


def mnist_files(data_dir: str | Path, dataset: str = "mnist") -> list[Path]:
    """The four IDX files a task reading MNIST (or Fashion-MNIST) from ``data_dir`` uses."""
    raw = Path(data_dir).expanduser() / DATASETS[dataset][0] / "raw"
    return [raw / f for f in RAW_FILES]


def to_inputs(images: torch.Tensor, normalize: str, dataset: str = "mnist") -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28]: standard (the data set's mean/std), unit ([0, 1]) or none (0..255)."""
    x = images.float().unsqueeze(1)
    if normalize == "none":
        return x
    x = x / 255.0
    mean, std = DATASETS[dataset][2:]
    return (x - mean) / std if normalize == "standard" else x


def check_normalize(normalize: str) -> str:
    return check_choice("task.normalize", normalize, NORMALIZATIONS)


def check_dataset(dataset: str) -> str:
    return check_choice("task.dataset", dataset, tuple(DATASETS))


def check_split(n_images: int, n_train: int | None, val_size: int) -> int:
    """The number of training images once the validation images are set aside, checked against the files."""
    if val_size >= n_images:
        raise HarnessError(f"task.val_size={val_size} leaves no training images: the training file holds {n_images}")
    n_train = n_train or n_images - val_size
    if n_train + val_size > n_images:
        raise HarnessError(f"task.n_train={n_train} + task.val_size={val_size} exceeds the {n_images} training images")
    return n_train


def image_model(
    num_classes: int, model: str, hidden: list[int], activation: str, channels: list[int], init: str = "torch"
) -> nn.Module:
    net = (
        small_cnn(num_classes, channels, hidden[0] if hidden else 128)
        if model == "cnn"
        else mlp(28 * 28, num_classes, hidden, activation)
    )
    if init == "keras":  # Keras's Dense and Conv2D defaults: Glorot (Xavier) uniform weights, zero biases
        for layer in net.modules():
            if isinstance(layer, nn.Linear | nn.Conv2d):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
    return net


class MNIST(ClassificationTask):
    name = "mnist"
    num_classes = 10
    primary_metric = "test/accuracy"

    def __init__(
        self,
        data_dir: str = "data",
        dataset: str = "mnist",
        download: bool = True,
        model: str = "mlp",
        hidden: Sequence[int] = (256,),
        activation: str = "relu",
        channels: Sequence[int] = (16, 32),
        normalize: str = "standard",
        val_size: int = 5000,
        n_train: int | None = None,
        data_seed: int = 0,
        label_noise: float = 0.0,
        noisy_validation: bool = False,
        init: str = "torch",
    ):
        self.hidden, self.channels = check_model(model, hidden, activation, channels)
        self.init = check_choice("task.init", init, INITS)
        self.data_dir, self.download = data_dir, check_bool("task.download", download)
        self.dataset = check_dataset(dataset)
        self.model_name, self.normalize, self.activation = model, check_normalize(normalize), activation
        self.val_size = 0 if val_size == 0 else check_positive_int("task.val_size", val_size)  # 0: validate on test
        self.n_train = None if n_train is None else check_positive_int("task.n_train", n_train)
        self.data_seed = check_seed("task.data_seed", data_seed)
        self.label_noise = check_fraction("task.label_noise", label_noise)
        self.noisy_validation = check_bool("task.noisy_validation", noisy_validation)

    def sources(self) -> list[Path]:
        return mnist_files(self.data_dir, self.dataset)

    def load(self) -> Data:
        xtr, ytr, xte, yte = load_mnist(str(self.data_dir), self.download, self.dataset)
        n_train = check_split(len(ytr), self.n_train, self.val_size)
        tr, va = split_indices(len(ytr), [n_train, self.val_size], self.data_seed)

        def inputs(images: torch.Tensor) -> torch.Tensor:
            return to_inputs(images, self.normalize, self.dataset)

        # index the uint8 images before converting: a float copy of all 60k would cost ~190 MB more at peak
        test = Split(inputs(xte), yte)
        # a user's validation split is drawn from the same (noisy) labels as the training split; the test stays clean
        val_y = flip_labels(ytr[va], self.label_noise, self.num_classes, self.data_seed + 1) if self.noisy_validation else ytr[va]
        val = test if self.val_size == 0 else Split(inputs(xtr[va]), val_y)
        train_y = flip_labels(ytr[tr], self.label_noise, self.num_classes, self.data_seed)
        return Data(Split(inputs(xtr[tr]), train_y), val, test)

    def model(self) -> nn.Module:
        return image_model(self.num_classes, self.model_name, self.hidden, self.activation, self.channels, self.init)
