"""Continuous batching for self-generated text: every live row advances one token per forward
pass, and a row that ends (EOS or ``max_len``) hands its place to the next draw at once.

The key/value cache is one preallocated buffer per layer, ``(rows, kv_heads, width, head_dim)``.
Every step writes all rows' new keys and values into the same column ``col``; a row that started
at column ``start`` owns the columns ``start..col``, so an additive 4D mask hides the others and
its position ids count from ``start``. Attention reads the view ``lo..col`` (``lo``: the oldest
live row's start), never a copy. When ``col`` reaches the buffer's end, the columns in use move
to the front, at most once every ``max(64, max_len // 4)`` steps, so the cache costs one write
per token instead of DynamicCache's copy of the whole cache per step. Rows leave the buffer only
when no draw takes their place (the tail of a run), so finished rows cost no compute.

The mask is the full causal one: a model's sliding-window layers see the whole text, which
matters only for texts longer than the window.

With ``sdpa`` attention the model's attention runs grouped for the duration (the query heads of
one key/value head as that head's queries), which needs neither ``repeat_kv``'s copy of the
cache nor a GQA kernel; the result is the same attention.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, CacheLayerMixin

GROUPED_SDPA = "compress_grouped_sdpa"


@dataclass
class Columns:
    """The buffer's column bookkeeping, shared by every layer."""

    width: int
    lo: int = 0
    col: int = 0


class SlotLayer(CacheLayerMixin):
    """One layer's preallocated keys and values; see the module docstring."""

    def __init__(self, columns: Columns):
        super().__init__()
        self.columns = columns

    # The layer interface differs between transformers 4.57 and 5.x only in names and unused
    # arguments (value_states, cache_position / query_length; get_max_cache_shape /
    # get_max_length), so each method takes both forms.
    def lazy_initialization(self, key_states: torch.Tensor, value_states=None) -> None:
        rows, heads, _, dim = key_states.shape
        shape = (rows, heads, self.columns.width, dim)
        self.keys, self.values = key_states.new_zeros(shape), key_states.new_zeros(shape)
        self.is_initialized = True

    def update(self, key_states, value_states, cache_kwargs=None):
        if not self.is_initialized:
            self.lazy_initialization(key_states)
        lo, col = self.columns.lo, self.columns.col
        self.keys[:, :, col] = key_states[:, :, -1]
        self.values[:, :, col] = value_states[:, :, -1]
        return self.keys[:, :, lo : col + 1], self.values[:, :, lo : col + 1]

    def get_mask_sizes(self, *_) -> tuple[int, int]:
        return self.columns.col + 1 - self.columns.lo, self.columns.lo

    def get_seq_length(self) -> int:
        return self.columns.col - self.columns.lo

    def get_max_cache_shape(self) -> int:
        return self.columns.width

    get_max_length = get_max_cache_shape

    def select_rows(self, index: torch.Tensor, add: int) -> None:
        """Keep the rows ``index`` (in that order), then append ``add`` empty rows."""
        if self.is_initialized:
            for name in ("keys", "values"):
                kept = getattr(self, name).index_select(0, index.to(self.keys.device))
                empty = kept.new_zeros((add, *kept.shape[1:]))
                setattr(self, name, torch.cat([kept, empty]))

    def move_to_front(self, lo: int, col: int) -> None:
        """Move the columns ``lo..col-1`` to ``0..col-lo-1``."""
        if self.is_initialized:
            self.keys[:, :, : col - lo] = self.keys[:, :, lo:col].clone()
            self.values[:, :, : col - lo] = self.values[:, :, lo:col].clone()


def _grouped_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """SDPA for one query token per row: the query heads sharing a key/value head become that
    head's queries, so the (rows, kv_heads, width, dim) cache is read as it is."""
    rows, heads, _, dim = query.shape
    grouped = query.reshape(rows, key.shape[1], heads // key.shape[1], dim)
    out = F.scaled_dot_product_attention(
        grouped, key, value, attn_mask=attention_mask, scale=scaling
    )
    return out.reshape(rows, 1, heads, dim), None


@contextlib.contextmanager
def decode_attention(model):
    """Grouped SDPA while decoding when the model runs ``sdpa``; otherwise its own attention."""
    config = model.config
    original = config._attn_implementation
    if original != "sdpa":
        yield
        return
    from transformers import AttentionInterface

    AttentionInterface.register(GROUPED_SDPA, _grouped_sdpa)
    config._attn_implementation = GROUPED_SDPA
    try:
        yield
    finally:
        config._attn_implementation = original


@dataclass
class Row:
    """One text being written: its seed, its own generator, its tokens, its first column."""

    seed: int
    generator: torch.Generator
    ids: list[int]
    start: int = 0
    done: bool = False


Picker = Callable[[torch.Tensor, list[Row]], list[int]]


class Decoder:
    """The buffer, its rows and one forward pass per step (see the module docstring)."""

    def __init__(self, model, rows: int, max_len: int):
        self.model = model
        self.device = model.get_input_embeddings().weight.device
        self.dtype = model.get_input_embeddings().weight.dtype
        self.max_rows = rows
        self.columns = Columns(width=max_len + max(64, max_len // 4))
        layers = model.config.get_text_config().num_hidden_layers
        self.layers = [SlotLayer(self.columns) for _ in range(layers)]
        self.cache = Cache(layers=self.layers)
        self.rows: list[Row] = []

    def resize(self, keep: list[int], add: int) -> None:
        """Keep the rows at positions ``keep`` and make room for ``add`` new ones."""
        index = torch.tensor(keep, dtype=torch.long)
        for layer in self.layers:
            layer.select_rows(index, add)
        self.rows = [self.rows[i] for i in keep]

    def _make_room(self) -> None:
        columns = self.columns
        columns.lo = min(row.start for row in self.rows)
        if columns.col == columns.width:
            for layer in self.layers:
                layer.move_to_front(columns.lo, columns.col)
            for row in self.rows:
                row.start -= columns.lo
            columns.col -= columns.lo
            columns.lo = 0

    def step(self) -> torch.Tensor:
        """One forward pass: each row's last token in, float32 next-token logits (rows, V) out."""
        self._make_room()
        lo, col = self.columns.lo, self.columns.col
        starts = torch.tensor([row.start for row in self.rows], device=self.device)
        hidden = torch.arange(lo, col + 1, device=self.device)[None, :] < starts[:, None]
        mask = torch.zeros(hidden.shape, dtype=self.dtype, device=self.device)
        mask = mask.masked_fill_(hidden, torch.finfo(self.dtype).min)[:, None, None, :]
        out = self.model(
            input_ids=torch.tensor([[row.ids[-1]] for row in self.rows], device=self.device),
            attention_mask=mask,
            position_ids=(col - starts)[:, None],
            past_key_values=self.cache,
            cache_position=torch.tensor([col], device=self.device),
            use_cache=True,
        )
        self.columns.col += 1
        return out.logits[:, -1].float()


def decode(
    model, rows: int, max_len: int, stops: set[int], pick: Picker,
    next_row: Callable[[], Row | None],
) -> Iterator[Row]:  # fmt: skip
    """Rows as they end (a stop id, which is not kept, or ``max_len`` tokens). ``next_row`` is
    asked for a new row whenever a place is free (None: none now); ``pick`` chooses each live
    row's next token from the logits. Ends when no row is live and ``next_row`` gives none."""
    decoder = Decoder(model, rows, max_len)
    with torch.no_grad(), decode_attention(model):
        _fill(decoder, [], next_row)
        while decoder.rows:
            logits = decoder.step()
            for row, token in zip(decoder.rows, pick(logits, decoder.rows)):
                row.done = token in stops
                if not row.done:
                    row.ids.append(token)
                    row.done = len(row.ids) >= max_len
            free = [i for i, row in enumerate(decoder.rows) if row.done]
            for i in free:
                yield decoder.rows[i]
            _fill(decoder, free, next_row)


def _fill(decoder: Decoder, free: list[int], next_row: Callable[[], Row | None]) -> None:
    """Give finished rows' places, then any room below ``max_rows``, to new rows; finished rows
    nobody replaces leave the buffer, so that they cost no more compute."""
    rows, col = decoder.rows, decoder.columns.col
    vacant = list(free)
    while vacant and (row := next_row()) is not None:
        row.start, rows[vacant.pop(0)] = col, row
    new = []
    while (
        not vacant and len(rows) + len(new) < decoder.max_rows and (row := next_row()) is not None
    ):
        row.start = col
        new.append(row)
    if vacant or new:
        decoder.resize([i for i in range(len(rows)) if i not in vacant], len(new))
        decoder.rows.extend(new)
