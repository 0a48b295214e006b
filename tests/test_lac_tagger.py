"""How tagged characters become (word, label) pieces: `tasks.lac.tagger.words_from_tags`, no model needed."""
from __future__ import annotations

from tasks.lac.tagger import UserDict, words_from_tags


def _words(text: str, tags: list[str], user_dict: UserDict | None = None) -> list[tuple[str, str]]:
    pos = [i for i, c in enumerate(text) if not c.isspace()]
    return words_from_tags(text, pos, "".join(text[i] for i in pos), tags, user_dict)


def test_lac_tags_group_by_b_and_label():
    assert _words("我们爱北京", ["r-B", "r-I", "v-B", "LOC-B", "LOC-I"]) == [("我们", "r"), ("爱", "v"), ("北京", "LOC")]
    # two entities of one label side by side stay two; an I after another label starts a piece
    assert _words("北京上海他", ["LOC-B", "LOC-I", "LOC-B", "LOC-I", "r-I"]) == [
        ("北京", "LOC"), ("上海", "LOC"), ("他", "r")]


def test_ner_only_tags_keep_the_text_between_entities_whole():
    """An MSRA model tags O outside entities; before, each O character came out as a word of its own."""
    tags = ["O", "O", "LOC-B", "LOC-I", "O", "O", "PER-B", "PER-I", "O"]
    assert _words("今天北京下雨张三说", tags) == [("今天", "O"), ("北京", "LOC"), ("下雨", "O"), ("张三", "PER"),
                                           ("说", "O")]
    assert _words("今天 下雨", ["O"] * 4) == [("今天", "O"), ("下雨", "O")]  # whitespace still separates


def test_user_dict_overrides_the_model():
    d = UserDict({"爱北京": "v"})
    assert _words("我们爱北京", ["r-B", "r-I", "v-B", "LOC-B", "LOC-I"], d) == [("我们", "r"), ("爱北京", "v")]
