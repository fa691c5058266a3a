#!/usr/bin/env python3
"""Writes the tokenizer test fixtures from tiktoken (the reference), run from the repo root:

    pip install tiktoken==0.14.0
    scripts/fetch-assets.sh tokenizers shakespeare
    python3 scripts/make-tokenizer-fixtures.py

Outputs, under Tests/BPETests/Fixtures/:
- torture.txt: a text written to break pre-tokenizers (every script, emoji sequences, combining
  marks, CRLF, whitespace runs, digits of other scripts, contractions in every case, controls);
- torture-ids.json: tiktoken's encode_ordinary ids of it for gpt2, cl100k_base and o200k_base,
  and of each of its lines alone (so a mismatch points at a line);
- shakespeare-ids.json: for every Shakespeare/Milton text, per encoding, the number of ids and
  the FNV-1a 64 hash of the ids as little-endian uint32 (the ids themselves would be megabytes).
"""
import json
import os
import struct
import sys
import unittest.mock as mock

import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext import openai_public

CACHE = os.environ.get("SWIFTGPT_CACHE", os.path.expanduser("~/.cache/swiftgpt"))
OUT = "Tests/BPETests/Fixtures"


def encodings():
    specs = {
        "gpt2": ("gpt2.tiktoken", openai_public.gpt2),
        "cl100k_base": ("cl100k_base.tiktoken", openai_public.cl100k_base),
        "o200k_base": ("o200k_base.tiktoken", openai_public.o200k_base),
    }
    result = {}
    for name, (file, spec) in specs.items():
        # The registry's pattern and special tokens, with the ranks from the local file.
        path = os.path.join(CACHE, "tokenizers", file)
        local = lambda *a, **k: load_tiktoken_bpe(path)
        with mock.patch.object(openai_public, "load_tiktoken_bpe", local), \
                mock.patch.object(openai_public, "data_gym_to_mergeable_bpe_ranks", local):
            params = spec()
        result[name] = tiktoken.Encoding(**params)
    return result


TORTURE_LINES = [
    "Hello world! It's a test. DON'T SHOUT, I'LL SEE, WE'VE, THEY'RE, YOU'D, I'M, HE'S, it'S, 'Tis.",
    "don't can't won't y'all o'clock rock'n'roll 'quoted' \"double\" ''' '' 's 'S 'll 'LL 'Ll 'ſ",
    "Ünïcödé Ça va? Straße ĳ ŉ ǅungla ǈ Ǆ ﬁne ﬀ Ⅻ ⅻ ½ ² ³ ¼ ⁹ ₃",
    "Ελληνικά ΑΒΓ αβγ ΆΈΉ; Русский ТЕКСТ текст Ёё; Հայերեն; ქართული; አማርኛ",
    "العربية النص ١٢٣٤٥ ٫ ؟ عَرَبِيّ; עברית טקסט ׳״; فارسی ۱۲۳",
    "हिन्दी देवनागरी १२३४ क्षत्रिय; বাংলা ১২৩; தமிழ் ௧௨௩; ไทย ภาษาไทย ๑๒๓; ລາວ; ខ្មែរ",
    "中文字符测试，标点。日本語のテキスト、カタカナ　ひらがな！한국어 텍스트 한글",
    "Fullwidth ＡＢＣ ａｂｃ １２３ ！？；　ideographic\u3000space and\u00a0nbsp\u2009thin\u2003em\u202fnarrow",
    "Emoji 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷🇯🇵 👩🏿‍🚀 🧑‍🤝‍🧑 ✊🏻✊🏼✊🏽 #️⃣ 1️⃣ ©️ ™",
    "Combining: e\u0301 a\u0300\u0301\u0302 n\u0303 \u0301start Z\u0351\u0357\u0364a\u0334\u0335lgo x\u20dd o\u0308\u0332",
    "\u0300\u0301 marks alone, then A\u0300B\u0301c\u0302D and ABc and ABC and aBC and Hello'S and HELLO's",
    "CRLF line\r\nnext line\r\n\r\n\r\nafter blanks\rlone CR\n\nLF LF",
    "tabs\tand\t\tmore\t\t\ttabs \t mixed \t\n\t indented",
    "long spaces" + " " * 40 + "then" + " " * 17 + "\n" + " " * 9 + "x" + "\t" * 12 + "y",
    "digits 1234567890 12 123 1234 3.14159 1,000,000 2024-11-29 0x1F 1e-10 -42 +7 ٣٤٥٦ ३४५६ ௫௬௭",
    "controls \x00 nul \x01\x02\x07 bell \x1b[31m red \x1b[0m \x7f del \x85 nel \u2028 ls \u2029 ps \ufeff bom",
    "punct!!! ??? ... --- ___ *** /// \\\\ ||| <|endoftext|> <|im_start|> @#$%^&*() []{}<> ~`",
    "paths /usr/local/bin/ http://example.com/a/b?c=d&e=f#g C:\\Windows\\ a/b/c //\n/\r/",
    "MixedCASEWords camelCaseThing XMLHttpRequest iPhone McDonald's O'Neil HTTPServer ABCdef",
    "ſ Kelvin \u212a Ångström \u212b \u0130stanbul \u0131 ß ẞ ﬆ",
    "Trailing spaces and newline   \n   \n",
    " leading space, then end with spaces   ",
]


def fnv1a64(data):
    """FNV-1a, 64-bit, as a hex string: easy to recompute in the Swift test without a crypto
    dependency, and ample to tell two id sequences apart."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main():
    os.makedirs(OUT, exist_ok=True)
    encs = encodings()
    torture = "\n".join(TORTURE_LINES)
    with open(os.path.join(OUT, "torture.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(torture)
    ids = {
        name: {"text": enc.encode_ordinary(torture), "lines": [enc.encode_ordinary(line) for line in TORTURE_LINES]}
        for name, enc in encs.items()
    }
    with open(os.path.join(OUT, "torture-ids.json"), "w") as f:
        json.dump({"lines": TORTURE_LINES, "encodings": ids}, f, ensure_ascii=True, separators=(",", ":"))

    texts_dir = os.path.join(CACHE, "shakespeare")
    summary = {}
    for file in sorted(os.listdir(texts_dir)):
        with open(os.path.join(texts_dir, file), "rb") as f:
            text = f.read().decode("utf-8")
        summary[file] = {}
        for name, enc in encs.items():
            tokens = enc.encode_ordinary(text)
            summary[file][name] = {"count": len(tokens), "fnv1a64": fnv1a64(struct.pack(f"<{len(tokens)}I", *tokens))}
    with open(os.path.join(OUT, "shakespeare-ids.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    print(f"wrote {OUT}: torture ({len(torture.encode())} bytes), {len(summary)} Shakespeare texts", file=sys.stderr)


if __name__ == "__main__":
    main()
