import torch

from workbench import behaviours
from workbench.behaviours import answer_correct, logits_fn_of


def test_teacher_forced_check_agrees_with_greedy_generation(tiny_bridge, smoke_world):
    tok = tiny_bridge.tokenizer
    prompts = [tiny_bridge.to_tokens(q.prompt)[0].tolist() for q in smoke_world.qa[:12]]
    generated = []
    for p in prompts:
        out = tiny_bridge.generate(torch.tensor([p]), max_new_tokens=3, do_sample=False, verbose=False,
                                   stop_at_eos=False)
        generated.append(out[0, len(p):].tolist())
    # the model's own greedy continuation is "correct"; the same with its last token changed is not
    assert answer_correct(logits_fn_of(tiny_bridge), prompts, generated, torch.device("cpu")).all()
    wrong = [g[:-1] + [(g[-1] + 1) % len(tok)] for g in generated]
    assert not answer_correct(logits_fn_of(tiny_bridge), prompts, wrong, torch.device("cpu")).any()


def test_greater_than_prob_diff_is_one_for_a_perfect_predictor(smoke_world, smoke_tokenizer):
    years = behaviours.two_digit_token_ids(smoke_tokenizer)
    yy_of = {}
    for g in smoke_world.gt_eval:
        yy_of[tuple(behaviours.encode_strict(smoke_tokenizer, g.prompt))] = g.yy

    def perfect(tokens):
        logits = torch.full((*tokens.shape, len(smoke_tokenizer)), -1e4)
        for i, row in enumerate(tokens.tolist()):
            for y in range(yy_of[tuple(row[1:])] + 1, 100):
                logits[i, -1, years[y]] = 0.0
        return logits

    m = behaviours.greater_than_metrics(perfect, smoke_tokenizer, smoke_world, torch.device("cpu"))
    assert abs(m["greater_than_prob_diff"] - 1.0) < 1e-4 and abs(m["greater_than_prob_mass"] - 1.0) < 1e-4


def test_ioi_metrics_read_the_io_and_subject_logits(smoke_world, smoke_tokenizer):
    io_of = {tuple(behaviours.encode_strict(smoke_tokenizer, p.prompt)): behaviours.encode_strict(smoke_tokenizer, p.io)[0]
             for p in smoke_world.ioi_eval}

    def prefers_io(tokens):
        logits = torch.zeros((*tokens.shape, len(smoke_tokenizer)))
        for i, row in enumerate(tokens.tolist()):
            logits[i, -1, io_of[tuple(row[1:])]] = 1.0
        return logits

    m = behaviours.ioi_metrics(prefers_io, smoke_tokenizer, smoke_world, torch.device("cpu"))
    assert m["ioi_accuracy"] == 1.0 and abs(m["ioi_logit_diff"] - 1.0) < 1e-6


def test_a_topic_continuation_counts_only_topic_words_the_opening_lacks():
    from workbench.behaviours import adds_topic_words

    opening = "From my experience, the salty wave drifts near the reef."
    assert adds_topic_words(opening, " The wave drifts near the reef.", "ocean") == set()
    assert adds_topic_words(opening, " The whale swims.", "ocean") == {"whale", "swims"}
    assert adds_topic_words(opening, " The oven bakes.", "ocean") == set()
