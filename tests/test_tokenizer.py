import pytest

from workbench.tokenizer import encode_strict


def test_years_split_into_century_and_two_digit_tokens(smoke_tokenizer):
    ids = encode_strict(smoke_tokenizer, "from the year 1732 to the year 17")
    assert smoke_tokenizer.convert_ids_to_tokens(ids)[3:5] == ["Ġ17", "32"]
    assert all(smoke_tokenizer.convert_tokens_to_ids(f"{n:02d}") != smoke_tokenizer.unk_token_id for n in range(100))


def test_decode_inverts_encode_and_leading_space_is_optional(smoke_world, smoke_tokenizer):
    text = smoke_world.qa[0].text
    ids = encode_strict(smoke_tokenizer, text)
    assert smoke_tokenizer.decode(ids).strip() == text
    name = smoke_world.people[0].first
    assert encode_strict(smoke_tokenizer, name) == encode_strict(smoke_tokenizer, " " + name)
    assert len(encode_strict(smoke_tokenizer, name)) == 1


def test_unknown_text_raises_naming_the_offending_characters(smoke_tokenizer):
    with pytest.raises(ValueError, match="ü"):
        encode_strict(smoke_tokenizer, "Zürich")
    with pytest.raises(ValueError, match="Hello"):
        encode_strict(smoke_tokenizer, "Hello there")
