"""Small helpers shared by the corpus readers."""

from __future__ import annotations

import unicodedata

from corpus.types import CorpusError


def nfc(text: str) -> str:
    """``text`` in Unicode NFC (the composed form). User ids and labels are compared in this form, so ``café``
    typed with a combining accent is the same id as with the precomposed letter. ASCII is returned as is."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def shown_id(uid: str) -> str:
    """An id as an error shows it: its repr, and for non-ASCII text also the escaped form, so look-alikes
    (``'café'`` NFC vs NFD, a Cyrillic ``а``, a zero-width space) can be told apart."""
    return repr(uid) if uid.isascii() else f"{uid!r} (escaped: {ascii(uid)})"


def decode_utf8(data: bytes, name: str) -> str:
    """Decode a corpus file (a UTF-8 byte-order mark is allowed); errors name the line of the bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise CorpusError(name, line, None, f"not valid UTF-8 ({err.reason} at byte {err.start})") from None
