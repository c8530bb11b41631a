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


def _prompt_of(row: list[int], tokenizer) -> tuple[int, ...]:
    """The prompt ids of a row a metric passed to ``logits_fn``: after BOS, before any right padding (the pad
    token is BOS, which no prompt contains). Its last token, at position ``len(prompt)``, is where the
    next-token prediction must be read."""
    prompt = row[1:]  # row[0] is BOS
    while prompt and prompt[-1] == tokenizer.pad_token_id:
        prompt.pop()
    return tuple(prompt)


def _year_predictor(world, tokenizer, years_of, other_logit: float = -1e4):
    """A ``logits_fn`` that, after each greater-than prompt, gives logit 0 to the years ``years_of(YY)``,
    -1e4 to the other years and ``other_logit`` to every token that is not a year.

    Year tokens are found by tokenizing the prompt followed by the two digits, independently of the
    metric's own lookup.
    """
    by_prompt = {tuple(behaviours.encode_strict(tokenizer, g.prompt)): g for g in world.gt_eval}
    year_tokens = {}
    for prompt, g in by_prompt.items():
        ids = [behaviours.encode_strict(tokenizer, g.prompt + f"{y:02d}") for y in range(100)]
        assert all(len(i) == len(prompt) + 1 for i in ids), "the two digits should be one token after a prompt"
        year_tokens[prompt] = [i[-1] for i in ids]

    def fn(tokens):
        logits = torch.full((*tokens.shape, len(tokenizer)), other_logit)
        for i, row in enumerate(tokens.tolist()):
            prompt = _prompt_of(row, tokenizer)
            chosen = set(years_of(by_prompt[prompt].yy))
            for y, token in enumerate(year_tokens[prompt]):
                logits[i, len(prompt), token] = 0.0 if y in chosen else -1e4
        return logits
    return fn


def _gt(fn, world, tokenizer) -> dict:
    return behaviours.greater_than_metrics(fn, tokenizer, world, torch.device("cpu"))


def test_greater_than_prob_diff_is_one_for_a_perfect_predictor(smoke_world, smoke_tokenizer):
    m = _gt(_year_predictor(smoke_world, smoke_tokenizer, lambda yy: range(yy + 1, 100)), smoke_world, smoke_tokenizer)
    assert abs(m["greater_than_prob_diff"] - 1.0) < 1e-4 and abs(m["greater_than_prob_mass"] - 1.0) < 1e-4


def test_greater_than_counts_the_start_year_itself_as_not_greater(smoke_world, smoke_tokenizer):
    # all mass on YY: -1 with ">"; a metric using ">=" would give +1
    same = _gt(_year_predictor(smoke_world, smoke_tokenizer, lambda yy: [yy]), smoke_world, smoke_tokenizer)
    assert abs(same["greater_than_prob_diff"] + 1.0) < 1e-4
    # all mass on YY + 1 (every smoke YY is at most 98): +1; a metric using "> YY + 1" would give -1
    after = _gt(_year_predictor(smoke_world, smoke_tokenizer, lambda yy: [yy + 1]), smoke_world, smoke_tokenizer)
    assert abs(after["greater_than_prob_diff"] - 1.0) < 1e-4


def test_greater_than_prob_diff_is_restricted_to_year_tokens_and_the_mass_is_not(smoke_world, smoke_tokenizer):
    # perfect over the years, but every non-year token gets a far larger logit: the 100 years share ~1e-10 of
    # the full softmax, so an unrestricted softmax would give a prob diff of ~0, not 1
    fn = _year_predictor(smoke_world, smoke_tokenizer, lambda yy: range(yy + 1, 100), other_logit=20.0)
    m = _gt(fn, smoke_world, smoke_tokenizer)
    assert abs(m["greater_than_prob_diff"] - 1.0) < 1e-4 and m["greater_than_prob_mass"] < 1e-6


def test_ioi_metrics_read_the_io_and_subject_logits(smoke_world, smoke_tokenizer):
    def first_token(text: str) -> int:
        return behaviours.encode_strict(smoke_tokenizer, text)[0]

    names = {tuple(behaviours.encode_strict(smoke_tokenizer, p.prompt)): (first_token(p.io), first_token(p.s))
             for p in smoke_world.ioi_eval}
    other = smoke_tokenizer.convert_tokens_to_ids(".")  # a token that is neither name

    def predictor(io_logit: float, s_logit: float, other_logit: float):
        def fn(tokens):
            logits = torch.zeros((*tokens.shape, len(smoke_tokenizer)))
            for i, row in enumerate(tokens.tolist()):
                prompt = _prompt_of(row, smoke_tokenizer)
                io, s = names[prompt]
                logits[i, len(prompt), [io, s, other]] = torch.tensor([io_logit, s_logit, other_logit])
            return logits
        return fn

    def ioi(fn) -> dict:
        return behaviours.ioi_metrics(fn, smoke_tokenizer, smoke_world, torch.device("cpu"))

    m = ioi(predictor(1.0, 0.0, 0.0))
    assert m["ioi_accuracy"] == 1.0 and abs(m["ioi_logit_diff"] - 1.0) < 1e-6 and m["ioi_top1_accuracy"] == 1.0
    m = ioi(predictor(1.0, 3.0, 0.0))  # prefers the subject: the sign of IO - S matters
    assert m["ioi_accuracy"] == 0.0 and abs(m["ioi_logit_diff"] + 2.0) < 1e-6 and m["ioi_top1_accuracy"] == 0.0
    m = ioi(predictor(1.0, 0.5, 2.0))  # IO above S, but another token on top: accuracy is not top-1 accuracy
    assert m["ioi_accuracy"] == 1.0 and abs(m["ioi_logit_diff"] - 0.5) < 1e-6 and m["ioi_top1_accuracy"] == 0.0


def test_a_topic_continuation_counts_only_topic_words_the_opening_lacks():
    from workbench.behaviours import adds_topic_words

    opening = "From my experience, the salty wave drifts near the reef."
    assert adds_topic_words(opening, " The wave drifts near the reef.", "ocean") == set()
    assert adds_topic_words(opening, " The whale swims.", "ocean") == {"whale", "swims"}
    assert adds_topic_words(opening, " The oven bakes.", "ocean") == set()


def test_relation_probe_scores_each_layer_on_unseen_templates(tiny_bridge, smoke_world):
    from workbench.behaviours import relation_probe

    scores = relation_probe(tiny_bridge, smoke_world)
    assert len(scores) == tiny_bridge.cfg.n_layers and all(0.0 <= s <= 1.0 for s in scores)
