"""``python -m benchmarks.parity``: max |torch-mi - HF eager| per tiny random variant, fp32.

Prints, for each of the 14 variants the HF parity tests build, the largest absolute
difference of the logits, of every residual (resid_pre / resid_post / final norm) and of the
attention patterns, on the explicit attention path (every pattern captured) and on the
fused SDPA path (logits only). The tests assert these at 1e-5; this shows the figures.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import torch_mi as mi
from tests.helpers.tiny_models import VARIANTS, build_tiny, hf_run

HP = mi.HookPoint


def variant_diffs(variant: str, root: Path) -> dict[str, float]:
    tiny = build_tiny(variant, root)
    model = mi.MIModel.from_pretrained(tiny.path, device="cpu")
    ref = hf_run(tiny.hf, tiny.input_ids)
    n = model.num_layers
    points = [*(HP.ResidPre(i) for i in range(n)), *(HP.ResidPost(i) for i in range(n)),
              *(HP.AttnPattern(i) for i in range(n)), HP.FinalNorm]
    cache = model.forward(tiny.input_ids, mi.HookSpec().capture(*points))
    resid = [(cache[HP.ResidPre(i)], ref.hidden_states[i]) for i in range(n)]
    resid += [(cache[HP.ResidPost(i)], ref.hidden_states[i + 1]) for i in range(n - 1)]
    resid += [(cache[HP.ResidPost(n - 1)], ref.last_layer_output),
              (cache[HP.FinalNorm], ref.hidden_states[n])]
    patterns = [(cache[HP.AttnPattern(i)], ref.attentions[i]) for i in range(n)]

    def worst(pairs) -> float:
        return max(float((a - b).abs().max()) for a, b in pairs)

    fused = model.forward(tiny.input_ids).output()
    return {"logits": worst([(cache.output(), ref.logits)]), "residuals": worst(resid),
            "patterns": worst(patterns), "fused logits": worst([(fused, ref.logits)])}


def main() -> None:
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'variant':<15}{'logits':>12}{'residuals':>12}{'patterns':>12}{'fused logits':>14}")
        for variant in VARIANTS:
            d = variant_diffs(variant, Path(tmp))
            print(f"{variant:<15}{d['logits']:>12.3g}{d['residuals']:>12.3g}{d['patterns']:>12.3g}"
                  f"{d['fused logits']:>14.3g}")


if __name__ == "__main__":
    main()
