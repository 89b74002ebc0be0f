"""Knock out the attention edge last token -> first token at the middle layer, all heads."""

from _common import save, setup

from torch_mi.interp.knockout import KnockoutSpec, run_knockout

model, out, args = setup(__doc__)
tok = model.tokenizer
ids = model.encode(args.prompt)[0]
layer, edge = model.num_layers // 2, (len(ids) - 1, 0)
result = run_knockout(model, ids, KnockoutSpec().layer(layer).edge(*edge))
paris = tok.find_token_id("Paris")
p_base, p_knock = result.probability_shift(paris)
print(f"layer {layer}, edge {edge}: KL = {result.kl_divergence():.6f}")
print(f"P(' Paris') {p_base:.4f} -> {p_knock:.4f}, logit diff {result.logit_diff(paris):+.4f}")
for token_id, before, after, delta in result.top_changed_tokens(10):
    print(f"  {tok.decode_token(token_id)!r:>14} {before:.4f} -> {after:.4f} (|dp| {delta:.4f})")
save(out, "attention_knockout", {"layer": layer, "edge": edge, "p_paris": [p_base, p_knock],
                                 "paris_logit_diff": result.logit_diff(paris),
                                 **result.to_dict(tok.decode_token)})
