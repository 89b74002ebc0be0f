"""Character <-> token positions (character offsets into the Python string)."""

from _common import save, setup

from torch_mi.positions import convert_positions

model, out, args = setup(__doc__)
text = "The Eiffel Tower is located in Paris, France. Café ☕ 東京"
encoding = model.tokenizer.encode_with_offsets(text)
for i, t in enumerate(encoding.tokens_with_offsets()):
    print(f"{i:3d} {t.token!r:>14} [{t.start:2d}, {t.end:2d}) {text[t.start:t.end]!r}")
spans = {"Eiffel Tower": (4, 16), "Paris": (31, 36), "France": (38, 44)}
for name, (a, b) in spans.items():
    print(f"{name!r} -> tokens {encoding.char_range_to_tokens(a, b)}")
conversions = convert_positions(encoding, [0, 4, 31, 47, 52])
for c in conversions:
    print(f"char {c.char_pos} -> token {c.token_idx} {c.token!r} exact={c.exact_match}")
save(out, "token_positions", {"text": text, "tokens": encoding.tokens,
                              "offsets": encoding.offsets})
