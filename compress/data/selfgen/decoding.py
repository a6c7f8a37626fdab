"""Continuous batching for self-generated text: every live row advances one token per forward
pass, and a row that ends (EOS or ``max_len``) hands its place to the next draw at once.

The key/value cache is one preallocated buffer per layer, ``(blocks, rows, kv_heads, block,
head_dim)``: column ``c`` of the text stream lies in block ``c // block`` at offset
``c % block``. Every step writes all rows' new keys and values into the same column ``col``; a
row that started at column ``start`` owns the columns ``start..col``, so an additive 4D mask hides
the others and its position ids count from ``start``. Attention reads the blocks from the oldest
live row's start (``lo``) to ``col``: a slice of the outermost dimension, so contiguous, never a
copy. When ``col`` reaches the buffer's end, the blocks in use move to the front, at most once
every ``max(64, block, max_len // 4)`` steps, so the cache costs one write per token instead of
DynamicCache's copy of the whole cache per step. Rows leave the buffer only when no draw takes
their place (the tail of a run), so finished rows cost no compute.

The mask is the full causal one: a model's sliding-window layers see the whole text, which
matters only for texts longer than the window.

With ``sdpa`` attention the model's attention runs blockwise for the duration (:func:`_blocked_attention`,
with ``BLOCK`` columns a block). On a CPU, SDPA's kernel and oneDNN's bfloat16 products both want
each (row, head)'s keys contiguous; a slice of a width-major buffer is not, and SDPA's own
kernel on one query per head is slow in bfloat16 (about twice the blockwise time; float32 about
even). Any other attention gets one column a block
(``block`` 1), whose slice is the (rows, kv_heads, columns, head_dim) view it expects, no copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

BLOCKED_ATTENTION = "compress_blocked_attention"
BLOCK = 128


@dataclass
class Columns:
    """The buffer's column bookkeeping, shared by every layer: ``width`` columns in blocks of
    ``block``."""

    width: int
    block: int
    lo: int = 0
    col: int = 0

    def read(self) -> tuple[int, int]:
        """The columns attention reads, ``[first, last)``: whole blocks, from ``lo``'s to ``col``'s."""
        return self.lo // self.block * self.block, (self.col // self.block + 1) * self.block


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
        columns = self.columns
        shape = (columns.width // columns.block, rows, heads, columns.block, dim)
        self.keys, self.values = key_states.new_zeros(shape), key_states.new_zeros(shape)
        self.is_initialized = True

    def update(self, key_states, value_states, cache_kwargs=None):
        """Write the new column; return the blocks attention reads, ``(blocks, rows, kv_heads,
        block, head_dim)``, or with one column a block the (rows, kv_heads, columns, head_dim)
        view any attention takes."""
        if not self.is_initialized:
            self.lazy_initialization(key_states)
        columns = self.columns
        block, offset = divmod(columns.col, columns.block)
        self.keys[block, :, :, offset] = key_states[:, :, -1]
        self.values[block, :, :, offset] = value_states[:, :, -1]
        first, last = (c // columns.block for c in columns.read())
        keys, values = self.keys[first:last], self.values[first:last]
        if columns.block == 1:
            return keys.squeeze(3).permute(1, 2, 0, 3), values.squeeze(3).permute(1, 2, 0, 3)
        return keys, values

    def get_mask_sizes(self, *_) -> tuple[int, int]:
        first, last = self.columns.read()
        return last - first, first

    def get_seq_length(self) -> int:
        return self.columns.col - self.columns.lo

    def get_max_cache_shape(self) -> int:
        return self.columns.width

    get_max_length = get_max_cache_shape

    def select_rows(self, index: torch.Tensor, add: int) -> None:
        """Keep the rows ``index`` (in that order), then append ``add`` empty rows."""
        if self.is_initialized:
            for name in ("keys", "values"):
                kept = getattr(self, name).index_select(1, index.to(self.keys.device))
                empty = kept.new_zeros((kept.shape[0], add, *kept.shape[2:]))
                setattr(self, name, torch.cat([kept, empty], dim=1))

    def move_to_front(self, blocks: int) -> None:
        """Move every block from ``blocks`` on to the front, ``blocks`` places earlier."""
        if self.is_initialized:
            kept = self.keys.shape[0] - blocks
            self.keys[:kept] = self.keys[blocks:].clone()
            self.values[:kept] = self.values[blocks:].clone()


def _blocked_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs
):
    """Attention of one query token per row over the cache's blocks ``(blocks, rows, kv_heads,
    block, head_dim)``: the query heads sharing a key/value head are that head's queries, so
    neither ``repeat_kv``'s copy of the cache nor a GQA kernel is needed. Products run in the
    cache's dtype, the scores' scale, mask and softmax in float32, as transformers' eager
    attention does."""
    rows, heads, _, dim = query.shape
    blocks, _, kv_heads, block, _ = key.shape
    groups = heads // kv_heads
    grouped = query.reshape(rows, kv_heads, groups, dim)
    scores = torch.matmul(grouped, key.transpose(-1, -2))  # (blocks, rows, kv_heads, groups, block)
    scores = scores.permute(1, 2, 3, 0, 4).reshape(rows, kv_heads, groups, blocks * block)
    scale = dim**-0.5 if scaling is None else scaling
    weights = (scores.float() * scale + attention_mask).softmax(-1).to(value.dtype)
    weights = weights.reshape(rows, kv_heads, groups, blocks, block).permute(3, 0, 1, 2, 4)
    out = torch.matmul(weights, value).float().sum(0).to(value.dtype)
    return out.reshape(rows, 1, heads, dim), None


@contextlib.contextmanager
def decode_attention(model) -> Iterator[bool]:
    """Blockwise attention while decoding when the model runs ``sdpa`` (yields True); otherwise
    its own attention (yields False)."""
    config = model.config
    original = config._attn_implementation
    if original != "sdpa":
        yield False
        return
    from transformers import AttentionInterface

    AttentionInterface.register(BLOCKED_ATTENTION, _blocked_attention)
    config._attn_implementation = BLOCKED_ATTENTION
    try:
        yield True
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

    def __init__(self, model, rows: int, max_len: int, block: int):
        self.model = model
        self.device = model.get_input_embeddings().weight.device
        self.dtype = model.get_input_embeddings().weight.dtype
        self.max_rows = rows
        # the margin past max_len is at least a block, so that a move frees at least one
        width = max_len + max(64, block, max_len // 4)
        self.columns = Columns(width=-(-width // block) * block, block=block)
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
            blocks = columns.lo // columns.block
            for layer in self.layers:
                layer.move_to_front(blocks)
            shift = blocks * columns.block
            for row in self.rows:
                row.start -= shift
            columns.col, columns.lo = columns.col - shift, columns.lo - shift

    def step(self) -> torch.Tensor:
        """One forward pass: each row's last token in, float32 next-token logits (rows, V) out."""
        self._make_room()
        (first, last), col = self.columns.read(), self.columns.col
        starts = torch.tensor([row.start for row in self.rows], device=self.device)
        read = torch.arange(first, last, device=self.device)[None, :]
        hidden = (read < starts[:, None]) | (read > col)
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
    with torch.no_grad(), decode_attention(model) as blocked:
        decoder = Decoder(model, rows, max_len, BLOCK if blocked else 1)
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
