"""Tokenisation and the vocabulary."""

import pytest

from captioner.vocab import END, PAD, SPECIALS, START, UNK, Vocabulary, tokenize


@pytest.mark.parametrize("text, words", [
    ("A Dog RUNS", ["a", "dog", "runs"]),
    ("Hello, world! A dog... (running)", ["hello", "world", "a", "dog", "running"]),
    ("a black-and-white cat;two dogs", ["a", "black", "and", "white", "cat", "two", "dogs"]),
    ("The dog's ball", ["the", "dog's", "ball"]),
    ("The dog\u2019s ball", ["the", "dog's", "ball"]),  # typographic apostrophe
    ("'quoted' words", ["quoted", "words"]),  # quotes are not part of the word
    ("rock 'n' roll", ["rock", "n", "roll"]),
    ("dogs' toys", ["dogs", "toys"]),
    ("2 cats on 1 mat", ["2", "cats", "on", "1", "mat"]),
    ("  tabs\tand\nnewlines  ", ["tabs", "and", "newlines"]),
    ("", []),
    ("?! ' ...", []),
])
def test_tokenize(text, words):
    assert tokenize(text) == words


def test_specials_come_first_in_a_fixed_order():
    vocab = Vocabulary.build(["a dog", "a cat"])
    assert vocab.words[:4] == [PAD, START, END, UNK] == list(SPECIALS)
    assert (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id) == (0, 1, 2, 3)


def test_build_orders_by_frequency_then_alphabetically():
    vocab = Vocabulary.build(["A dog runs.", "a cat sits", "a dog sits", "Zebra"])
    assert vocab.words[4:] == ["a", "dog", "sits", "cat", "runs", "zebra"]
    assert len(vocab) == 10


def test_build_min_freq_and_max_size():
    captions = ["a dog runs", "a dog sits", "a cat sits", "a bird"]
    assert Vocabulary.build(captions, min_freq=2).words[4:] == ["a", "dog", "sits"]
    assert Vocabulary.build(captions, min_freq=4).words[4:] == ["a"]
    assert Vocabulary.build(captions, min_freq=5).words == list(SPECIALS)
    limited = Vocabulary.build(captions, max_size=6)
    assert len(limited) == 6 and limited.words[4:] == ["a", "dog"]
    both = Vocabulary.build(captions, min_freq=2, max_size=100)
    assert both.words[4:] == ["a", "dog", "sits"]


def test_build_never_duplicates_special_words():
    vocab = Vocabulary.build(["<pad> <end> unk", "unk"])
    assert len(set(vocab.words)) == len(vocab.words)
    assert vocab.words[:4] == list(SPECIALS)


def test_encode_decode_round_trip():
    vocab = Vocabulary.build(["a red square", "a blue circle on the left"])
    ids = vocab.encode("A red circle, on the LEFT.")
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
    assert [vocab.words[i] for i in ids[1:-1]] == ["a", "red", "circle", "on", "the", "left"]
    assert vocab.decode(ids) == ["a", "red", "circle", "on", "the", "left"]
    assert vocab.decode(vocab.encode("")) == []


def test_unknown_words_become_unk():
    vocab = Vocabulary.build(["a red square"])
    ids = vocab.encode("a purple square")
    assert ids == [vocab.start_id, vocab.index["a"], vocab.unk_id, vocab.index["square"],
                   vocab.end_id]
    assert vocab.decode(ids) == ["a", UNK, "square"]


def test_encode_max_len_keeps_start_and_end():
    vocab = Vocabulary.build(["one two three four five"])
    ids = vocab.encode("one two three four five", max_len=3)
    assert len(ids) == 5 and ids[0] == vocab.start_id and ids[-1] == vocab.end_id
    assert vocab.decode(ids) == ["one", "two", "three"]


def test_decode_stops_at_end_and_drops_pad_and_start():
    vocab = Vocabulary.build(["a dog"])
    a, dog = vocab.index["a"], vocab.index["dog"]
    assert vocab.decode([vocab.start_id, a, vocab.pad_id, dog, vocab.end_id, a, a]) == ["a", "dog"]
    assert vocab.decode([a, dog]) == ["a", "dog"]  # no <end>: everything
    assert vocab.decode([vocab.end_id, a]) == []


def test_invalid_vocabularies_are_refused():
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary(["a", "dog"])
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary([])
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary([START, PAD, END, UNK, "a"])
    with pytest.raises(ValueError, match="repeat"):
        Vocabulary([*SPECIALS, "dog", "dog"])
