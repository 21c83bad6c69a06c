"""Keywords of the scripts written without spaces between words — Chinese, Japanese,
Thai, Lao, Khmer, Myanmar — which a keyword index would otherwise keep as one word per
sentence, so that a question finds nothing; and of Korean, written with spaces but with
its particles and endings joined to its words ("아크미에게", to Acme), so that a word
("아크미") is rarely a word of the index as it stands in a record.

Each run of letters of these scripts is read as its overlapping pairs of letters
("見積書" → "見積 積書"; "아크미에게" → "아크 크미 미에 에게"), as Lucene's CJK analyzer
reads Chinese, Japanese and Korean: a word of two letters (syllables, in Korean) or
more is found wherever it stands, whatever is joined to it, and a record sharing more
pairs with the question ranks higher. A letter keeps its marks (Thai vowels and tone marks:
"ที่"). Text of no such run is left exactly as it is, so a search in other scripts
finds what it found before.
"""

from __future__ import annotations

import itertools
import re
import unicodedata

# Blocks of scripts written without spaces, whose marks and signs are sorted out below.
SMALL_BLOCKS = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x31F0, 0x31FF),  # Katakana extensions
    (0xFF66, 0xFF9F),  # halfwidth Katakana
)
# Blocks of letters alone: the Han ideographs, and the iteration and closing marks and
# the ideographic zero (U+3005 to U+3007); Korean's syllables and its letters alone
# ("ㅋㅋ").
HAN_BLOCKS = (
    (0x3005, 0x3007),
    (0x3131, 0x318E),
    (0xAC00, 0xD7A3),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x3134F),
)


def _class(points: list[int]) -> str:
    """A regex character class of ``points`` (sorted), consecutive ones as ranges."""
    spans: list[list[int]] = []
    for point in points:
        if spans and spans[-1][1] == point - 1:
            spans[-1][1] = point
        else:
            spans.append([point, point])
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in spans
    )


_SMALL = [point for start, end in SMALL_BLOCKS for point in range(start, end + 1)]
# The marks a letter of these scripts carries (a keyword index must keep them in words).
MARKS = "".join(chr(p) for p in _SMALL if unicodedata.category(chr(p))[0] == "M")
_LETTER = "[{}{}]".format(
    _class([p for p in _SMALL if unicodedata.category(chr(p))[0] in "LN"]),
    _class([p for start, end in HAN_BLOCKS for p in range(start, end + 1)]),
)
_MARK = f"[{_class([ord(mark) for mark in MARKS])}]"
_RUN = re.compile(f"(?:{_LETTER}{_MARK}*)+")
_WITH_MARKS = re.compile(f"{_LETTER}{_MARK}*")
# A word of any script: letters and digits, and the marks of these.
WORD = re.compile(f"(?:[^\\W_]|{_MARK})+")


def in_pairs(text: str) -> str:
    """``text`` with each run of letters of a script written without spaces as its
    overlapping pairs of letters, spaced ("見積書を" → " 見積 積書 書を "); the very same
    text when it holds none."""
    if _RUN.search(text) is None:
        return text
    return _RUN.sub(lambda run: f" {' '.join(_pairs(run.group()))} ", text)


def unspaced(word: str) -> bool:
    """Whether ``word`` is of a script written without spaces (then one letter is a
    word, where in others it is an initial or a typo)."""
    return _RUN.fullmatch(word) is not None


def _pairs(run: str) -> list[str]:
    letters = _WITH_MARKS.findall(run)
    if len(letters) == 1:
        return letters
    return [first + second for first, second in itertools.pairwise(letters)]
