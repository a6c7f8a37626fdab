"""Self-generated calibration text: the model writes its own calibration data.

Paper: Shin et al., "Rethinking Pruning Large Language Models: Benefits and Pitfalls of
Reconstruction Error Minimization" (EMNLP 2024, arXiv 2406.15524), the mitigation for
reconstruction overfitting. Recipe per text:

1. first token uniformly random from the vocabulary, special tokens excluded;
2. the next ``greedy_tokens`` (4) tokens greedy (argmax of the model's logits);
3. the rest sampled (temperature 1.0, top-k 50, top-p 1.0) until EOS or ``max_len`` tokens;
4. kept only if a language identifier (py3langid, its model ships in the wheel) says English;
   otherwise the text is rejected and another one is drawn.

Each text has its own seed, ``seed = (base_seed << 32) | draw``, which seeds a CPU generator for
its first token and every sampling step, so a text does not depend on the other texts of its
batch: regenerating one seed alone gives the same text, up to the float rounding differences
that another batch shape can cause; the same seed and batch size give the same file.

Texts are written ``batch_size`` at a time with continuous batching (:mod:`.decoding`): one
forward pass per token for every live row over a preallocated KV cache; a row that ends (EOS,
``max_len``) or whose text is rejected takes the next draw at once, and rows nobody needs any
more leave the batch.

Output: JSONL, one line per kept text, ``{text, seed, tokens, lang, lang_score}``, appended in
draw order as texts are accepted; a rerun continues the draws after the last recorded seed
until the file holds ``n`` texts, and drops a partially written last line first.
"""

from compress.data.selfgen.generate import (
    GenerationStats,
    Recipe,
    check_request,
    first_token_choices,
    generate_file,
    generate_ids,
    generate_long_texts,
    sample_texts,
    stop_ids,
)
from compress.data.selfgen.inspection import (
    detect_language,
    inspect,
    length_histogram,
    looks_like_code,
)
from compress.data.selfgen.samples import (
    read_samples,
    selfgen_windows,
    split_seed,
    text_seed,
    token_lengths,
)

__all__ = [
    "GenerationStats",
    "Recipe",
    "check_request",
    "detect_language",
    "first_token_choices",
    "generate_file",
    "generate_ids",
    "generate_long_texts",
    "inspect",
    "length_histogram",
    "looks_like_code",
    "read_samples",
    "sample_texts",
    "selfgen_windows",
    "split_seed",
    "stop_ids",
    "text_seed",
    "token_lengths",
]
