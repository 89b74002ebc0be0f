"""Causal trace: patch clean ("France") residuals into the corrupted ("Poland") run."""

from _common import save, setup

from torch_mi.interp.patching import causal_trace

model, out, args = setup(__doc__)
corrupted = args.prompt.replace("France", "Poland")
for kind in ("resid_post", "mlp_out", "attn_out"):
    trace = causal_trace(model, args.prompt, corrupted, answer=" Paris", kind=kind)
    subject = next(i for i, (a, b) in enumerate(zip(model.encode(args.prompt)[0].tolist(),
                                                    model.encode(corrupted)[0].tolist(),
                                                    strict=True)) if a != b)
    layer, pos, value = trace.best()
    column = ", ".join(f"{v:.2f}" for v in trace.effect[:, subject].tolist())
    print(f"[{kind}] P(' Paris') clean {trace.clean_metric[0]:.4f} / corrupted "
          f"{trace.corrupted_metric[0]:.4f}; best layer {layer} position {pos} ({value:.3f})")
    print(f"  effect at the subject position ({trace.tokens[subject]!r}) by layer: {column}")
    print(f"  [heatmap {trace.plot(out / f'causal_trace_{kind}.png')}]")
    save(out, f"causal_trace_{kind}", {**trace.to_dict(), "subject_position": subject})
