"""What the CLI says about itself: `qntz --version` (the toolchain, as `dvc version` lists
its dependencies) and `qntz completion -s bash|zsh` (a script generated from the parser,
so a new option completes without anyone editing a script).

Nothing here imports the libraries it names: versions come from installed metadata.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

# (shown name, distribution names tried in order)
TOOLCHAIN = (("torch", ("torch",)), ("onnx", ("onnx",)), ("onnxruntime", ("onnxruntime",
             "onnxruntime-gpu")), ("onnxscript", ("onnxscript",)), ("onnxsim", ("onnxsim",)),
             ("onnxslim", ("onnxslim",)),
             ("TensorRT", ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")),
             ("TensorRT-RTX", ("tensorrt-rtx",)), ("polygraphy", ("polygraphy",)))


def toolchain(qntz_version: str) -> list[tuple[str, str]]:
    """(name, version or "not installed") for qntz, Python and each library qntz drives."""
    import platform

    from qntz.core.hashing import library_version

    found = [("qntz", qntz_version), ("Python", platform.python_version())]
    for shown, distributions in TOOLCHAIN:
        versions = [v for v in map(library_version, distributions) if v]
        found.append((shown, versions[0] if versions else "not installed"))
    return found


class VersionAction(argparse.Action):
    """`--version`: the toolchain, one `name version` line each, then exit 0."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 version: str = "", **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the versions of qntz and its toolchain, then exit")
        self.version = version

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        (_, ours), *rows = toolchain(self.version)
        width = max(len(name) for name, _ in rows)
        print(f"qntz {ours}")  # the first line as before, for scripts that read it
        print("\n".join(f"  {name:<{width}}  {version}" for name, version in rows))
        parser.exit()


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps no public list of subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> list[tuple[list[str], str, list[str]]]:
    """(option strings, help, choices) of each option; positionals with choices as ([], …)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        help_text = "" if action.help in (None, argparse.SUPPRESS) else str(action.help)
        choices = [str(c) for c in action.choices or []]
        found.append((list(action.option_strings), help_text, choices))
    return found


def _helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def bash_script(parser: argparse.ArgumentParser) -> str:
    commands = _commands(parser)
    top = [o for opts, _, _ in _options(parser) for o in opts]
    cases = []
    for name, sub in commands.items():
        words = [o for opts, _, _ in _options(sub) for o in opts]
        words += [c for opts, _, choices in _options(sub) if not opts for c in choices]
        cases.append(f"    {name}) opts=\"{' '.join(words)}\" ;;")
    return f"""# qntz completion for bash: source <(qntz completion -s bash)
_qntz() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" cmd="" i opts=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    if [[ "${{COMP_WORDS[i]}}" != -* ]]; then cmd="${{COMP_WORDS[i]}}"; break; fi
  done
  if [[ -z "$cmd" ]]; then
    COMPREPLY=($(compgen -W "{' '.join([*commands, *top])}" -- "$cur"))
    return
  fi
  case "$cmd" in
{chr(10).join(cases)}
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$(printf '%s\\n' $opts | grep -v '^-')" -- "$cur"))
    COMPREPLY+=($(compgen -f -- "$cur"))
  fi
}}
complete -o default -F _qntz qntz
"""


def _zsh_text(text: str) -> str:
    """Help text safe inside a zsh `_arguments` spec (no brackets, colons or quotes)."""
    return re.sub(r"[\[\]:'\"`\\$]", "", " ".join(text.split()))[:70]


def zsh_script(parser: argparse.ArgumentParser) -> str:
    commands, helps = _commands(parser), _helps(parser)
    described = "\n".join(f"    '{name}:{_zsh_text(helps.get(name, ''))}'" for name in commands)
    cases = []
    for name, sub in commands.items():
        specs = []
        for opts, help_text, choices in _options(sub):
            if not opts:
                if choices:
                    specs.append(f"'1:{name}:({' '.join(choices)})'")
                continue
            for option in opts:
                specs.append(f"'{option}[{_zsh_text(help_text)}]'")
        specs.append("'*:file:_files'")
        cases.append(f"    {name}) _arguments {' '.join(specs)} ;;")
    return f"""#compdef qntz
# qntz completion for zsh: source <(qntz completion -s zsh)
_qntz() {{
  local -a commands
  commands=(
{described}
  )
  if (( CURRENT == 2 )); then
    _describe 'command' commands
    return
  fi
  local cmd=$words[2]
  shift words
  (( CURRENT-- ))
  case $cmd in
{chr(10).join(cases)}
  esac
}}
compdef _qntz qntz
"""


def add_parser(sub: Any, plain: list[Any]) -> None:
    completion = sub.add_parser("completion", parents=plain,
                                help="print a shell completion script (bash or zsh)")
    completion.add_argument("-s", "--shell", choices=["bash", "zsh"], default="bash",
                            help="the shell (default bash); e.g. source <(qntz completion)")


def cmd_completion(args: argparse.Namespace, console: Any) -> int:
    parser = args.parser  # the whole CLI's, set by `qntz.cli.main`: this module is below it
    print(bash_script(parser) if args.shell == "bash" else zsh_script(parser), end="")
    return 0


COMMANDS = {"completion": cmd_completion}
