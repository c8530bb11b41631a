"""Shared fixtures: a smoke-scale world, its tokenizer, and a tiny random GPT-2 saved in HF format.

Results written during tests go to a temporary folder, never over the committed full-scale results.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_RESULTS_TMP = tempfile.mkdtemp(prefix="workbench-test-results-")
os.environ["WORKBENCH_RESULTS_DIR"] = os.path.join(_RESULTS_TMP, "results")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from workbench.datasets import WorldConfig, synthesize  # noqa: E402
from workbench.tokenizer import build_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def smoke_world():
    return synthesize(WorldConfig.for_scale("smoke"))


@pytest.fixture(scope="session")
def smoke_tokenizer(smoke_world):
    return build_tokenizer(smoke_world.all_texts())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smoke_tokenizer) -> Path:
    """A randomly initialised 2-layer GPT-2 with the smoke tokenizer, saved in Hugging Face format."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(smoke_tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=smoke_tokenizer.bos_token_id, eos_token_id=smoke_tokenizer.eos_token_id)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    GPT2LMHeadModel(config).save_pretrained(str(path))
    smoke_tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_bridge(tiny_model_dir):
    from workbench import load_model

    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture()
def tiny_tokens(tiny_bridge, smoke_world):
    """Six QA prompts cut to one length: a [6, pos] batch for the tiny model."""
    prompts = [q.prompt for q in smoke_world.qa_split("unseen_template") if q.template_id == 2][:6]
    toks = [tiny_bridge.to_tokens(p) for p in prompts]
    n = min(t.shape[1] for t in toks)
    return torch.cat([t[:, :n] for t in toks])
