import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench import load_model


def test_bridge_logits_equal_the_hugging_face_model(tiny_model_dir, tiny_bridge):
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    tokens = tiny_bridge.to_tokens("Q: When was it born?\nA:")
    with torch.no_grad():
        assert torch.allclose(tiny_bridge(tokens), hf(tokens).logits, atol=1e-5)
    assert tiny_bridge.to_str_tokens("Q: When")[:2] == ["<|endoftext|>", " Q"]


def test_missing_embedded_model_names_the_command_that_trains_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="workbench train-model"):
        load_model()


def test_unknown_offline_name_points_to_the_embedded_default():
    with pytest.raises(OSError, match="embedded default"):
        load_model("surely-not-a-cached-model/xyz-123")


def test_folder_without_a_model_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)
