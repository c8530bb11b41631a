"""The sharded activation store: shards read back equal ``hooks.cache_activations`` row for row, on one process and
on 2 gloo processes (spawned here); training from the store equals training from the same rows in memory; the
SAELens conversion loads in ``datasets`` and in SAELens's own ``ActivationsStore``."""

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from workbench import hooks
from workbench.dictionaries import make_training_sae
from workbench.dictionaries.store import (
    ActivationStore,
    ShardedSource,
    cache_to_shards,
    load_manifest,
    to_sae_lens_dataset,
)
from workbench.dictionaries.training import DictionaryTrainConfig, TensorSource, train_dictionary

HOOKS = [hooks.resid_post(0), hooks.mlp_out(1)]
SHARD = 7  # rows per shard: small, so sequences straddle shards


@pytest.fixture()
def tokens(tiny_tokens):
    return torch.cat([tiny_tokens, tiny_tokens.flip(0)])  # 12 sequences


@pytest.fixture()
def single(tiny_bridge, tokens, tmp_path):
    manifest = cache_to_shards(tiny_bridge, tokens, HOOKS, tmp_path / "store", shard_size=SHARD, batch_size=4,
                               progress=False)
    return tmp_path / "store", manifest


def _read_all(store_dir, key):
    store = ActivationStore(store_dir)
    return store.rows(key, 0, store.n_rows)


def test_shards_read_back_equal_cache_activations(tiny_bridge, tokens, single):
    store_dir, manifest = single
    reference = hooks.cache_activations(tiny_bridge, tokens, HOOKS, batch_size=4, progress=False)
    assert manifest == load_manifest(store_dir)
    assert manifest["n_rows"] == len(reference) and manifest["n_tokens"] == tokens.numel()
    assert manifest["hooks"] == HOOKS and manifest["dtype"] == "float32" and manifest["world_size"] == 1
    assert manifest["d"] == {h: reference[h].shape[1] for h in HOOKS}
    assert [s["n_rows"] for s in manifest["shards"]][:-1] == [SHARD] * (len(manifest["shards"]) - 1)
    assert sum(s["n_rows"] for s in manifest["shards"]) == len(reference)
    for h in HOOKS:
        assert torch.equal(_read_all(store_dir, h), reference[h])  # same rows, same order
    assert torch.equal(_read_all(store_dir, "token_ids"), reference.token_ids)
    assert torch.equal(_read_all(store_dir, "sequence_index"), reference.sequence_index)
    assert torch.equal(_read_all(store_dir, "positions"), reference.positions)
    idx = torch.tensor([20, 3, 3, len(reference) - 1, 0, 14])  # random access across shards, any order
    assert torch.equal(ActivationStore(store_dir).gather(HOOKS[0], idx), reference[HOOKS[0]][idx])
    with pytest.raises(FileExistsError, match="already holds"):
        cache_to_shards(tiny_bridge, tokens, HOOKS, store_dir, progress=False)
    with pytest.raises(KeyError, match="cached hooks"):
        ShardedSource(store_dir, hooks.resid_pre(0))


def _worker(rank, world_size, tmp, model_dir, tokens):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=world_size)
    try:
        from workbench import load_model
        model = load_model(model_dir, device="cpu")
        manifest = cache_to_shards(model, tokens, HOOKS, tmp / "store", shard_size=SHARD, batch_size=4,
                                   progress=False)
        (tmp / f"manifest{rank}.json").write_text(json.dumps(manifest))
    finally:
        dist.destroy_process_group()


def test_two_ranks_write_shards_that_together_equal_one_process(tiny_model_dir, tokens, single, tmp_path):
    tmp = tmp_path / "ddp"
    tmp.mkdir()
    mp.spawn(_worker, args=(2, tmp, tiny_model_dir, tokens), nprocs=2, join=True)
    manifest = load_manifest(tmp / "store")
    assert manifest["world_size"] == 2 and {s["rank"] for s in manifest["shards"]} == {0, 1}
    assert json.loads((tmp / "manifest1.json").read_text()) == manifest  # every rank returns the manifest
    store_dir, one = single
    assert manifest["n_rows"] == one["n_rows"]
    for key in [*HOOKS, "token_ids", "sequence_index", "positions"]:
        # batches of 4 sequences fall alike (each rank's 6 = 4 + 2 vs 4 + 4 + 4): equal up to float batching noise
        a, b = _read_all(tmp / "store", key), _read_all(store_dir, key)
        assert torch.allclose(a, b, atol=1e-5, rtol=0) if a.is_floating_point() else torch.equal(a, b), key


def test_training_from_the_store_equals_training_from_memory(single):
    store_dir, _ = single
    cfg = DictionaryTrainConfig(n_steps=12, batch_size=16, lr=3e-3, log_every=4)
    sources = ShardedSource(store_dir, HOOKS[0], seed=3), TensorSource(_read_all(store_dir, HOOKS[0]), seed=3)
    for step in (0, 5, 40):  # the same batches, across epochs too
        assert torch.equal(sources[0].batch(step, 16).inputs, sources[1].batch(step, 16).inputs)
    results = []
    for source in sources:
        torch.manual_seed(0)
        sae = make_training_sae("standard", d_in=source.d_in, d_sae=32, l1_coefficient=1.0)
        train_dictionary(sae, source, cfg, progress=False)
        results.append({k: v.detach() for k, v in sae.state_dict().items()})
    assert results[0].keys() == results[1].keys()
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k]), k
    full = ShardedSource(store_dir, HOOKS[0], target_hook=HOOKS[1], seed=1).batch(2, 10)
    halves = [ShardedSource(store_dir, HOOKS[0], target_hook=HOOKS[1], seed=1).shard(2, 10, r, 2) for r in range(2)]
    assert torch.equal(torch.cat([h.inputs for h in halves]), full.inputs)
    assert torch.equal(torch.cat([h.targets for h in halves]), full.targets)


def test_sae_lens_format(tiny_bridge, tokens, single, tmp_path):
    import datasets
    from sae_lens.training.activations_store import ActivationsStore

    store_dir, manifest = single
    hook = HOOKS[0]
    with pytest.raises(ValueError, match="pass hook"):
        to_sae_lens_dataset(store_dir, tmp_path / "x")
    to_sae_lens_dataset(store_dir, tmp_path / "sae_lens", hook=hook, sequences_per_chunk=5)
    ds = datasets.load_from_disk(str(tmp_path / "sae_lens"))
    ctx, d = tokens.shape[1] - 1, manifest["d"][hook]
    assert ds.column_names == [hook, "token_ids"] and len(ds) == len(tokens)
    assert ds.features[hook].shape == (ctx, d)
    ds.set_format("torch")
    rows = ds[:]  # datasets 5: ds[column] is a lazy Column, a slice gives tensors
    assert torch.equal(rows[hook].reshape(-1, d), _read_all(store_dir, hook))
    assert torch.equal(rows["token_ids"].reshape(-1).long(), _read_all(store_dir, "token_ids"))
    # SAELens's own reader takes it as a cache (model and dataset are not needed for cached activations)
    store = ActivationsStore(model=None, dataset=None, streaming=False, hook_name=hook, hook_head_index=None,
                             context_size=ctx, d_in=d, n_batches_in_buffer=2, total_training_tokens=10**4,
                             store_batch_size_prompts=3, train_batch_size_tokens=8, prepend_bos=True,
                             normalize_activations="none", device=torch.device("cpu"), dtype="float32",
                             cached_activations_path=str(tmp_path / "sae_lens"))
    acts, token_ids = store.get_raw_llm_batch()
    assert torch.equal(acts.reshape(-1, d), _read_all(store_dir, hook)[:3 * ctx])
    assert torch.equal(token_ids.reshape(-1).long(), _read_all(store_dir, "token_ids")[:3 * ctx])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_stores_read_back(tiny_bridge, tokens, tmp_path, dtype):
    manifest = cache_to_shards(tiny_bridge, tokens[:3], HOOKS[:1], tmp_path / "s", shard_size=SHARD, dtype=dtype,
                               progress=False)
    assert manifest["dtype"] == str(dtype).removeprefix("torch.")
    reference = hooks.cache_activations(tiny_bridge, tokens[:3], HOOKS[:1], progress=False)[HOOKS[0]]
    assert torch.equal(_read_all(tmp_path / "s", HOOKS[0]), reference.to(dtype))
    assert ShardedSource(tmp_path / "s", HOOKS[0]).batch(0, 8).inputs.dtype == torch.float32


def test_sae_lens_conversion_refuses_ragged_sequences(tiny_bridge, tokens, tmp_path):
    ragged = tokens[:2].clone()
    ragged[1, 3] = tiny_bridge.tokenizer.bos_token_id  # a BOS inside a sequence: that row is left out
    cache_to_shards(tiny_bridge, ragged, HOOKS[:1], tmp_path / "s", progress=False)
    with pytest.raises(ValueError, match="same number of rows per sequence"):
        to_sae_lens_dataset(tmp_path / "s", tmp_path / "sae_lens")
