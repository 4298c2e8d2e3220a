"""`xtl check-model`: does xtl compute this checkpoint's own Hugging Face model?"""

from __future__ import annotations

import argparse

from xtl import checks


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "check-model",
        help="compare xtl's model with the checkpoint's own Hugging Face model, layer by layer",
        description=(
            "Load MODEL with xtl and with transformers (offline, no remote code), run both on a few prompts, and "
            "print per layer the largest difference of the residual stream entering the block and of each site's "
            "value (hook_attn_out, hook_mlp_out, hook_resid_mid), the logits' difference, whether the greedy "
            "answers agree, and a one-line verdict. Exit status 0 on a match, 1 on a mismatch."
        ),
    )
    parser.add_argument("model", help="a .gguf file, a local Hugging Face checkpoint directory, a model name in the local HF cache, or SmolLM2-135M-Instruct")
    parser.add_argument("--dtype", default="float32", help="float32 (default), float64, bfloat16 or float16")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--prompt", action="append", default=None, metavar="TEXT", help="a prompt to compare on (repeatable; default: three short prompts in English, French and Swahili)")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="greedy tokens compared per prompt (default 8)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    checks.check_dtype(args.dtype)
    checks.check_device_name(args.device)
    checks.check_max_new_tokens(args.max_new_tokens, "--max-new-tokens")
    prompts = tuple(args.prompt) if args.prompt else None
    for prompt in prompts or ():
        checks.check_prompt(prompt, "prompt")
    from xtl.model.checking import DEFAULT_PROMPTS, check_model

    result = check_model(args.model, prompts=prompts or DEFAULT_PROMPTS, dtype=args.dtype, device=args.device,
                         max_new_tokens=args.max_new_tokens)
    print(f"{result.model} ({result.architecture}, {result.dtype}): largest absolute difference per layer")
    print(result.table())
    print(result.verdict)
    return 0 if result.ok else 1
