"""Logit lens on the residual stream: where does " Paris" appear?"""

from _common import save, setup

from torch_mi.interp.logit_lens import logit_lens
from torch_mi.plots import plot_logit_lens

model, out, args = setup(__doc__)
lens = logit_lens(model, args.prompt, k=10)
print(lens.summary())
target = lens.final_predictions[0].token
first_top1, first_top10 = lens.first_top1(target), lens.first_appearance(target, 10)
print(f"model output {target!r} ({lens.final_predictions[0].probability:.4f}); first top-1 at "
      f"layer {first_top1}, first in the top-10 at layer {first_top10}")
print(f"[heatmap {plot_logit_lens(lens, out / 'logit_lens.png')}]")
save(out, "logit_lens", {**lens.to_dict(), "target": target, "first_top1": first_top1,
                         "first_top10": first_top10})
