#!/usr/bin/env python3
"""Writes billing/testdata/tokens/: the corpus on which the token counter
must count exactly what tiktoken-go counts (TestCountEqualsTiktokenOnCorpus).

Deterministic (fixed seeds). Prose is generated with Faker (MIT; only needed
to regenerate: pip install faker==40.54.0); code is taken from the Go
standard library (BSD-3-Clause) and the Python standard library (PSF) of
the machine running this; the rest is generated here. Run from the repo root.
"""
import glob, json, os, random, sys, unicodedata

from faker import Faker

OUT = "billing/testdata/tokens"
os.makedirs(OUT, exist_ok=True)
rng = random.Random(20261127)


def write(name, text, mode="w"):
    with open(os.path.join(OUT, name), mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
        f.write(text)


# Prose in several languages and scripts, with names and addresses.
for loc in ["en_US", "de_DE", "fr_FR", "es_ES", "pl_PL", "vi_VN", "ru_RU", "uk_UA", "el_GR",
            "he_IL", "ar_AA", "ja_JP", "zh_CN", "th_TH"]:
    fk = Faker(loc)
    fk.seed_instance(7)
    parts, size = [], 0
    while size < 200_000:
        p = fk.paragraph(nb_sentences=rng.randint(3, 9))
        if rng.random() < 0.3:
            p += " " + fk.name() + ", " + fk.address().replace("\n", ", ")
        parts.append(p)
        size += len(p.encode())
    write(f"prose_{loc}.txt", "\n\n".join(parts) + "\n")

# Code: Go and Python standard library sources, and a JSON-ish config language.
def take(pattern, limit):
    out, size = [], 0
    for path in sorted(glob.glob(pattern, recursive=True)):
        try:
            text = open(path, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        out.append(text)
        size += len(text.encode())
        if size >= limit:
            break
    return "".join(out)

goroot = os.popen("go env GOROOT").read().strip()
write("code_go.txt", take(os.path.join(goroot, "src/net/http/*.go"), 700_000))
pylib = os.path.join(sys.base_prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}")
write("code_python.txt", take(os.path.join(pylib, "email/**/*.py"), 500_000))

# JSON tool schemas, as agents send them.
verbs = ["read", "write", "list", "search", "fetch", "send", "schedule", "describe", "delete", "summarise"]
nouns = ["file", "directory", "message", "calendar_event", "issue", "image", "web_page", "memory", "task", "invoice"]
tools = []
for i in range(700):
    v, n = rng.choice(verbs), rng.choice(nouns)
    props = {f"{n}_{k}": {"type": rng.choice(["string", "integer", "boolean", "number"]),
                          "description": f"The {k.replace('_', ' ')} of the {n.replace('_', ' ')} to {v}."}
             for k in rng.sample(["id", "path", "name", "limit", "offset", "query", "since", "until", "format", "dry_run"], 4)}
    tools.append({"type": "function", "function": {"name": f"{v}_{n}_{i}", "description": f"{v.capitalize()} a {n.replace('_', ' ')}.",
                                                   "parameters": {"type": "object", "properties": props, "required": list(props)[:1]}}})
write("json_tools.txt", json.dumps(tools, indent=rng.choice([None, 2])) + "\n" + json.dumps(tools[:100], indent=2) + "\n")

# Whitespace and newline runs, digits, contractions.
ws = []
for _ in range(20_000):
    ws.append(rng.choice(["x", "word", "Word", "1", "!"]))
    ws.append("".join(rng.choice([" ", "  ", "\t", "\n", "\r\n", "\n\n", "   ", "\u00a0", "\u3000"]) for _ in range(rng.randint(1, 6))))
write("whitespace.txt", "".join(ws))
write("digits.txt", " ".join(str(rng.randint(0, 10 ** rng.randint(1, 15))) + rng.choice(["", ".5", ",000", "%", "e10", "th"])
                             for _ in range(20_000)) + "\n٣٤٥ ١٢٣٤٥ ½ ¾ ⅞ Ⅻ 𝟙𝟚𝟛 ①②③\n")
subj = ["I", "you", "we", "they", "he", "she", "it", "THEY", "We", "Don", "O"]
cons = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL", "'D", "’s", "'x", "''", "'"]
write("contractions.txt", " ".join(rng.choice(subj) + rng.choice(cons) + rng.choice(["", " go", "n't", "ll"]) for _ in range(15_000)) + "\n")

# Emoji, rare scripts, combining marks, every category the split treats apart.
def chars(lo, hi, cats=None):
    return [chr(c) for c in range(lo, hi) if (cats is None or unicodedata.category(chr(c)) in cats)]

pools = {
    "emoji": chars(0x1F300, 0x1FAFF, {"So"}) + ["👨‍👩‍👧", "👍🏽", "🏳️‍🌈", "🇫🇷"],
    "cherokee": chars(0x13A0, 0x13F5), "ethiopic": chars(0x1200, 0x135A, {"Lo"}), "tifinagh": chars(0x2D30, 0x2D67),
    "devanagari": chars(0x0900, 0x097F), "thai": chars(0x0E01, 0x0E5B), "hangul": chars(0xAC00, 0xAC00 + 2000),
    "marks": chars(0x0300, 0x036F), "math": chars(0x1D400, 0x1D7FF, {"Lu", "Ll", "Nd"}), "titlecase": ["ǅ", "ǈ", "ǋ", "ǲ", "ᾈ"],
    "modifiers": chars(0x02B0, 0x02FF, {"Lm", "Sk"}), "symbols": list("!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»—–…‰†‡•"),
}
rare = []
for _ in range(60_000):
    kind = rng.choice(list(pools))
    rare.append("".join(rng.choice(pools[kind]) for _ in range(rng.randint(1, 8))))
    rare.append(rng.choice([" ", "", "\n", "'s ", "a", "A", " 12 "]))
write("scripts_emoji_marks.txt", "".join(rare))

# Special tokens spelled out in text: counted as ordinary text.
specials = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|endofprompt|>", "<|im_start|>", "<|im_end|>"]
fk = Faker("en_US")
fk.seed_instance(3)
write("special_tokens.txt", "".join(fk.sentence() + " " + rng.choice(specials) + rng.choice(["", "\n", " "]) for _ in range(4000)))

# Invalid UTF-8: bytes the counter must read as U+FFFD each, as tiktoken-go does.
raw = bytearray()
for _ in range(8000):
    raw += fk.word().encode() + bytes([rng.choice([0x80, 0xBF, 0xC0, 0xC3, 0xE2, 0xF0, 0xFF])]) + rng.choice([b" ", b"\xe2\x82", b"\xf0\x9f\x98", b""])
write("invalid_utf8.bin", bytes(raw), "wb")

total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(OUT, "*")))
print(f"{total} bytes in {len(os.listdir(OUT))} files")
