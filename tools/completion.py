"""`casfs completion bash`: a completion script made from the parser itself."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import Context

TEMPLATE = """# bash completion for casfs (made by `casfs completion bash`)
_casfs() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} command="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${{COMP_WORDS[i]}} in
            --store|--config) ((i++)) ;;
            -*) ;;
            *) command=${{COMP_WORDS[i]}}; break ;;
        esac
    done
    local options
    case $command in
{cases}
        "") COMPREPLY=($(compgen -W "{commands} {global_options}" -- "$cur")); return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$options" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o filenames -F _casfs casfs
"""


def register(commands: Any) -> None:
    p = commands.add_parser("completion", help="print a shell completion script",
                            description="Print a completion script for bash, e.g. "
                                        "casfs completion bash > "
                                        "/etc/bash_completion.d/casfs")
    p.add_argument("shell", choices=["bash"])
    p.set_defaults(func=cmd_completion)


def bash_script(parser: argparse.ArgumentParser) -> str:
    subparsers = next(a for a in parser._actions
                      if isinstance(a, argparse._SubParsersAction))
    cases = []
    for name, sub in sorted(subparsers.choices.items()):
        options = sorted(o for a in sub._actions for o in a.option_strings)
        cases.append(f'        {name}) options="{" ".join(options)}" ;;')
    global_options = sorted(o for a in parser._actions for o in a.option_strings)
    return TEMPLATE.format(cases="\n".join(cases),
                           commands=" ".join(sorted(subparsers.choices)),
                           global_options=" ".join(global_options))


def cmd_completion(args: argparse.Namespace, ctx: Context) -> int:
    from .cli import build_parser

    print(bash_script(build_parser()), end="")
    return 0
