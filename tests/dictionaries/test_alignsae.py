"""AlignSAE: each loss term on tiny hand-made inputs, the two-stage curriculum through the one loop, any number of
concepts, clear errors for bad labels, and the SAELens round trip with the slot layout in the metadata."""

import json

import pytest
import torch
from sae_lens import SAE
from torch import nn

from workbench.dictionaries import make_training_sae, save_dictionary
from workbench.dictionaries.alignsae import (
    MixedSource,
    alignsae_stages,
    binding_loss,
    check_labels,
    concept_ids,
    decorrelation_loss,
    value_loss,
)
from workbench.dictionaries.training import DictionaryStepInput, DictionaryTrainConfig, TensorSource, train_dictionary

RELATIONS6 = ("birth_date", "birth_city", "university", "major", "employer", "employer_city")


def step(x, labels=None, **coefficients):
    coefs = {"l1": 0.1, "binding": 1.0, "decorrelation": 1.0, "value": 0.5} | coefficients
    return DictionaryStepInput(sae_in=x, coefficients=coefs, dead_neuron_mask=None, n_training_steps=0,
                               is_logging_step=False, labels=labels)


def test_decorrelation_is_zero_for_uncorrelated_codes_and_positive_for_correlated_ones():
    z_concept = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    uncorrelated = torch.tensor([[1.0, 3.0], [0.0, 3.0], [1.0, 3.0], [0.0, 3.0]])  # orthogonal after centring; constant
    assert decorrelation_loss(z_concept, uncorrelated).item() == pytest.approx(0.0, abs=1e-10)
    correlated = torch.cat([2 * z_concept + 1, -z_concept], dim=1)  # correlations +1 and -1
    assert decorrelation_loss(z_concept, correlated).item() == pytest.approx(2.0, rel=1e-4)
    half = torch.tensor([[1.0], [0.0], [0.0], [0.0]])  # corr(z, half) = 1/sqrt(3)
    assert decorrelation_loss(z_concept, half).item() == pytest.approx(1 / 3, rel=1e-4)


@pytest.mark.parametrize("kind", ["ce", "mse"])
def test_binding_loss_falls_when_the_slot_is_right_and_ignores_unlabelled_rows(kind):
    concept = torch.tensor([0, 1, 2])
    right = 3 * torch.eye(3)
    wrong = 3 * torch.eye(3)[[1, 2, 0]]
    assert binding_loss(right, concept, kind) < binding_loss(wrong, concept, kind)
    padded = torch.cat([right, torch.rand(2, 3)])
    assert torch.allclose(binding_loss(padded, torch.tensor([0, 1, 2, -1, -1]), kind), binding_loss(right, concept, kind))
    assert binding_loss(right, torch.full((3,), -1), kind).item() == 0.0


def test_value_loss_falls_when_the_slot_is_right():
    head = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(4 * torch.eye(3))  # slot c active -> value c
    value = torch.tensor([0, 1, 2, -1])
    right = torch.eye(3)[[0, 1, 2, 0]]
    wrong = torch.eye(3)[[1, 2, 0, 0]]
    assert value_loss(head, right, value) < value_loss(head, wrong, value)


def test_l1_scope_free_leaves_the_concept_slots_unpenalised():
    torch.manual_seed(0)
    sae = make_training_sae("alignsae", d_in=8, d_sae=16, concepts=("a", "b"), l1_scope="free")
    codes = torch.zeros(1, 16)
    codes[0, 0] = 5.0  # only a concept slot fires
    losses = sae.calculate_aux_loss(step(torch.zeros(1, 8), binding=0, decorrelation=0, value=0), codes, codes, codes)
    assert losses["l1_loss"].item() == 0.0
    sae_all = make_training_sae("alignsae", d_in=8, d_sae=16, concepts=("a", "b"))
    losses = sae_all.calculate_aux_loss(step(torch.zeros(1, 8), binding=0, decorrelation=0, value=0), codes, codes, codes)
    assert losses["l1_loss"].item() > 0


@pytest.mark.parametrize("k", [2, 6, 9])
def test_any_number_of_concepts_trains_to_bind_each_to_its_slot(k):
    """Planted data: each concept shifts the activation along its own direction. After the reconstruction stage and
    the alignment stage, each held-out row's largest slot is its concept's (and stage 1 had no binding term)."""
    g = torch.Generator().manual_seed(k)
    d_in, n = 16, 3000
    directions = torch.randn(k, d_in, generator=g)
    concept = torch.randint(0, k, (n,), generator=g)
    acts = torch.randn(n, d_in, generator=g) * 0.3 + 3 * directions[concept]
    value = concept * 2 + torch.randint(0, 2, (n,), generator=g)
    unlabelled = torch.randn(4000, d_in, generator=g)
    torch.manual_seed(0)
    sae = make_training_sae("alignsae", d_in=d_in, d_sae=64, concepts=tuple(f"c{i}" for i in range(k)),
                            n_values=2 * k, l1_coefficient=0.1, binding_coefficient=2.0, decorrelation_coefficient=0.01)
    source = MixedSource(TensorSource(acts[:2500], labels={"concept": concept[:2500], "value": value[:2500]}),
                         TensorSource(unlabelled))
    cfg = DictionaryTrainConfig(batch_size=128, lr=3e-3, stages=alignsae_stages(100, 300), log_every=50)
    result = train_dictionary(sae, source, cfg, progress=False)
    stage1, stage2 = result.history[0], result.history[-1]
    assert stage1["binding_loss"] == 0.0 and stage2["binding_loss"] > 0.0
    with torch.no_grad():
        pred = sae.encode(acts[2500:])[:, :k].argmax(-1)
    accuracy = (pred == concept[2500:]).float().mean().item()
    assert accuracy > 0.95, f"held-out slot accuracy {accuracy:.2f} with K={k}: is the binding loss reaching the slots?"


def test_save_then_sae_lens_load_gives_identical_codes_and_keeps_the_slot_layout(tmp_path):
    torch.manual_seed(0)
    sae = make_training_sae("alignsae", d_in=16, d_sae=64, concepts=RELATIONS6, n_values=20)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sae.eval()
    x = torch.randn(8, 16)
    expected_codes, expected_out = sae.encode(x), sae.decode(sae.encode(x))
    save_dictionary(sae, tmp_path / "a", hook_name="blocks.0.hook_resid_pre", model="test")
    loaded = SAE.load_from_disk(str(tmp_path / "a"))
    assert torch.allclose(loaded.encode(x), expected_codes, atol=1e-6)
    assert torch.allclose(loaded.decode(loaded.encode(x)), expected_out, atol=1e-5)
    cfg = json.loads((tmp_path / "a" / "cfg.json").read_text())
    assert cfg["architecture"] == "standard" and cfg["apply_b_dec_to_input"] is False
    assert cfg["metadata"]["concepts"] == list(RELATIONS6) and cfg["metadata"]["concept_slots"] == list(range(6))
    assert loaded.cfg.metadata.concept_slots == list(range(6))
    from safetensors.torch import load_file

    assert not [k for k in load_file(tmp_path / "a" / "sae_weights.safetensors") if k.startswith("value_head")]


def test_bad_labels_and_configs_say_what_is_wrong():
    sae = make_training_sae("alignsae", d_in=8, d_sae=16, concepts=("a", "b", "c"), n_values=5)
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"labels\['concept'\] has shape \(3,\) for a batch of 4 rows"):
        sae.training_forward_pass(step(x, {"concept": torch.tensor([0, 1, 2]), "value": torch.zeros(4, dtype=torch.long)}))
    with pytest.raises(ValueError, match=r"holds \[3, 7\], outside concept ids 0..2 for \['a', 'b', 'c'\]"):
        sae.training_forward_pass(step(x, {"concept": torch.tensor([0, 3, 7, -1]), "value": torch.zeros(4, dtype=torch.long)}))
    with pytest.raises(ValueError, match=r"needs labels\['concept'\]"):
        sae.training_forward_pass(step(x, None))
    with pytest.raises(ValueError, match=r"outside value classes 0..4"):
        sae.training_forward_pass(step(x, {"concept": torch.tensor([0, 1, 2, 0]), "value": torch.tensor([0, 9, 1, 1])}))
    sae.training_forward_pass(step(x, None, binding=0, decorrelation=0, value=0))  # stage 1 needs no labels
    with pytest.raises(ValueError, match=r"unknown concept\(s\) \['hobby'\]; this AlignSAE's concepts are"):
        concept_ids(["major", "hobby"], RELATIONS6)
    with pytest.raises(ValueError, match=r"concept\(s\) \['c'\] have no labelled rows"):
        check_labels(torch.tensor([0, 1, 1, -1]), 4, ("a", "b", "c"))
    with pytest.raises(ValueError, match="got \\(3,\\) concept labels for 4 activation rows"):
        check_labels(torch.tensor([0, 1, 2]), 4, ("a", "b", "c"))
    with pytest.raises(ValueError, match="needs concepts"):
        make_training_sae("alignsae", d_in=8, d_sae=16)
    with pytest.raises(ValueError, match="d_sae=3 leaves no free bank"):
        make_training_sae("alignsae", d_in=8, d_sae=3, concepts=("a", "b", "c"))
    with pytest.raises(ValueError, match="binding must be 'ce'"):
        make_training_sae("alignsae", d_in=8, d_sae=16, concepts=("a",), binding="hinge")


def test_mixed_source_tops_labelled_rows_up_with_unlabelled_ones():
    lab = TensorSource(torch.ones(40, 4), labels={"concept": torch.arange(40) % 3})
    unl = TensorSource(torch.zeros(100, 4))
    source = MixedSource(lab, unl, labelled_fraction=0.25)
    batch = source.batch(3, 16)
    assert batch.inputs.shape == (16, 4) and source.d_in == 4
    assert (batch.inputs[:4] == 1).all() and (batch.inputs[4:] == 0).all()
    assert (batch.labels["concept"][4:] == -1).all() and (batch.labels["concept"][:4] >= 0).all()
    assert torch.equal(source.batch(3, 16).labels["concept"], batch.labels["concept"])  # deterministic per step
    with pytest.raises(ValueError, match="d_in=4 but unlabelled rows d_in=5"):
        MixedSource(lab, TensorSource(torch.zeros(10, 5)))
    with pytest.raises(ValueError, match="gives no labels"):
        MixedSource(unl, None).batch(0, 8)
