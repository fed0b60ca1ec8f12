"""Pre-tokenised texts and dynamically padded batches.

Texts are tokenised once per dataset with the fast tokenizer (truncation to ``max_length``,
no padding) and kept as one flat int32 array plus offsets, so a million users cost a few
bytes per token. Each batch is padded only to its own longest sequence.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

TOKENIZE_CHUNK = 8192
"""Texts handed to the fast tokenizer per call (bounds peak memory)."""


@dataclass(frozen=True)
class TokenizedTexts:
    """Token ids of many texts: ``ids[offsets[i]:offsets[i+1]]`` are text i's ids."""

    ids: np.ndarray
    offsets: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Token count of each text (int64)."""
        return np.diff(self.offsets)

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(input_ids, attention_mask)`` (int64, padded to the batch's longest text)."""
        index = np.asarray(indices, dtype=np.int64)
        starts = self.offsets[index]
        lengths = self.offsets[index + 1] - starts
        width = max(int(lengths.max()) if len(index) else 0, 1)
        columns = np.arange(width, dtype=np.int64)
        valid = columns[None, :] < lengths[:, None]
        positions = np.where(valid, starts[:, None] + columns[None, :], 0)
        gathered = self.ids[positions] if len(self.ids) else np.zeros(positions.shape, dtype=np.int32)
        input_ids = np.where(valid, gathered, self.pad_id).astype(np.int64)
        return torch.from_numpy(input_ids), torch.from_numpy(valid.astype(np.int64))


def tokenize_texts(tokenizer, texts: Sequence[str], max_length: int) -> TokenizedTexts:  # noqa: ANN001
    """Return ``texts`` tokenised with truncation to ``max_length`` (special tokens included).

    The fast tokenizer gets ``TOKENIZE_CHUNK`` texts per call (it parallelises inside a call);
    ids are copied straight into one flat int32 array.
    """
    pieces: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        chunk = list(texts[start : start + TOKENIZE_CHUNK])
        encoded = tokenizer(
            chunk,
            truncation=True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        chunk_lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
        total = int(chunk_lengths.sum())
        pieces.append(np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int32, count=total))
        lengths.append(chunk_lengths)
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(all_lengths) + 1, dtype=np.int64)
    np.cumsum(all_lengths, out=offsets[1:])
    flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return TokenizedTexts(flat, offsets, int(pad_id))


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Return index batches in order of decreasing length (stable), so padding is minimal."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Return a random partition of ``range(n)`` into batches drawn from ``rng`` (deterministic per seed)."""
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
