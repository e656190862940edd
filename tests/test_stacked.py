"""The stacked launcher (issue 13): each member of a bundle trains as it would alone.

Tolerance: a stacked member's forward pass is a batched matrix product (or vmap's) where the solo
run calls nn.Linear / nn.Conv2d: the same float32 arithmetic summed in another order, so each
operation may differ in its last bits (~1e-7 relative). Two epochs of steps carry that rounding
along without chaos, and what we see is below 1e-5 relative on losses and metrics; RTOL = 1e-4
keeps a decade of margin and still fails on any real difference (a wrong init, shuffle order,
LR, loss or optimizer state moves them by 1e-2 or more). A count-based metric (accuracy, F1) can
flip a sample that sits on the decision boundary, so those may differ by one sample's share.

On a GPU (the suite runs on CUDA where one is visible, device=auto), cuDNN picks different
algorithms for the stacked (grouped) and the solo convolution, and by default runs them in TF32
(10-bit mantissa): seen on an H100, 3.4e-4 relative on a CNN member's train loss after two epochs
of RMSprop. The tests turn TF32 off (full float32, as on a CPU) and allow RTOL_CUDA = 1e-3 there:
still a decade below what a real difference moves.
"""

import math

import pytest
import torch

from harness.config.checks import check_config
from harness.config.schema import seed_of
from harness.engine import bundles
from harness.engine.build import build
from harness.engine.bundles import Entry, member_bytes, plan, prepare, split
from harness.engine.job import compose, spec_from_hydra
from harness.engine.launch import alone_lines, member
from harness.engine.stacked import train_stacked
from tests.conftest import write_idx_mnist

RTOL = 1e-4
RTOL_CUDA = 1e-3


@pytest.fixture(autouse=True)
def full_float32_on_cuda():
    """Stacked and solo runs in full float32 on a GPU too (see the module's docstring)."""
    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


TIMING = {"epoch_seconds", "samples_per_second"}
COUNTED = ("accuracy", "f1", "recall", "precision", "exact", "cer")  # one test sample's share may flip
ONE_MINUS = ("r2",)  # 1 - SSE/SST: its rounding is relative to 1, not to its (possibly tiny) value


SPECS: dict = {}  # each config's Spec, taken as it is composed (Hydra's current config is the last composed one)


def config(*overrides):
    cfg = compose("tracking.enabled=false", "progress=false", "epochs=2", *overrides)
    SPECS[id(cfg)] = (cfg, spec_from_hydra(cfg))
    return cfg


def spec_of(cfg):
    kept = SPECS.get(id(cfg))
    return kept[1] if kept and kept[0] is cfg else spec_from_hydra(cfg)


def solo(cfg):
    spec = spec_of(cfg)
    check_config(cfg, spec.names)
    job = build(cfg, spec.names)
    epochs = []
    result = job.train(epochs=cfg.epochs, seed=seed_of(cfg, "order_seed"), on_epoch=lambda e, m, lrs: epochs.append((m, lrs)))
    return result, epochs, len(job.parts.data.test)


def entry(cfg) -> Entry:
    e = Entry(cfg, spec_of(cfg))
    check_config(cfg, e.spec.names)
    prepare(e, {})
    assert e.result is None and e.solo is None
    return e


def stacked(cfgs):
    entries = [entry(c) for c in cfgs]
    head = entries[0]
    logs = [[] for _ in entries]
    members = [member(e, (lambda log: lambda ep, m, lrs: log.append((m, lrs)))(log)) for e, log in zip(entries, logs)]  # noqa: B023 (bound at once)
    results = train_stacked(
        [(head.parts.task, head.parts.data)],
        members,
        epochs=cfgs[0].epochs,
        batch_size=head.parts.batch_size,
        eval_batch_size=head.parts.eval_batch_size(stacked=True),
    )
    return results, logs, members


def assert_same(a: dict, b: dict, n_test: int, where: str):
    assert set(a) == set(b), (where, set(a) ^ set(b))
    for k in b:
        if k in TIMING:
            continue
        scale = max(1.0 if k.endswith(ONE_MINUS) else 1e-3, abs(b[k]))
        rtol = RTOL_CUDA if torch.cuda.is_available() else RTOL
        tol = 1.0 / n_test + 1e-6 if any(c in k for c in COUNTED) else rtol * scale
        assert math.isclose(a[k], b[k], abs_tol=tol) or (math.isnan(a[k]) and math.isnan(b[k])), (where, k, a[k], b[k])


def check_equivalent(variants, common=()):
    cfgs = [config(*common, *v) for v in variants]
    results, logs, _ = stacked(cfgs)
    for cfg, v, result, log in zip(cfgs, variants, results, logs):
        alone, alone_log, n_test = solo(cfg)
        where = " ".join([*common, *v])
        assert result.outcome == alone.outcome and result.diverged_epoch == alone.diverged_epoch, where
        assert len(log) == len(alone_log) == alone.epochs, where  # a diverged run stops logging at its epoch
        for (m, lrs), (m0, lrs0) in zip(log, alone_log):
            assert_same(m, m0, n_test, where)
            assert lrs == pytest.approx(lrs0, rel=1e-9), where  # its own schedule, step by step
        assert_same(result.final, alone.final, n_test, where)


def test_regression_members_across_optimizers_losses_and_schedules():
    check_equivalent(
        [
            ["loss=mse", "seed=0", "optimizer=adam"],
            ["loss=huber", "seed=1", "optimizer=adam"],
            ["loss=mae", "seed=2", "optimizer=momentum", "optimizer.lr=0.01", "schedule=onecycle"],
            ["loss=mse", "seed=3", "optimizer=rmsprop", "schedule=cosine"],
            [
                "loss=log_cosh",
                "seed=3",
                "optimizer=adamw",
                "optimizer.weight_decay=0.1",
                "schedule=step",
                "schedule.step_epochs=1",
            ],
        ],
        common=["task=regression"],
    )


def test_imbalanced_members_with_focal_weighted_ce_and_mse_on_probabilities():
    check_equivalent(
        [
            ["loss=focal", "seed=0"],
            ["loss=ce", "seed=1", "optimizer=momentum"],
            ["loss=mse_prob", "seed=2", "optimizer=adamw", "optimizer.weight_decay=0.05"],
            ["loss=ce_weighted", "seed=0", "optimizer=rmsprop", "schedule=cosine"],
        ],
        common=["task=imbalanced", "task.n_train=1000"],
    )


def test_count_members_with_poisson_nll_and_losses_on_the_rate():
    check_equivalent(
        [
            ["loss=poisson_nll", "seed=0"],
            ["loss=mse_counts", "seed=1", "optimizer.lr=0.0003"],
            ["loss=huber_counts", "seed=2", "optimizer=momentum", "optimizer.lr=0.001"],
        ],
        common=["task=counts", "task.n_train=1000", "task.dispersion=2"],
    )


def test_sequence_members_decode_with_their_own_loss():
    # CTC and per-position CE decode differently: each member's metrics use its own loss's decoder
    check_equivalent(
        [
            ["loss=ctc", "seed=0"],
            ["loss=position_ce", "seed=1"],
            ["loss=ctc", "seed=2", "optimizer=momentum", "optimizer.lr=0.05"],
        ],
        common=["task=sequence", "task.n_train=200", "task.n_val=60", "task.n_test=60", "task.max_length=3", "batch_size=32"],
    )


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_mnist_members_on_tiny_idx_files(tmp_path, model):
    root = write_idx_mnist(tmp_path / "data", n_train=300, n_test=100)
    check_equivalent(
        [
            ["seed=0", "optimizer=adam"],
            ["seed=1", "optimizer=momentum", "optimizer.lr=0.05", "schedule=onecycle"],
            ["seed=2", "loss=focal", "optimizer=rmsprop", "optimizer.lr=0.001"],
        ],
        common=[
            "task=mnist",
            f"data_dir={root}",
            "task.download=false",
            "task.val_size=50",
            f"task.model={model}",
            "batch_size=32",
        ],
    )


def test_the_evaluation_chunk_changes_speed_not_results(tmp_path):
    """eval_batch_size=auto is 256 for a solo run on one CPU thread (twice as fast for the small CNN: the bench's
    cost_eval row), fewer for inputs wider than an MNIST image (cost_eval_wide), and 4096 elsewhere; a run
    evaluated in either chunk logs the same metrics."""
    from harness.engine.device import resolve_eval_chunk

    cpu, gpu, mnist, strings = torch.device("cpu"), torch.device("cuda"), 28 * 28, 28 * 252
    assert resolve_eval_chunk("auto", cpu, 1, mnist) == 256 and resolve_eval_chunk("auto", cpu, 2, mnist) == 4096
    assert resolve_eval_chunk("auto", cpu, 1, 10) == 256  # narrow inputs: still 256
    assert resolve_eval_chunk("auto", cpu, 1, strings) == 28 and resolve_eval_chunk("auto", cpu, 1, 10**7) == 1
    assert resolve_eval_chunk("auto", cpu, 1, strings, stacked=True) == 4096
    assert resolve_eval_chunk("auto", gpu, 1, strings) == 4096
    assert resolve_eval_chunk(64, cpu, 1, strings) == 64 and resolve_eval_chunk("100", gpu, 4, mnist) == 100
    root = write_idx_mnist(tmp_path / "data", n_train=300, n_test=100)
    common = ["task=mnist", f"data_dir={root}", "task.download=false", "task.val_size=50", "task.model=cnn", "threads=1"]
    auto, small, big = (solo(config(*common, f"eval_batch_size={c}"))[1] for c in ("auto", "7", "4096"))
    for epoch in range(2):
        a, b, c = (run[epoch][0] for run in (auto, small, big))
        for key in a:
            if key not in TIMING:
                assert a[key] == pytest.approx(c[key], rel=1e-5) and b[key] == pytest.approx(c[key], rel=1e-5), key


def test_a_diverging_member_is_frozen_and_the_others_finish_as_alone():
    variants = [["seed=0", "optimizer.lr=5"], ["seed=1", "optimizer.lr=0.01"], ["seed=2", "optimizer.lr=0.02"]]
    check_equivalent(variants, common=["task=regression", "optimizer=sgd", "epochs=3"])
    results, _, _ = stacked([config("task=regression", "optimizer=sgd", "epochs=3", *v) for v in variants])
    assert [r.outcome for r in results] == ["diverged", "finished", "finished"]
    assert results[0].diverged_epoch == 1


def entries_for(*variants, common=("task=regression",)):
    out = []
    for v in variants:
        cfg = config(*common, *v)
        out.append(Entry(cfg, spec_of(cfg)))
    return out


def test_jobs_that_cannot_join_a_bundle_run_alone_with_the_reason():
    lbfgs = ["~optimizer", "+optimizer={_target_: torch.optim.LBFGS, _partial_: true, lr: 0.1}"]
    entries = entries_for(["seed=0"], ["seed=1"], ["seed=2", *lbfgs], ["seed=3", "epochs=3"])
    units = plan(entries, max_members=64, memory_gb=None)
    assert sorted(len(u) for u in units) == [1, 1, 2]
    alone = {u[0].spec.cfg.seed: u[0].solo for u in units if len(u) == 1}
    assert "needs a closure" in alone[2]
    assert "no other job of the sweep shares" in alone[3]


def test_convolutional_jobs_run_alone_on_a_cpu_unless_asked():
    common = ("task=sequence", "task.n_train=64", "task.n_val=16", "task.n_test=16", "device=cpu")
    variants = [["seed=0"], ["seed=1", "loss=position_ce"], ["seed=2"]]
    units = plan(entries_for(*variants, common=common), max_members=64, memory_gb=None)
    assert [len(u) for u in units] == [1, 1, 1] and all(u[0].solo == bundles.CPU_VMAP for u in units)
    units = plan(entries_for(*variants, common=common), max_members=64, memory_gb=None, vmap_on_cpu=True)
    assert [len(u) for u in units] == [3]
    mlps = plan(entries_for(["seed=0"], ["seed=1"], common=("task=regression", "device=cpu")), max_members=64, memory_gb=None)
    assert [len(u) for u in mlps] == [2]  # a plain MLP stacks as batched matrix products on a CPU too


def test_jobs_alone_for_one_reason_share_one_line():
    from types import SimpleNamespace

    def alone(num, why):
        return SimpleNamespace(spec=SimpleNamespace(ctx=SimpleNamespace(num=num)), solo=why)

    lines = alone_lines([alone(i, "slow here") for i in range(12)] + [alone(12, "a closure")])
    assert lines == ["jobs 0, 1, 2, 3, 4, 5, 6, 7, ... (12 in all) run alone: slow here", "job 12 runs alone: a closure"]


def test_bundles_are_bounded_by_max_members_and_memory(monkeypatch):
    entries = entries_for(*[[f"seed={s}"] for s in range(7)])
    for e in entries:
        prepare(e, {})
    assert [len(b) for b in split(list(entries), max_members=3, memory_gb=None)] == [3, 2, 2]  # as even as the bound allows
    assert [len(b) for b in split(list(entries), max_members=64, memory_gb=None, workers=2)] == [7]  # too few to share out
    monkeypatch.setattr(bundles, "MIN_SPLIT", 3)
    assert [len(b) for b in split(list(entries), max_members=64, memory_gb=None, workers=2)] == [4, 3]  # one per worker
    head = entries[0].parts
    x = head.data.train.x
    per_member = member_bytes(head.model, x, head.batch_size, len(x), head.eval_batch_size(stacked=True))
    two = 2.5 * per_member / 2**30
    parts = split(list(entries), max_members=64, memory_gb=two)
    assert [len(b) for b in parts] == [2, 2, 2, 1]
    assert "left it alone" in parts[-1][0].solo  # a bundle of one runs as an ordinary job


def test_init_and_order_seeds_are_separate_and_null_is_the_runs_seed():
    """init_seed picks the weights, order_seed the batches' order; a run that sets both to the values
    its seed would give trains exactly as the plain run, and members differing only in them stack."""
    plain, _, _ = solo(config("task=regression", "seed=0"))
    same, _, _ = solo(config("task=regression", "seed=5", "init_seed=0", "order_seed=0"))
    scores = lambda r: {k: v for k, v in r.final.items() if k not in TIMING}  # noqa: E731
    assert scores(same) == scores(plain)  # bit for bit: the same weights and the same batches
    other_order, _, _ = solo(config("task=regression", "seed=0", "order_seed=1"))
    assert other_order.final["test/mse"] != plain.final["test/mse"]
    a, b = entry(config("task=regression", "seed=0", "order_seed=1")), entry(config("task=regression", "seed=0"))
    assert all(torch.equal(p, q) for p, q in zip(a.parts.model.parameters(), b.parts.model.parameters()))
    c = entry(config("task=regression", "seed=0", "init_seed=1"))
    assert not all(torch.equal(p, q) for p, q in zip(c.parts.model.parameters(), b.parts.model.parameters()))
    check_equivalent([["seed=0", "order_seed=1"], ["seed=0", "init_seed=2"], ["seed=0"]], common=["task=regression"])
