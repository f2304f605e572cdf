"""Scoring throughput on one GPU: a flan-t5-base-size student, verdicts and generation.

Runs where there is no pyspark and no network (the lent H100/H200 machine: torch +
transformers only): it imports the scoring core directly (em_spark.student.inference:
the same length-sorted batching, one-pass p_match and KV-cached greedy generation the
Spark UDF uses). The model is a T5 built from flan-t5-base's config (d_model 768, 12+12
layers, gated-GELU, 32128-token vocabulary) with random weights, in bf16: speed does not
depend on the weights, except where generation stops: every generation is forced to run
its full ``--max-new-tokens`` (``min_new_tokens``; the worst case). The tokenizer is trained offline on
the synthetic pairs. Inputs are serialized product pairs of about ``--input-tokens``
tokens.

    python benchmarks/gpu_score.py --out $OUT/gpu.json          # about 2-4 minutes on an H100
    python benchmarks/gpu_score.py --smoke --out /tmp/gpu.json  # tiny sizes, CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, without installing the package

import torch  # noqa: E402

from em_spark.serialize import SerializerSettings, serialize_pair  # noqa: E402
from em_spark.student.inference import StudentPredictor  # noqa: E402
from em_spark.student.presets import train_tokenizer  # noqa: E402

FLAN_T5_BASE = dict(
    d_model=768, d_ff=2048, d_kv=64, num_heads=12, num_layers=12, num_decoder_layers=12,
    feed_forward_proj="gated-gelu", vocab_size=32128, tie_word_embeddings=False,
)
SMOKE = dict(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=2,
             feed_forward_proj="gated-gelu", vocab_size=2000, tie_word_embeddings=False)
_WORDS = ("sony samsung apple lg canon nikon black white silver 4k hd camera tv laptop phone case "
          "cable charger wireless bluetooth digital portable pro mini ultra series edition pack").split()


def synthetic_pairs(n: int, words_per_value: int, seed: int) -> list[tuple[dict, dict]]:
    rng = random.Random(seed)

    def record() -> dict:
        return {
            "title": " ".join(rng.choice(_WORDS) for _ in range(words_per_value)),
            "brand": rng.choice(_WORDS),
            "modelno": f"{rng.choice('abcdefgh')}{rng.randint(100, 9999)}",
            "price": f"{rng.uniform(5, 2000):.2f}",
        }

    return [(record(), record()) for _ in range(n)]


def build_predictor(shape: dict, texts: list[str], device: str, dtype: torch.dtype, max_input_tokens: int) -> StudentPredictor:
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = train_tokenizer(texts[:2000], vocab_size=min(8000, shape["vocab_size"]))
    config = T5Config(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **{**shape, "vocab_size": max(shape["vocab_size"], len(tokenizer))},
    )
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config).to(device=device, dtype=dtype)
    return StudentPredictor(model, tokenizer, 0.5, SerializerSettings(), None, max_input_tokens)


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--smoke", action="store_true", help="tiny model and sizes (CPU check)")
    p.add_argument("--input-tokens", type=int, default=128)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--verdict-pairs", type=int, default=32768)
    p.add_argument("--generate-pairs", type=int, default=2048)
    p.add_argument("--verdict-batches", default="128,512,1024,2048")
    p.add_argument("--generate-batches", default="64,256,512")
    args = p.parse_args(argv)
    if args.smoke:
        args.verdict_pairs, args.generate_pairs, args.max_new_tokens = 64, 16, 8
        args.verdict_batches, args.generate_batches = "8,32", "8"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    pairs = synthetic_pairs(args.verdict_pairs, words_per_value=max(4, args.input_tokens // 5), seed=0)
    shape = SMOKE if args.smoke else FLAN_T5_BASE
    t_build = time.perf_counter()
    predictor_texts = [serialize_pair(a, b, None, SerializerSettings()) for a, b in pairs]
    predictor = build_predictor(shape, predictor_texts, device, dtype, args.input_tokens)
    build_s = time.perf_counter() - t_build
    lengths = [len(ids) for ids in predictor.tokenizer(predictor_texts[:512], truncation=True,
                                                         max_length=args.input_tokens)["input_ids"]]
    report: dict = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in predictor.model.parameters()),
        "model": "smoke" if args.smoke else "flan-t5-base-size (T5Config, random weights)",
        "mean_input_tokens": sum(lengths) / len(lengths),
        "max_new_tokens": args.max_new_tokens,
        "build_seconds": build_s,
        "verdict": {},
        "generate": {},
    }
    predictor.p_match(predictor_texts[:64], batch_size=64)  # warm-up (kernels, allocator)
    for bs in (int(b) for b in args.verdict_batches.split(",")):
        texts = predictor_texts[: args.verdict_pairs]
        s = _timed(lambda: predictor.p_match(texts, batch_size=bs))
        report["verdict"][str(bs)] = {"pairs": len(texts), "seconds": s, "pairs_per_s": len(texts) / s}
        print(f"verdict batch {bs}: {len(texts) / s:,.0f} pairs/s", flush=True)
    for bs in (int(b) for b in args.generate_batches.split(",")):
        texts = predictor_texts[: args.generate_pairs]
        predictor.model.generation_config.min_new_tokens = args.max_new_tokens
        s = _timed(lambda: predictor.generate(texts, max_new_tokens=args.max_new_tokens, batch_size=bs))
        report["generate"][str(bs)] = {"pairs": len(texts), "seconds": s, "pairs_per_s": len(texts) / s}
        print(f"generate batch {bs}: {len(texts) / s:,.1f} pairs/s", flush=True)
    best_v = max(v["pairs_per_s"] for v in report["verdict"].values())
    best_g = max(v["pairs_per_s"] for v in report["generate"].values())
    report["best_verdict_pairs_per_s"] = best_v
    report["best_generate_pairs_per_s"] = best_g
    report["verdict_over_generate"] = best_v / best_g
    write_report(report, args.out)
    return 0


def write_report(report: dict, path: str) -> None:
    """The benchmark's JSON at ``path`` (parents created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
