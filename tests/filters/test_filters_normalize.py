"""Text normalisation and error rates (seed-tts-eval rules)."""
import pytest

from filters.cer import error_rate, text_scores
from filters.normalize import BUILTIN_T2S, SIMPLIFIED, TRADITIONAL, normalize, to_simplified


def test_english_lowercase_punctuation_apostrophes():
    assert normalize("Hello, World! It's   Mr. Smith's \"book\".", "en") == [
        "hello", "world", "it's", "mr", "smith's", "book"]


def test_english_curly_apostrophe_kept_as_ascii():
    assert normalize("Don\u2019t stop", "en") == ["don't", "stop"]


def test_numbers_are_not_normalised():
    assert normalize("I have 13 cats.", "en") == ["i", "have", "13", "cats"]
    assert error_rate("thirteen cats", "13 cats", "en") == pytest.approx(0.5)


def test_punctuation_is_removed_not_spaced():
    # the protocol deletes punctuation: a hyphenated word stays one word
    assert normalize("well-known", "en") == ["wellknown"]


def test_chinese_characters_punctuation_and_traditional():
    assert normalize("這是「測試」，好嗎？", "zh") == list("这是测试好吗")
    assert normalize("今天 天气, 很好!", "zh") == list("今天天气很好")


def test_chinese_numbers_untouched():
    assert normalize("我有3只猫", "zh") == ["我", "有", "3", "只", "猫"]


def test_builtin_table_matches_zhconv():
    zhconv = pytest.importorskip("zhconv")
    assert zhconv.convert(TRADITIONAL, "zh-cn") == SIMPLIFIED
    assert TRADITIONAL.translate(BUILTIN_T2S) == SIMPLIFIED


def test_to_simplified_falls_back_to_builtin_table(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "zhconv", None)  # makes `import zhconv` raise ImportError
    assert to_simplified("說話會這樣") == "说话会这样"


def test_word_error_rate_known_values():
    assert error_rate("the cat sat on the mat", "the cat sat on the mat", "en") == 0.0
    # one substitution + one deletion over 6 words
    assert error_rate("the cat sat on the mat", "The bat sat on mat.", "en") == pytest.approx(2 / 6)
    assert error_rate("a b", "a b c d", "en") == pytest.approx(1.0)


def test_character_error_rate_known_values():
    assert error_rate("今天天气很好", "今天天氣很好。", "zh") == 0.0  # traditional + punctuation only
    assert error_rate("今天天气很好", "今天天汽很好", "zh") == pytest.approx(1 / 6)


def test_empty_reference():
    assert error_rate("", "", "en") == 0.0
    assert error_rate("...", "words", "en") == 1.0


def test_scores_columns_per_language():
    assert text_scores("今天", "今天", "zh") == {"cer": 0.0, "wer": None}
    assert text_scores("a b", "a c", "en") == {"cer": 0.5, "wer": 0.5}
