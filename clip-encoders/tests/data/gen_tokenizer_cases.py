"""Extra CLIP tokenizer cases for clip-encoders' tests (transformers 5.23, tokenizers 0.23.3).

    PY=$(bash ../shared/peers/setup.sh)
    $PY clip-encoders/tests/data/gen_tokenizer_cases.py   # from the workspace root

Reads the vendored real vocabulary (fixtures/clip_tokenizer/openai/tokenizer) and writes
tokenizer_cases.json beside this script: a list of {text, input_ids, attention_mask,
unpadded_ids} as transformers' CLIPTokenizer gives them with padding="max_length",
max_length=77, truncation=True (and without), loaded from the folder's tokenizer.json. The same
ids from the folder loaded without tokenizer.json (vocab.json + merges.txt) are checked equal
here, and a second list, `sd2_pad`, repeats a few texts with pad_token "!" (Stable Diffusion 2's
tokenizer_config.json).
"""
import json, os, random, shutil, tempfile
from transformers import CLIPTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
TOK = os.path.join(ROOT, "fixtures", "clip_tokenizer", "openai", "tokenizer")

texts = [
    "a photo of a cat", "A PHOTO OF A DOG", "DON'T STOP, IT'S FINE", "we'll they've I'm you'd she's",
    "12345 678.9 1,000,000 3rd 21st", "x=y+z; (a*b)/c! ?? ... --- ___", "tab\tnew\nline\r\ncarriage",
    "non\u00a0breaking\u3000ideographic\u2009thin spaces", "caf\u0065\u0301 (decomposed) vs caf\u00e9",
    "\ufb01ligature \u2460 circled \uff21\uff22 fullwidth", "中文 测试 日本語のテキスト 한국어",
    "مرحبا بالعالم", "नमस्ते दुनिया", "Ελληνικά και Кириллица", "emoji 👩‍👩‍👧 🏳️‍🌈 ✨🎉",
    "<|startoftext|> inside <|endoftext|> text", "<|endoftext|>", "<|startoftext|>", "&amp; &lt;html&gt;",
    "   ", "\n", "a", "!", "'", "''''", "'s", "a's b't c're", "https://example.com/path?q=1&r=2",
    "snake_case camelCase PascalCase kebab-case", "£€¥ $100 50% #hashtag @user", "naïve coöperate",
    "ÀÉÎÕÜ àéîõü ß ẞ", "ﬀ ﬃ ﬄ", "\u200b zero width \u200d joiner", "a" * 300,
    " ".join(["word"] * 80), " ".join(str(i) for i in range(100)), "🎬" * 40,
    "an astronaut riding a horse on mars, highly detailed, 8k, octane render, trending on artstation",
]
rng = random.Random(0)
alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"-_()[]{}<>|/\\@#$%^&*+=~` éüñçø中文🎬\t\n"
for _ in range(60):
    n = rng.randint(0, 120)
    texts.append("".join(rng.choice(alphabet) for _ in range(n)))

tok = CLIPTokenizer.from_pretrained(TOK)
tmp = tempfile.mkdtemp()
for f in ["vocab.json", "merges.txt", "tokenizer_config.json"]:
    shutil.copy(os.path.join(TOK, f), tmp)
tok_files = CLIPTokenizer.from_pretrained(tmp)


def case(t, tk):
    p = tk(t, padding="max_length", max_length=77, truncation=True)
    return {"text": t, "input_ids": p.input_ids, "attention_mask": p.attention_mask,
            "unpadded_ids": tk(t).input_ids}


cases = []
for t in texts:
    c = case(t, tok)
    assert c == case(t, tok_files), t
    cases.append(c)

cfg = json.load(open(os.path.join(TOK, "tokenizer_config.json")))
cfg["pad_token"] = "!"
sd2 = tempfile.mkdtemp()
for f in ["vocab.json", "merges.txt"]:
    shutil.copy(os.path.join(TOK, f), sd2)
json.dump(cfg, open(os.path.join(sd2, "tokenizer_config.json"), "w"))
tok_sd2 = CLIPTokenizer.from_pretrained(sd2)
sd2_cases = [case(t, tok_sd2) for t in ["a photo of a cat", "hello!! world!", "", "!" * 5]]
assert tok_sd2.pad_token_id == 0
out = {"cases": cases, "sd2_pad": sd2_cases}
with open(os.path.join(HERE, "tokenizer_cases.json"), "w") as f:
    json.dump(out, f, ensure_ascii=False, indent=0)
print(len(cases), "cases,", len(sd2_cases), "sd2 cases")
