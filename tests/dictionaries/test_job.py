"""`workbench train-dictionary CONFIG.json` trains from a tokens file on the tiny model, or from an activation
store cached from it, and saves a dictionary SAELens loads; a bad config is refused with a message naming the
valid keys, or saying to give exactly one of tokens and store."""

import json

import torch
from sae_lens import SAE
from safetensors.torch import save_file

from workbench.cli import main
from workbench.dictionaries.store import cache_to_shards


def _config(tmp_path, model_dir, token_ids, **overrides):
    save_file({"tokens": torch.cat([token_ids] * 8).contiguous()}, str(tmp_path / "tokens.safetensors"))
    config = {"model": str(model_dir), "hook": "blocks.0.hook_resid_post", "tokens": "tokens.safetensors",
              "architecture": "standard", "d_sae": 64, "sae": {"l1_coefficient": 1.0},
              "train": {"n_steps": 6, "batch_size": 32, "log_every": 3, "betas": [0.9, 0.99]},
              "output": "out", "sequences_per_chunk": 16} | overrides
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path / "config.json"


def test_train_dictionary_command_saves_a_sae_lens_dictionary(tmp_path, tiny_model_dir, tiny_tokens, capsys):
    assert main(["train-dictionary", str(_config(tmp_path, tiny_model_dir, tiny_tokens)), "--no-progress"]) == 0
    assert "for 6 steps" in capsys.readouterr().out
    sae = SAE.load_from_disk(str(tmp_path / "out"))
    assert sae.cfg.d_sae == 64 and sae.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["world_size"] == 1 and metadata["job"]["train"]["n_steps"] == 6


def test_train_dictionary_command_names_the_valid_keys(tmp_path, tiny_model_dir, tiny_tokens, capsys):
    config = _config(tmp_path, tiny_model_dir, tiny_tokens, layer=3)
    assert main(["train-dictionary", str(config)]) == 2
    err = capsys.readouterr().err
    assert "unknown keys ['layer']" in err and "'hook'" in err


def test_train_dictionary_command_trains_from_an_activation_store(tmp_path, tiny_bridge, tiny_model_dir, tiny_tokens,
                                                                  capsys):
    hooks = ["blocks.0.hook_resid_post", "blocks.0.hook_mlp_out"]
    cache_to_shards(tiny_bridge, torch.cat([tiny_tokens] * 4), hooks, tmp_path / "store", shard_size=50,
                    progress=False)
    config = _config(tmp_path, tiny_model_dir, tiny_tokens, tokens=None, store="store",
                     hook_out="blocks.0.hook_mlp_out")
    assert main(["train-dictionary", str(config), "--no-progress"]) == 0
    assert "for 6 steps" in capsys.readouterr().out
    sae = SAE.load_from_disk(str(tmp_path / "out"))
    assert sae.cfg.d_sae == 64 and sae.cfg.d_in == tiny_bridge.cfg.d_model
    assert sae.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
    assert sae.cfg.metadata.hook_name_out == "blocks.0.hook_mlp_out"
    assert sae.cfg.metadata.context_size == tiny_tokens.shape[1]
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["job"]["store"] == str(tmp_path / "store") and metadata["job"]["tokens"] is None

    # a hook the store lacks, or another model, is refused with a message
    (tmp_path / "bad.json").write_text(json.dumps(json.loads(config.read_text()) | {"hook_out": None,
                                                                                    "hook": "blocks.1.hook_resid_post"}))
    assert main(["train-dictionary", str(tmp_path / "bad.json")]) == 2
    assert "'blocks.1.hook_resid_post' was not cached" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps(json.loads(config.read_text()) | {"model": "embedded"}))
    assert main(["train-dictionary", str(tmp_path / "bad.json")]) == 2
    assert "is not the model the store" in capsys.readouterr().err


def test_train_dictionary_command_needs_exactly_one_of_tokens_and_store(tmp_path, tiny_model_dir, tiny_tokens,
                                                                       capsys):
    assert main(["train-dictionary", str(_config(tmp_path, tiny_model_dir, tiny_tokens, store="store"))]) == 2
    assert "exactly one of 'tokens'" in capsys.readouterr().err
    assert main(["train-dictionary", str(_config(tmp_path, tiny_model_dir, tiny_tokens, tokens=None))]) == 2
    assert "got neither" in capsys.readouterr().err
