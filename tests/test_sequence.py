"""Sequences: the data, CTC and per-position cross-entropy with their decoders, the metrics, and a run."""

import pytest
import torch
import torch.nn.functional as F

from harness.losses import CTCLoss, PositionCrossEntropy
from harness.tasks.sequence import PAD, Sequence, edit_distance, sequence_metrics
from tests.conftest import mlflow_runs, run_cli, write_idx_mnist


@pytest.mark.parametrize(
    "a, b, d",
    [
        ([], [], 0),
        ([1, 2, 3], [1, 2, 3], 0),
        ([1, 2, 3], [1, 3], 1),
        ([1, 2], [2, 1], 2),
        ([], [4, 4], 2),
        ([7, 1, 7], [1, 7, 1, 7], 1),
    ],
)
def test_edit_distance(a, b, d):
    assert edit_distance(a, b) == d


def frames(classes: list[int], n_classes: int = 11) -> torch.Tensor:
    """Logits [1, T, C + 1] whose best class per frame is the given one."""
    return F.one_hot(torch.tensor([classes]), n_classes).float() * 5


def test_ctc_greedy_decoding_merges_repeats_and_drops_blanks():
    blank = 10
    assert CTCLoss.decode(frames([blank, 3, 3, blank, 3, 5, 5, blank])) == [[3, 3, 5]]
    assert CTCLoss.decode(frames([blank] * 6)) == [[]]


def test_ctc_loss_is_torchs_on_padded_labels():
    torch.manual_seed(0)
    logits = torch.randn(3, 12, 11)
    target = torch.tensor([[1, 2, PAD, PAD], [4, 4, 4, PAD], [7, 8, 9, 0]])
    expected = F.ctc_loss(
        logits.log_softmax(-1).transpose(0, 1),
        torch.tensor([1, 2, 4, 4, 4, 7, 8, 9, 0]),
        torch.full((3,), 12),
        torch.tensor([2, 3, 4]),
        blank=10,
        zero_infinity=True,
    )
    assert CTCLoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_position_cross_entropy_pools_frames_into_slots():
    # 8 frames, 4 slots of 2: slot i's frames both say class 2i; the last slot says padding
    logits = frames([0, 0, 2, 2, 4, 4, PAD, PAD])
    assert PositionCrossEntropy.decode(logits, 4) == [[0, 2, 4]]
    target = torch.tensor([[0, 2, 4, PAD]])
    expected = F.cross_entropy(logits.reshape(4, 2, 11).mean(1), target[0])
    assert PositionCrossEntropy()(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_metrics_exact_and_character_error_rate():
    y = torch.tensor([[1, 2, PAD], [3, PAD, PAD]])
    m = sequence_metrics([[1, 2], [4]], y)
    assert m["exact"].item() == pytest.approx(0.5)
    assert m["cer"].item() == pytest.approx(1 / 3)


def test_sequences_are_built_from_disjoint_pools_and_aligned_without_jitter():
    task = Sequence(max_length=3, jitter=0, n_train=50, n_val=20, n_test=20)
    data = task.load()
    assert data.train.x.shape == (50, 1, 8, 24) and data.train.y.shape == (50, 3)
    lengths = (data.train.y != PAD).sum(1)
    assert lengths.min() >= 1 and lengths.max() <= 3
    # jitter 0: digit k fills columns 8k..8k+7, nothing beyond the sequence's length
    for x, n in zip(data.train.x[:, 0], lengths):
        assert x[:, 8 * int(n) :].abs().sum() == 0 and x[:, 8 * int(n) - 8 : 8 * int(n)].abs().sum() > 0
    pools = task.pools()
    assert sum(len(p[1]) for p in pools) == 1797  # all the bundled digits, split three ways
    assert task.model()(data.train.x[:2]).shape == (2, 24, 11)


@pytest.mark.parametrize("loss", ["ctc", "position_ce"])
def test_both_losses_run_and_land_in_mlflow(tmp_path, loss):
    proc = run_cli(
        "task=sequence",
        f"loss={loss}",
        "epochs=2",
        "task.n_train=300",
        "task.n_val=100",
        "task.n_test=100",
        "optimizer.lr=0.01",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (r,) = mlflow_runs(tmp_path, "sequence")[1]
    assert r.info.status == "FINISHED"
    assert {"test/exact", "test/cer", "val/exact", "train/cer"} <= set(r.data.metrics)
    assert 0.0 <= r.data.metrics["test/exact"] <= 1.0 and r.data.metrics["test/cer"] >= 0.0


def test_a_non_sequence_loss_is_refused(tmp_path):
    proc = run_cli("task=sequence", "loss=ce", cwd=tmp_path)
    assert proc.returncode == 2 and "losses that fit sequence: ctc, position_ce" in proc.stderr


def test_mnist_strings_draw_each_split_from_its_own_pool_of_images(tmp_path):
    """Digit strings from MNIST: training and validation sequences from disjoint parts of MNIST's training images
    (5,000 held out, or a sixth of a smaller copy), test sequences from its test images; 28-pixel-high canvases."""
    data = write_idx_mnist(tmp_path / "data", n_train=600, n_test=100)
    task = Sequence(dataset="mnist", data_dir=str(data), download=False, max_length=3, jitter=14, n_train=50, n_val=20, n_test=20)
    (xtr, _), (xva, _), (xte, _) = task.pools()
    assert (len(xtr), len(xva), len(xte)) == (500, 100, 100)
    flat = lambda x: {tuple(v) for v in x.reshape(len(x), -1).tolist()}  # noqa: E731
    assert not flat(xtr) & flat(xva)  # no image in both pools
    d = task.load()
    assert d.train.x.shape == (50, 1, 28, 3 * (28 + 14)) and d.test.y.shape == (20, 3)


@pytest.mark.parametrize("stride, seen", [(1, 9), (2, 16), (4, 26)])
def test_a_frame_sees_more_columns_at_a_larger_frame_stride(stride, seen):
    """task.frame_stride pools the width: a frame per `stride` columns, and each frame's view widens so that at 4
    it covers most of a 28-pixel MNIST digit (at 1 it sees 9 columns: a whole 8-pixel digit, a third of that one)."""
    torch.manual_seed(0)
    model = Sequence(dataset="mnist", max_length=2, jitter=0, frame_stride=stride).model()
    base = torch.rand(1, 1, 28, 120)
    out = model(base)
    assert out.shape == (1, 120 // stride, 11)
    middle = out.shape[1] // 2
    cols = []
    for c in range(120):
        x = base.clone()
        x[0, 0, :, c] += 5.0
        if (model(x)[0, middle] - out[0, middle]).abs().max() > 1e-6:
            cols.append(c)
    assert max(cols) - min(cols) + 1 == seen


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"frame_stride": 3}, "task.frame_stride must be one of 1, 2, 4 (image columns per frame), got 3"),
        ({"frame_stride": True}, "task.frame_stride must be one of 1, 2, 4"),
    ],
)
def test_a_frame_stride_that_does_not_fit_is_refused(kwargs, message):
    from harness import HarnessError

    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Sequence(**kwargs)


def test_a_stacked_sweep_at_frame_stride_4_trains_both_losses_and_logs_the_knob(tmp_path):
    data = write_idx_mnist(tmp_path / "data", n_train=600, n_test=100)
    knobs = ("task.max_length=3", "task.jitter=14", "task.frame_stride=4", "task.n_train=64", "task.n_val=32", "task.n_test=32")
    proc = run_cli(
        "--multirun",
        "task=sequence",
        "task.dataset=mnist",
        f"data_dir={data}",
        "loss=ctc,position_ce",
        "epochs=1",
        *knobs,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = [r for r in mlflow_runs(tmp_path, "sequence")[1] if "loss" in r.data.params]
    assert sorted(r.data.params["loss"] for r in jobs) == ["ctc", "position_ce"]
    assert {r.data.params["task.frame_stride"] for r in jobs} == {"4"} and {r.info.status for r in jobs} == {"FINISHED"}
