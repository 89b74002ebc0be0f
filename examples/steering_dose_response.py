"""Attention steering dose-response on the last -> first edge at the middle layer."""

from _common import save, setup

from torch_mi.interp.dose import dose_response
from torch_mi.plots import plot_curve

model, out, args = setup(__doc__)
curve, calibration = dose_response(model, args.prompt, target_token=" Paris")
print(f"layer {curve.layer}, baseline attention {curve.baseline_attention:.4f}")
for p in curve.points:
    print(f"  dose {p.scale:>3}: attention {p.attention_level:.4f}  KL {p.kl:.6f}  "
          f"' Paris' logit diff {p.logit_diff:+.4f}")
double = curve.scale_for_target(calibration.source_baseline)
print(f"scale that doubles the baseline attention: {double}")
plot_curve([p.scale for p in curve.points], [p.kl for p in curve.points],
           out / "dose_response.png", xlabel="dose", ylabel="KL(baseline || steered)",
           title=f"dose-response at layer {curve.layer}")
save(out, "steering_dose_response", {**curve.to_dict(), "scale_for_double": double})
