"""Greedy generation, then the same with a residual steering vector added at every step."""

from _common import save, setup

from torch_mi.interp.vectors import mean_difference_vector, steering_vector_hooks

model, out, args = setup(__doc__)
prompt = "I think the movie was"
base = model.generate(prompt, 24)
layer = model.num_layers // 2
vector = mean_difference_vector(model, ["I love this, it is wonderful and great"],
                                ["I hate this, it is terrible and awful"], layer)
steered = model.generate(prompt, 24, hooks=steering_vector_hooks(vector, [layer], scale=1.0))
print(f"baseline: {prompt}{base.generated_text!r}")
print(f"steered:  {prompt}{steered.generated_text!r}")
save(out, "generate", {"prompt": prompt, "baseline": base.generated_text,
                       "steered": steered.generated_text, "layer": layer})
