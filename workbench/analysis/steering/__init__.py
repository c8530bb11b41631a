"""Steering with SAE features selected by output score (Arad, Mueller & Belinkov 2025), beside the methods it is
compared with, evaluated AxBench-style by the offline judge of :mod:`workbench.analysis.judge`.

Definitions and the official code's protocol: ``../shared/papers/README.md`` section 5 (technion-cs-nlp/
saes-are-good-for-steering). One module per step, each documenting its part:

- :mod:`~workbench.analysis.steering.scores`: the logit lens, input and output scores of every feature (and each
  topic's, with its words in place of the logit lens's);
- :mod:`~workbench.analysis.steering.engine`: steering during generation (a feature's code amplified under the
  splice, error term kept, or a direction added) and the generation engines;
- :mod:`~workbench.analysis.steering.layers`: the SAE at each layer steering reads, scored;
- :mod:`~workbench.analysis.steering.methods`: the methods (SAE features by activation, input score, output score
  and the paper's filter; DiffMean; a supervised vector; prompting) and what each picks;
- :mod:`~workbench.analysis.steering.evaluation`: generate and judge every method at every factor, choose each
  one's factor on validation prompts and score it on test prompts;
- :mod:`~workbench.analysis.steering.report`: tables, distributions, the headline ratios and the results file;
- :mod:`~workbench.analysis.steering.explorer`: a steered continuation beside the unsteered one, by hand.

Everything a notebook or test uses is importable from here: ``from workbench.analysis import steering``.
"""

from workbench.analysis.steering.engine import (
    ENGINES,
    NON_BOS,
    Steering,
    added_per_row,
    amplify,
    generate_cached,
    generate_steered,
)
from workbench.analysis.steering.evaluation import (
    FACTORS,
    Arm,
    SteeringConfig,
    arms_for,
    best_factors,
    factor_curves,
    method_table,
    neutral_prompts,
    run_arms,
    time_one_evaluation,
)
from workbench.analysis.steering.explorer import explore_html, steering_explorer
from workbench.analysis.steering.layers import (
    STEERING_SAE,
    LayerDictionary,
    SteeringLayer,
    score_layer,
    steering_dictionaries,
    steering_scale,
)
from workbench.analysis.steering.methods import (
    DIRECTION_METHODS,
    METHOD_NAMES,
    METHODS,
    SAE_METHODS,
    class_activations,
    contrast,
    mean_codes,
    select_features,
    topic_continuations,
    train_steering_vectors,
)
from workbench.analysis.steering.report import (
    INPUT_BINS,
    OUTPUT_BINS,
    by_factor,
    feature_choices,
    feature_choices_records,
    headline,
    ratio,
    record_results,
    score_distribution,
    score_summary,
    side_by_side,
    summarise,
)
from workbench.analysis.steering.scores import (
    AMPLIFICATION,
    HIGH_INPUT_SCORE,
    HIGH_OUTPUT_SCORE,
    LOGIT_LENS_K,
    NEUTRAL_PROMPT,
    PAPER_PROMPT,
    FeatureScores,
    TopExamples,
    input_scores,
    input_scores_from_codes,
    input_scores_from_examples,
    layer_of,
    logit_lens_top_tokens,
    next_token_top,
    output_score_from_probs,
    output_scores,
    topic_word_ids,
)

__all__ = [
    "AMPLIFICATION", "DIRECTION_METHODS", "ENGINES", "FACTORS", "HIGH_INPUT_SCORE", "HIGH_OUTPUT_SCORE", "INPUT_BINS",
    "LOGIT_LENS_K", "METHODS", "METHOD_NAMES", "NEUTRAL_PROMPT", "NON_BOS", "OUTPUT_BINS", "PAPER_PROMPT",
    "SAE_METHODS", "STEERING_SAE", "Arm", "FeatureScores", "LayerDictionary", "Steering", "SteeringConfig",
    "SteeringLayer", "TopExamples", "added_per_row", "amplify", "arms_for", "best_factors", "by_factor",
    "class_activations", "contrast", "explore_html", "factor_curves", "feature_choices", "feature_choices_records",
    "generate_cached", "generate_steered", "headline", "input_scores", "input_scores_from_codes",
    "input_scores_from_examples", "layer_of", "logit_lens_top_tokens", "mean_codes", "method_table", "neutral_prompts",
    "next_token_top", "output_score_from_probs", "output_scores", "ratio", "record_results", "run_arms",
    "score_distribution", "score_layer", "score_summary", "select_features", "side_by_side", "steering_dictionaries",
    "steering_explorer", "steering_scale", "summarise", "time_one_evaluation", "topic_continuations",
    "topic_word_ids", "train_steering_vectors",
]
