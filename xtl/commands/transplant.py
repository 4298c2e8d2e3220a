"""`xtl transplant`: the paper's casual attempt, one configuration, side by side."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xtl import checks
from xtl.commands._options import add_model_arguments, add_prompt_format_argument, layers_of, load_options, use_threads
from xtl.errors import XtlError
from xtl.signals import SIGNALS
from xtl.sites import check_site


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "transplant",
        help="transplant one source prompt's latent into one target prompt and compare answers",
        description=(
            "Run the target prompt twice: vanilla, and with the last-position activation of the source "
            "prompt at SOURCE_LAYER written into TARGET_LAYER (greedy decoding, prompt pass only). "
            "Prints both answers side by side."
        ),
    )
    add_model_arguments(parser)
    add_prompt_format_argument(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--source", help="the source prompt (the language whose latent is borrowed), as text")
    source.add_argument("--source-file", type=Path, help="read the source prompt from this UTF-8 file")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target", help="the target prompt (the one whose answer is read), as text")
    target.add_argument("--target-file", type=Path, help="read the target prompt from this UTF-8 file")
    parser.add_argument("--site", default="ffn", help="ffn (MLP output), attn (attention output) or attn-paper (the public code's 'attention': resid_mid into attn_out); default ffn")
    parser.add_argument("--source-layer", type=int, required=True, help="layer i read from the source prompt, 0..N-1")
    parser.add_argument("--target-layer", type=int, required=True, help="layer j written in the target prompt, 0..N-1")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate at most (default 20, as the paper)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text: each answer's text, token ids and confidence signals (" + ", ".join(SIGNALS) + ")")
    parser.set_defaults(func=run)


def read_prompt(text: str | None, path: Path | None, what: str) -> str:
    if path is None:
        return text
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise XtlError(f"the {what} file {str(path)!r} does not exist: give an existing UTF-8 text file.") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as error:
        raise XtlError(f"the {what} file {str(path)!r} cannot be read as UTF-8 text ({type(error).__name__}).") from None


def run(args: argparse.Namespace) -> int:
    # Everything that can be checked without the model, before importing torch or loading it.
    load = load_options(args)
    source = checks.check_prompt(read_prompt(args.source, args.source_file, "source prompt"), "source prompt")
    target = checks.check_prompt(read_prompt(args.target, args.target_file, "target prompt"), "target prompt")
    check_site(args.site)
    for layer, what in ((args.source_layer, "source layer"), (args.target_layer, "target layer")):
        if layer < 0:
            raise XtlError(f"--{what.replace(' ', '-')} {layer} is negative: layers are numbered from 0.")
    checks.check_max_new_tokens(args.max_new_tokens, "--max-new-tokens")
    n_layers = layers_of(args)
    if n_layers is not None:
        checks.check_layer_index(args.source_layer, n_layers, "source layer")
        checks.check_layer_index(args.target_layer, n_layers, "target layer")

    import xtl
    from xtl.model import check_context, check_layer, encode

    use_threads(args)
    model = load.load()
    check_layer(model, args.source_layer, "source layer")
    check_layer(model, args.target_layer, "target layer")
    encode(model, source, "source prompt", args.prompt_format)
    target_ids = encode(model, target, "target prompt", args.prompt_format)
    check_context(model, len(target_ids), args.max_new_tokens, "target prompt")
    vanilla = xtl.generate(model, target, max_new_tokens=args.max_new_tokens, prompt_format=args.prompt_format)
    moved = xtl.transplant(
        model, source, target, site=args.site, source_layer=args.source_layer,
        target_layer=args.target_layer, max_new_tokens=args.max_new_tokens, prompt_format=args.prompt_format,
    )
    if args.json:

        def answer(result) -> dict:  # the text, its tokens and its confidence signals
            return {"text": result.text, "token_ids": list(result.token_ids), **{s: getattr(result, s) for s in SIGNALS}}

        print(json.dumps({
            "model": model.xtl.name, "site": args.site, "source_layer": args.source_layer,
            "target_layer": args.target_layer, "prompt_format": args.prompt_format,
            "vanilla": answer(vanilla), "transplant": answer(moved),
        }, ensure_ascii=False))
        return 0
    label = f"transplant {args.site} {args.source_layer}->{args.target_layer}"
    width = max(len("vanilla"), len(label))
    print(f"model {model.xtl.name} ({model.cfg.n_layers} layers), prompt format {args.prompt_format}")
    print(f"{'vanilla':<{width}} | {vanilla.text!r}")
    print(f"{label:<{width}} | {moved.text!r}")
    print("(the answers are the same)" if vanilla.token_ids == moved.token_ids else "(the answers differ)")
    return 0
