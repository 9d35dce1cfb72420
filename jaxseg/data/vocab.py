"""Caption vocabulary and tokenisation (dense captioning).

Tokenisation (`tokenize`): the text is lower-cased (bytes are decoded as UTF-8, bad bytes
replaced) and split into words, a word being a run of ASCII letters and digits [a-z0-9]
that may hold apostrophes between such runs ("man's", "don't"). Everything else
(punctuation, other symbols, letters outside a-z) separates words and is dropped:

  tokenize("A man's RED hat, on-top.")  ->  ["a", "man's", "red", "hat", "on", "top"]

Ids: `PAD_ID` 0, `START_ID` 1, `END_ID` 2, `UNK_ID` 3 always; the words follow, most
frequent first (ties alphabetical), so a vocabulary built from the same captions is the
same. A caption of max_length words or fewer is encoded as its word ids, `END_ID`, then
`PAD_ID` up to max_length + 1 ids; a longer one is truncated to its first max_length
words (then `END_ID`). The START token is never written by `encode`: a decoder feeds
`START_ID` as its first input and predicts the encoded ids.

Files (`Vocabulary.save` / `Vocabulary.load`): JSON {"format": "jaxseg-vocab-1",
"words": ["<pad>", "<start>", "<end>", "<unk>", ...]} (index = id).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
from typing import Iterable

import numpy as np

from jaxseg.errors import ConfigError, DataError

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
PAD_ID, START_ID, END_ID, UNK_ID = 0, 1, 2, 3
SPECIALS = (PAD, START, END, UNK)
FORMAT = "jaxseg-vocab-1"
_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def _text(text: str | bytes) -> str:
  if isinstance(text, (bytes, np.bytes_)):
    return bytes(text).decode("utf-8", errors="replace")
  return str(text)


def tokenize(text: str | bytes) -> list[str]:
  """Lower-cased words of `text`: runs of [a-z0-9], apostrophes inside a word kept
  ("man's"), punctuation and every other character dropped (module docstring)."""
  return _WORD_RE.findall(_text(text).lower())


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Words by id (`words[i]` is id i); the 4 specials `SPECIALS` come first."""
  words: tuple[str, ...]
  _index: dict = dataclasses.field(init=False, repr=False, compare=False, hash=False)

  def __post_init__(self):
    words = tuple(str(w) for w in self.words)
    if words[:len(SPECIALS)] != SPECIALS:
      raise ConfigError(f"vocabulary starts with {list(words[:len(SPECIALS)])}; expected "
                        f"the special tokens {list(SPECIALS)} first")
    index = {w: i for i, w in enumerate(words)}
    if len(index) != len(words):
      dup = sorted({w for w in words if words.count(w) > 1})
      raise ConfigError(f"vocabulary lists {dup[:5]} more than once; expected unique words")
    object.__setattr__(self, "words", words)
    object.__setattr__(self, "_index", index)

  @classmethod
  def build(cls, captions: Iterable[str | bytes], min_count: int = 1,
            max_size: int | None = None) -> "Vocabulary":
    """The words (`tokenize`) of `captions` seen at least `min_count` times, by
    decreasing count then alphabetically; `max_size` caps the whole vocabulary (the 4
    specials included: ids 0..max_size - 1), keeping the most frequent words."""
    if not isinstance(min_count, (int, np.integer)) or min_count < 1:
      raise ConfigError(f"vocabulary min_count={min_count!r}; expected an integer >= 1")
    if max_size is not None and (not isinstance(max_size, (int, np.integer))
                                 or max_size < len(SPECIALS)):
      raise ConfigError(f"vocabulary max_size={max_size!r}; expected None or an integer "
                        f">= {len(SPECIALS)} (the special tokens count)")
    counts = collections.Counter()
    for caption in captions:
      counts.update(tokenize(caption))
    words = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIALS),
                   key=lambda w: (-counts[w], w))
    if max_size is not None:
      words = words[:max_size - len(SPECIALS)]
    return cls(SPECIALS + tuple(words))

  def __len__(self) -> int:
    return len(self.words)

  def id(self, word: str) -> int:
    """The id of `word` (UNK_ID if it is not in the vocabulary)."""
    return self._index.get(word, UNK_ID)

  def encode(self, caption: str | bytes, max_length: int) -> tuple[np.ndarray, bool]:
    """(int32 [max_length + 1]: word ids, END_ID, PAD_ID..., truncated): a caption of
    more than max_length words keeps its first max_length; unknown words are UNK_ID; a
    caption without words gives [END_ID, PAD_ID, ...]."""
    _check_length(max_length)
    words = tokenize(caption)
    truncated = len(words) > max_length
    ids = np.full(max_length + 1, PAD_ID, np.int32)
    kept = [self.id(w) for w in words[:max_length]]
    ids[:len(kept)] = kept
    ids[len(kept)] = END_ID
    return ids, truncated

  def encode_batch(self, captions, max_length: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`captions` (array of bytes / str, any shape) -> (ids int32 [..., max_length + 1],
    truncated bool [...], empty bool [...]) as `encode`, except that a caption without
    words (e.g. b"", the padded rows of a batch) gives an all-PAD_ID row and empty=True."""
    _check_length(max_length)
    captions = np.asarray(captions, dtype=object)
    flat = captions.reshape(-1)
    ids = np.full((len(flat), max_length + 1), PAD_ID, np.int32)
    truncated = np.zeros(len(flat), bool)
    empty = np.zeros(len(flat), bool)
    for i, caption in enumerate(flat):
      if not tokenize(caption):
        empty[i] = True
        continue
      ids[i], truncated[i] = self.encode(caption, max_length)
    shape = captions.shape
    return (ids.reshape(shape + (max_length + 1,)), truncated.reshape(shape),
            empty.reshape(shape))

  def decode(self, ids) -> str:
    """The words of `ids` joined by single spaces, up to the first END_ID or PAD_ID;
    START_ID skipped; UNK_ID decodes as "<unk>"."""
    out = []
    for i in np.asarray(ids).reshape(-1):
      i = int(i)
      if i in (END_ID, PAD_ID):
        break
      if i == START_ID:
        continue
      if not 0 <= i < len(self.words):
        raise ValueError(f"token id {i} outside the vocabulary's 0..{len(self.words) - 1}")
      out.append(self.words[i])
    return " ".join(out)

  def to_json(self) -> str:
    return json.dumps({"format": FORMAT, "words": list(self.words)})

  @classmethod
  def from_json(cls, text: str | bytes, source: str = "vocabulary JSON") -> "Vocabulary":
    """The vocabulary of `to_json`'s text; DataError (naming `source`) for anything else."""
    try:
      data = json.loads(text)
    except ValueError as e:
      raise DataError(f"{source} is not valid JSON ({e}); expected a jaxseg vocabulary "
                      f"({FORMAT})") from None
    if not (isinstance(data, dict) and data.get("format") == FORMAT
            and isinstance(data.get("words"), list)
            and all(isinstance(w, str) for w in data["words"])):
      raise DataError(f"{source} is not a jaxseg vocabulary: expected a JSON object with "
                      f"\"format\": \"{FORMAT}\" and \"words\" (a list of strings)")
    try:
      return cls(tuple(data["words"]))
    except ConfigError as e:
      raise DataError(f"{source}: {e}") from None

  def save(self, path: str) -> None:
    """Writes `to_json()` to `path` (atomically: a temporary file renamed)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
      f.write(self.to_json())
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> "Vocabulary":
    """The vocabulary saved at `path`; DataError naming the file if it is not one."""
    try:
      with open(path, "rb") as f:
        text = f.read()
    except OSError as e:
      raise DataError(f"cannot read vocabulary file {path!r}: {e.strerror}") from None
    return cls.from_json(text, source=f"vocabulary file {path!r}")


def _check_length(max_length: int):
  if not isinstance(max_length, (int, np.integer)) or max_length < 1:
    raise ConfigError(f"caption max_length={max_length!r}; expected an integer >= 1")
