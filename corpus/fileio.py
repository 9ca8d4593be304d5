"""Small helpers shared by the corpus readers."""

from __future__ import annotations

from corpus.types import CorpusError


def decode_utf8(data: bytes, name: str) -> str:
    """Decode a corpus file (a UTF-8 byte-order mark is allowed); errors name the line of the bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise CorpusError(name, line, None, f"not valid UTF-8 ({err.reason} at byte {err.start})") from None
