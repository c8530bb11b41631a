"""A word-level tokenizer for the synthetic world, GPT-2 style, built locally with ``tokenizers``.

Every word and invented name is one token with its leading space (" Paris"), digits are split in pairs
("1732" -> " 17", "32") so a year is a century token plus a two-digit token as in GPT-2, and decoding is
exact (byte-level). A leading space is added to every text that lacks one, so a word is the same token at the start
of a prompt as mid-sentence, and GPT-2-style code that writes " Mary" gets the same token as "Mary". Text with words outside the vocabulary raises an error naming them.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

BOS = "<|endoftext|>"
UNK = "<|unk|>"
PIECE_PATTERN = r"'s| ?[A-Za-z]+| ?\d{2}| ?\d|\n| ?[^\sA-Za-z\d]|\s+"


def _pipeline(tok: Tokenizer) -> Tokenizer:
    # One leading space, whether or not the text has one: "Mary" and " Mary" are both the token " Mary".
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(" "), normalizers.Replace(Regex("^ +"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


_SPLITTER = _pipeline(Tokenizer(models.WordLevel(vocab={UNK: 0}, unk_token=UNK)))


def pieces(text: str) -> list[str]:
    """The byte-level pieces ``text`` splits into (each is one token when in the vocabulary)."""
    normalized = _SPLITTER.normalizer.normalize_str(text)
    return [p for p, _ in _SPLITTER.pre_tokenizer.pre_tokenize_str(normalized)]


def build_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A tokenizer whose vocabulary is every piece of ``texts`` plus all 100 two-digit tokens, sorted."""
    vocab: set[str] = set()
    for text in texts:
        vocab.update(pieces(text))
    vocab.update(pieces("".join(f"{n:02d}" for n in range(100)))[1:])  # "00".."99" without a space
    vocab.update(pieces(" ".join(f"{n:02d}" for n in range(100))))  # " 00".." 99"
    ordered = [BOS, UNK, *sorted(vocab - {BOS, UNK})]
    tok = _pipeline(Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(ordered)}, unk_token=UNK)))
    tok.add_special_tokens([AddedToken(BOS, special=True, normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS, pad_token=BOS,
                                   unk_token=UNK, model_max_length=1024, clean_up_tokenization_spaces=False)


def encode_strict(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    """Token ids of ``text`` (no BOS); raises ``ValueError`` naming any words the vocabulary lacks."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    unk = tokenizer.unk_token_id
    if unk is not None and unk in ids:
        words = pieces(text)
        missing = sorted({w for w in words if tokenizer.convert_tokens_to_ids(w) == unk})
        readable = [tokenizer.convert_tokens_to_string([w]) for w in missing]
        odd_chars = sorted({ch for w in readable for ch in w if not (ch.isascii() and (ch.isalnum() or ch in " .,:;?!'-\n"))})
        hint = f" (characters outside the synthetic alphabet: {odd_chars})" if odd_chars else ""
        raise ValueError(
            f"text has {len(missing)} piece(s) outside the tokenizer's vocabulary: {readable[:20]}{hint}. "
            "The embedded model's vocabulary is the synthetic world's words; use words from "
            "`world.vocab` or the data set templates, or load a real model such as 'gpt2'.")
    return ids
