"""Metric learning: the losses torch lacks (contrastive, the mining), the retrieval metrics, the
embedding task, and runs of it through the CLI."""

import math

import pytest
import torch
import torch.nn.functional as F

from harness.losses_metric import (
    ContrastiveLoss,
    HeadCrossEntropy,
    MarginRankingLoss,
    TripletLoss,
    contrastive_loss,
    distances,
    mine,
)
from harness.metrics import nearest_label_accuracy, retrieval_metrics
from harness.tasks.embedding import Embedding
from tests.conftest import mlflow_runs, run_cli


def test_contrastive_loss_matches_the_issue_example():
    # (0.3^2/2 + 0 + (1-0.8)^2/2 + 0.2^2/2) / 4 = (0.045 + 0.02 + 0.02) / 4
    d, y = torch.tensor([0.3, 1.5, 0.8, 0.2]), torch.tensor([0, 1, 1, 0])
    assert contrastive_loss(d, y, margin=1.0).item() == pytest.approx(0.02125)
    assert contrastive_loss(d, y, margin=1.0, reduction="sum").item() == pytest.approx(0.085)


def test_contrastive_module_uses_every_pair_of_the_batch():
    e = torch.tensor([[0.0, 0.0], [0.3, 0.0], [0.0, 0.5]])
    y = torch.tensor([0, 0, 1])
    # pairs: (0,1) similar d=0.3; (0,2) dissimilar d=0.5; (1,2) dissimilar d=sqrt(0.34)
    d12 = math.sqrt(0.34)
    expected = (0.3**2 / 2 + (1 - 0.5) ** 2 / 2 + (1 - d12) ** 2 / 2) / 3
    assert ContrastiveLoss(dim=2)(torch.cat([e, torch.zeros(3, 10)], 1), y).item() == pytest.approx(expected, rel=1e-5)


# Four points on a line: labels a a b b at positions 0, 1, 1.5, 4
POINTS = torch.tensor([[0.0], [1.0], [1.5], [4.0]])
LABELS = torch.tensor([0, 0, 1, 1])


def test_batch_hard_takes_the_farthest_positive_and_the_nearest_negative():
    a, p, n = mine(distances(POINTS), LABELS, "batch_hard")
    assert a.tolist() == [0, 1, 2, 3]
    assert p.tolist() == [1, 0, 3, 2]
    assert n.tolist() == [2, 2, 1, 1]


def test_semi_hard_takes_the_nearest_negative_farther_than_the_positive_else_the_farthest():
    a, p, n = mine(distances(POINTS), LABELS, "semi_hard")
    triplets = sorted(zip(a.tolist(), p.tolist(), n.tolist()))
    # anchor 0, positive 1 (d=1): negatives at 1.5 and 4, both farther: nearest is 2
    # anchor 1, positive 0 (d=1): negatives at 0.5 (not farther) and 3: takes 3
    # anchor 2, positive 3 (d=2.5): negatives at 1.5 and 0.5, none farther: the farthest, 0
    # anchor 3, positive 2 (d=2.5): negatives at 4 and 3, both farther: nearest is 1
    assert triplets == [(0, 1, 2), (1, 0, 3), (2, 3, 0), (3, 2, 1)]


def test_random_mining_draws_only_valid_pairs_and_is_seeded():
    torch.manual_seed(0)
    y = torch.randint(0, 4, (64,))
    e = torch.randn(64, 8)
    draws = [mine(distances(e), y, "random", torch.Generator().manual_seed(3)) for _ in range(2)]
    a, p, n = draws[0]
    assert (y[a] == y[p]).all() and (a != p).all() and (y[a] != y[n]).all()
    assert all(torch.equal(u, v) for u, v in zip(draws[0], draws[1]))


def test_triplet_and_margin_ranking_losses_on_hand_computed_triplets():
    out = torch.cat([POINTS, torch.zeros(4, 2)], 1)
    # batch_hard triplets above: d(a,p) - d(a,n) + 0.2 per anchor: 1-1.5, 1-0.5, 2.5-0.5, 2.5-3 -> +0.2, clamped
    expected = (0.0 + 0.7 + 2.2 + 0.0) / 4
    assert MarginRankingLoss(dim=1, margin=0.2, mining="batch_hard")(out, LABELS).item() == pytest.approx(expected, abs=1e-5)
    assert TripletLoss(dim=1, margin=0.2, mining="batch_hard")(out, LABELS).item() == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="allowed: random, semi_hard, batch_hard"):
        TripletLoss(dim=1, mining="hardest")


def test_a_batch_without_a_positive_gives_zero_loss_and_a_gradient():
    out = torch.randn(3, 5, requires_grad=True)
    loss = TripletLoss(dim=3)(out, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0 and out.grad is not None


def test_head_cross_entropy_reads_the_logits_after_the_embedding():
    out = torch.randn(6, 4 + 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert HeadCrossEntropy(dim=4)(out, y).item() == pytest.approx(F.cross_entropy(out[:, 4:], y).item())


def test_a_whole_split_is_scored_in_chunks():
    torch.manual_seed(1)
    out, y = torch.randn(300, 4), torch.randint(0, 3, (300,))
    loss = ContrastiveLoss(dim=4)
    loss.CHUNK = 100
    chunks = sum(ContrastiveLoss(dim=4)(out[i : i + 100], y[i : i + 100]).item() for i in range(0, 300, 100)) / 3
    assert loss(out, y).item() == pytest.approx(chunks, rel=1e-5)


def test_retrieval_metrics_against_brute_force():
    torch.manual_seed(2)
    emb, y = torch.randn(40, 3), torch.randint(0, 3, (40,))
    d = torch.cdist(emb, emb)
    d.fill_diagonal_(float("inf"))
    order = d.argsort(1)
    recall, aps = [], []
    for i in range(40):
        rel = (y[order[i]] == y[i]).float()[:39]
        r = int((y == y[i]).sum()) - 1
        recall.append(rel[0].item())
        if r:
            aps.append(sum(rel[:k].sum().item() / k * rel[k - 1].item() for k in range(1, r + 1)) / r)
    got = retrieval_metrics(emb, y)
    assert got["recall_at_1"].item() == pytest.approx(sum(recall) / 40)
    assert got["map_at_r"].item() == pytest.approx(sum(aps) / len(aps), rel=1e-5)


def test_nearest_neighbour_accuracy_matches_scikit_learn():
    from sklearn.neighbors import KNeighborsClassifier

    torch.manual_seed(3)
    g, gy = torch.randn(100, 5), torch.randint(0, 4, (100,))
    q, qy = torch.randn(30, 5), torch.randint(0, 4, (30,))
    expected = (KNeighborsClassifier(1).fit(g.numpy(), gy.numpy()).predict(q.numpy()) == qy.numpy()).mean()
    assert nearest_label_accuracy(q, qy, g, gy).item() == pytest.approx(expected)


def test_digits_embedding_task_loads_offline_and_its_model_gives_embedding_and_logits():
    task = Embedding(dim=16)
    data = task.load()
    assert (len(data.train), len(data.val), len(data.test)) == (1097, 300, 400)
    out = task.model()(data.test.x[:5])
    assert out.shape == (5, 16 + 10)
    assert torch.allclose(out[:, :16].norm(dim=1), torch.ones(5), atol=1e-5)  # L2-normalised embedding
    m = task.metrics(out, data.test.y[:5], gallery=(task.model()(data.train.x), data.train.y))
    assert set(m) == {"recall_at_1", "map_at_r", "knn_accuracy"}


@pytest.mark.parametrize("loss", ["triplet", "contrastive", "margin_ranking", "ce_head"])
def test_each_metric_loss_trains_an_embedding_that_beats_chance(loss):
    # in process, as `python -m harness task=embedding loss=...` runs it (the store is the sweep test's below)
    from harness.engine.job import compose
    from harness.engine.run import run

    result = run(compose("task=embedding", f"loss={loss}", "epochs=3", "tracking.enabled=false", "progress=false"))
    assert result.outcome == "finished"
    assert result.final["test/knn_accuracy"] > 0.5  # chance is 0.1; the 8x8 digits reach > 0.9 in a few epochs
    assert {"val/map_at_r", "test/recall_at_1", "train/recall_at_1"} <= set(result.final)


def test_a_classification_loss_on_the_embedding_task_is_refused_with_the_losses_that_fit(tmp_path):
    proc = run_cli("task=embedding", "loss=ce", cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        "losses that fit embedding: ce_head, contrastive, margin_ranking, triplet, triplet_batch_hard, triplet_random"
        in proc.stderr
    )
    assert not (tmp_path / "mlflow.db").exists() or not mlflow_runs(tmp_path, "embedding")[1]


def test_a_stacked_sweep_of_the_embedding_task_runs_its_jobs_alone_and_says_why(tmp_path):
    proc = run_cli("--multirun", "task=embedding", "loss=triplet,ce_head", "epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the training set beside each split" in proc.stdout + proc.stderr
    _, runs = mlflow_runs(tmp_path, "embedding")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 3  # 2 jobs and the sweep's parent


def test_held_out_classes_never_reach_training_and_are_scored_by_retrieval_among_themselves():
    import torch

    from harness import HarnessError
    from harness.tasks.embedding import Embedding

    task = Embedding(held_out=3)
    data = task.load()
    assert int(data.train.y.max()) == 6 and int(data.val.y.max()) == 6
    assert set(data.test.y.unique().tolist()) == {7, 8, 9}
    assert len(data.test) == 533  # every 7, 8 and 9 of the 1,797 bundled digits
    assert task.primary_metric == "test/map_at_r" and Embedding().primary_metric == "test/knn_accuracy"
    out = task.model()(data.test.x)
    scores = task.metrics(out, data.test.y, gallery=(task.model()(data.train.x), data.train.y))
    assert "knn_accuracy" not in scores and 0 <= scores["map_at_r"] <= 1  # no neighbours of these kinds in the gallery
    assert "knn_accuracy" in task.metrics(task.model()(data.val.x), data.val.y, gallery=(out[:5], torch.zeros(5).long()))
    with pytest.raises(HarnessError, match="task.held_out must be a number of classes from 0 to 8"):
        Embedding(held_out=9)


def test_a_task_feeding_embedding_targets_without_a_width_is_one_clear_error():
    from omegaconf import OmegaConf

    from harness import HarnessError
    from harness.engine.components import build_loss
    from harness.tasks import Task

    class OwnTask(Task):  # a user's own task that declares embedding targets but forgot its width
        name, targets = "own", ("embedding",)

    cfg = OmegaConf.create({"loss": {"_target_": "harness.losses_metric.TripletLoss", "targets": "embedding"}})
    with pytest.raises(HarnessError, match="task own feeds embedding targets but has no width 'dim' \\(got None\\)"):
        build_loss(cfg, OwnTask(), None, torch.device("cpu"))
    OwnTask.dim = 8
    assert isinstance(build_loss(cfg, OwnTask(), None, torch.device("cpu")), TripletLoss)
