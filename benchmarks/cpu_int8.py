"""Does dynamic int8 quantization beat torch's bf16 / fp32 for verdicts on this CPU?

The issue allows optional CPU back-ends "only where they beat torch in a measurement and
their probabilities match torch's". This measures one of them, torch's own dynamic int8
quantization (``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear``: int8
weights, activations quantized per batch), against the float32 and bfloat16 models the
scorer uses, for the ``tiny`` and ``small`` preset shapes. Every variant runs the same
``StudentPredictor.p_match`` (same length sorting, batching, one forward pass) on the same
serialized pairs, float32 being the reference for the probabilities. Weights are random:
the speed does not depend on them; the probability gaps are indicative only (a trained
model's logits are larger).

    .venv/bin/python benchmarks/cpu_int8.py --out benchmarks/results/cpu_int8.json
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from em_spark.serialize import SerializerSettings, serialize_pair  # noqa: E402
from em_spark.student.inference import StudentPredictor, cpu_has_native_bf16  # noqa: E402
from em_spark.student.presets import build_preset  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from gpu_score import synthetic_pairs, write_report  # noqa: E402


def _rate(predictor: StudentPredictor, texts: list[str], batch_size: int) -> tuple[float, np.ndarray]:
    predictor.p_match(texts[:batch_size], batch_size=batch_size)  # warm-up
    t0 = time.perf_counter()
    p = predictor.p_match(texts, batch_size=batch_size)
    return len(texts) / (time.perf_counter() - t0), p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--pairs", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--presets", default="tiny,small")
    args = ap.parse_args(argv)
    texts = [serialize_pair(a, b, None, SerializerSettings()) for a, b in synthetic_pairs(args.pairs, 20, seed=0)]
    report: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "native_bf16": cpu_has_native_bf16()},
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "pairs": len(texts),
        "batch_size": args.batch_size,
        "presets": {},
    }
    for name in args.presets.split(","):
        torch.manual_seed(0)
        model, tokenizer = build_preset(name, texts[:2000])
        model.eval()

        def predictor(m: torch.nn.Module) -> StudentPredictor:
            return StudentPredictor(m, tokenizer, 0.5, SerializerSettings(), None, 128)

        variants = {
            "float32": model,
            "bfloat16": copy.deepcopy(model).to(torch.bfloat16),
            "int8_dynamic": torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8),
        }
        rates, probs = {}, {}
        for label, m in variants.items():
            rates[label], probs[label] = _rate(predictor(m), texts, args.batch_size)
            print(f"{name} {label}: {rates[label]:.1f} verdicts/s", flush=True)
        report["presets"][name] = {
            "verdicts_per_s": rates,
            "over_float32": {k: v / rates["float32"] for k, v in rates.items()},
            "int8_over_bfloat16": rates["int8_dynamic"] / rates["bfloat16"],
            "max_abs_p_diff_vs_float32": {k: float(np.max(np.abs(p - probs["float32"]))) for k, p in probs.items()},
        }
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
