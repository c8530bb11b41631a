"""`workbench train-dictionary CONFIG.json` trains from a tokens file on the tiny model and saves a dictionary
SAELens loads; a bad config is refused with a message naming the valid keys."""

import json

import torch
from sae_lens import SAE
from safetensors.torch import save_file

from workbench.cli import main


def _config(tmp_path, model_dir, tokens, **overrides):
    save_file({"tokens": torch.cat([tokens] * 8).contiguous()}, str(tmp_path / "tokens.safetensors"))
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
