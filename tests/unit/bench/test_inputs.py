"""Input sources: uniqueness, Zipf skew, file cycling, and the ``--inputs`` syntax."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest

from dlproxy.bench.inputs import (
    FileInputs,
    UniqueInputs,
    ZipfInputs,
    counter_word,
    parse_inputs,
)


def test_unique_inputs_never_repeat_across_blocks() -> None:
    source = UniqueInputs(seed=3)
    sentences = source.take(2500) + source.take(1) + source.take(4000)
    assert len(set(sentences)) == len(sentences) == 6501


def test_unique_inputs_are_sentence_sized() -> None:
    lengths = {len(s.split()) for s in UniqueInputs(seed=0).take(1000)}
    assert min(lengths) >= 8
    assert max(lengths) <= 20


def test_unique_inputs_are_deterministic_per_seed_and_disjoint_across_seeds() -> None:
    assert UniqueInputs(seed=5).take(500) == UniqueInputs(seed=5).take(500)
    first = set(UniqueInputs(seed=5).take(2000))
    second = set(UniqueInputs(seed=6).take(2000))
    assert not first & second  # a second run with another seed meets a cold cache


def test_unique_inputs_work_from_any_base() -> None:
    sentences = UniqueInputs(seed=0, base=["a b", "a", "b"]).take(300)
    assert len(set(sentences)) == 300


def test_counter_words_are_distinct_and_single_words() -> None:
    words = [counter_word(seed, index) for seed in range(70) for index in range(70)]
    assert len(set(words)) == len(words)
    assert all(w.isalpha() and " " not in w for w in words)


@pytest.mark.parametrize("exponent", [0.8, 1.0, 1.5])
def test_zipf_rank_one_share_follows_the_exponent(exponent: float) -> None:
    pool = 200
    source = ZipfInputs(exponent, pool=pool, seed=1)
    drawn = source.take(50_000) + source.take(50_000)
    counts = collections.Counter(drawn)
    theory = 1.0 / np.sum(1.0 / np.arange(1, pool + 1) ** exponent)
    share = counts[source.pool[0]] / len(drawn)
    assert share == pytest.approx(theory, rel=0.05)
    # Popularity falls with rank: rank 1 beats rank 2 beats rank 10 beats rank 100.
    ranks = [counts[source.pool[r]] for r in (0, 1, 9, 99)]
    assert ranks == sorted(ranks, reverse=True)
    assert set(counts) <= set(source.pool)


def test_zipf_exponent_zero_is_uniform() -> None:
    source = ZipfInputs(0.0, pool=10, seed=2)
    counts = collections.Counter(source.take(20_000))
    assert len(counts) == 10
    assert max(counts.values()) / min(counts.values()) < 1.2


def test_zipf_pool_is_distinct() -> None:
    source = ZipfInputs(1.1, pool=1000, seed=0)
    assert len(set(source.pool)) == 1000


def test_file_inputs_skip_blank_lines_and_cycle(tmp_path: Path) -> None:
    path = tmp_path / "inputs.txt"
    path.write_text("first line\n\n  second line  \nthird\n", encoding="utf-8")
    source = FileInputs(path)
    assert source.take(4) == ["first line", "second line", "third", "first line"]
    assert source.take(2) == ["second line", "third"]


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n \n", encoding="utf-8")
    with pytest.raises(ValueError, match="no non-blank lines"):
        FileInputs(path)


def test_parse_inputs(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("hello\n", encoding="utf-8")
    assert isinstance(parse_inputs("unique"), UniqueInputs)
    zipf = parse_inputs("zipf:1.2")
    assert isinstance(zipf, ZipfInputs)
    assert zipf.description == "zipf:1.2:1000"
    assert parse_inputs("zipf:0.9:50").description == "zipf:0.9:50"
    assert parse_inputs(f"file:{path}").take(1) == ["hello"]


@pytest.mark.parametrize("spec", ["", "random", "zipf", "zipf:x", "zipf:-1", "zipf:1:0", "file:"])
def test_parse_inputs_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="--inputs"):
        parse_inputs(spec)
