"""Data-parallel training: 2 gloo processes (spawned here, on CPU) train the same dictionary as one process on
the same global batch, resampling included; their checkpoint resumes on 1 process; a batch that does not
split over the ranks is refused."""

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from workbench.dictionaries import make_training_sae
from workbench.dictionaries.distributed import Ranks, shard_rows
from workbench.dictionaries.training import ActivationBatch, DictionaryTrainConfig, TensorSource, train_dictionary

CFG = DictionaryTrainConfig(n_steps=40, batch_size=64, lr=3e-3, log_every=10, dead_window=4, resample_every=10,
                            resample_pool_batches=4, resample_until_fraction=0.8)
WORLD_SIZE = 2


def _acts(n=4096, d=16, n_features=48, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(n_features, d, generator=g), dim=-1)
    idx = torch.stack([torch.randperm(n_features, generator=g)[:k] for _ in range(n)])
    codes = torch.zeros(n, n_features).scatter_(1, idx, torch.rand(n, k, generator=g) * 2 + 0.5)
    return codes @ directions


def _train(init_seed=0, cfg=CFG, **kwargs):
    torch.manual_seed(init_seed)
    sae = make_training_sae("standard", d_in=16, d_sae=64, l1_coefficient=10.0)  # strong: features die and are resampled
    return sae, train_dictionary(sae, TensorSource(_acts()), cfg, progress=False, **kwargs)


def _worker(rank, world_size, tmp):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world_size)
    try:
        try:
            _train(cfg=DictionaryTrainConfig(n_steps=2, batch_size=63))
        except ValueError as e:
            (tmp / f"error{rank}.txt").write_text(str(e))
        # every rank starts from different weights: training must broadcast rank 0's
        sae, result = _train(init_seed=rank)
        save_file(sae.state_dict(), str(tmp / f"rank{rank}.safetensors"))
        (tmp / f"result{rank}.json").write_text(json.dumps({"history": result.history, "resamples": result.resamples}))
        _train(init_seed=rank, checkpoint_dir=tmp / "ckpt", max_steps=25)  # interrupted after 25 of 40 steps
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(WORLD_SIZE, tmp), nprocs=WORLD_SIZE, join=True)
    return tmp


@pytest.fixture(scope="module")
def one_process():
    return _train()


def _assert_same_weights(a: dict, b: dict, atol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), f"{k} differs by {(a[k] - b[k]).abs().max():.3g}"


def test_two_ranks_train_the_dictionary_of_one_process(two_ranks, one_process):
    sae, result = one_process
    assert result.resamples, "the run should resample dead features, so that resampling is checked too"
    rank0 = load_file(str(two_ranks / "rank0.safetensors"))
    _assert_same_weights(rank0, {k: v.detach() for k, v in sae.state_dict().items()})
    _assert_same_weights(load_file(str(two_ranks / "rank1.safetensors")), rank0, atol=0)  # ranks stay identical
    distributed = json.loads((two_ranks / "result0.json").read_text())
    assert [tuple(r) for r in distributed["resamples"]] == result.resamples
    assert [p["step"] for p in distributed["history"]] == [p["step"] for p in result.history]
    for mine, theirs in zip(distributed["history"], result.history, strict=True):
        assert mine["mse_loss"] == pytest.approx(theirs["mse_loss"], rel=1e-4)  # a mean of per-row terms
        assert mine["l0"] == pytest.approx(theirs["l0"], rel=1e-4)


def test_a_distributed_checkpoint_resumes_on_one_process(two_ranks, one_process):
    sae, _ = one_process
    assert json.loads((two_ranks / "ckpt" / "state.json").read_text())["step"] == 25
    resumed, result = _train(init_seed=7, checkpoint_dir=two_ranks / "ckpt")
    assert result.steps == CFG.n_steps
    _assert_same_weights({k: v.detach() for k, v in resumed.state_dict().items()},
                         {k: v.detach() for k, v in sae.state_dict().items()})


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(two_ranks):
    for rank in range(WORLD_SIZE):
        message = (two_ranks / f"error{rank}.txt").read_text()
        assert "batch_size=63" in message and "world size 2" in message and "62" in message
    with pytest.raises(ValueError, match="multiple of 4"):
        Ranks(0, 4).check_batch_size(6)
    Ranks(0, 4).check_batch_size(8)


def test_shards_are_disjoint_and_cover_the_global_batch():
    acts = torch.arange(100.0).reshape(50, 2)
    source = TensorSource(acts, labels={"y": torch.arange(50)}, seed=3)
    for step in (0, 7):
        full = source.batch(step, 10)
        shards = [source.shard(step, 10, r, 2) for r in range(2)]
        assert torch.equal(torch.cat([s.inputs for s in shards]), full.inputs)
        assert torch.equal(torch.cat([s.labels["y"] for s in shards]), full.labels["y"])
        sliced = [shard_rows(full, r, 2) for r in range(2)]  # the fallback for sources without ``shard``
        assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(shards, sliced, strict=True))
    assert isinstance(shards[0], ActivationBatch)
