"""`python -m nst_engine {stylize,texture,explain,samples,serve,work,fetch-presets} ...`"""
from __future__ import annotations

import sys

USAGE = """usage: python -m nst_engine COMMAND ...

commands:
  stylize        stylize a photo with one or more style images (see `stylize --help`)
  texture        a painting's style alone, painted from noise; --tileable wraps around (see `texture --help`)
  explain        one sheet that shows a painting's style layer by layer (see `explain --help`)
  samples        write a sample photo and a generated style image into a folder
  serve          run the engine HTTP service (see `serve --help`)
  work           pull jobs from a NATS JetStream broker, one worker per GPU (see `work --help`)
  fetch-presets  download and verify the default style presets (see `fetch-presets --help`)
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    # Imports are deferred so `--help` and typos answer without loading torch.
    if command == "stylize":
        from .cli import stylize_main

        return stylize_main(rest)
    if command == "texture":
        from .cli import texture_main

        return texture_main(rest)
    if command == "explain":
        from .cli import explain_main

        return explain_main(rest)
    if command == "samples":
        from .cli import samples_main

        return samples_main(rest)
    if command == "serve":
        from .service.serve import main as serve_main

        return serve_main(rest)
    if command == "work":
        from .service.work import main as work_main

        return work_main(rest)
    if command == "fetch-presets":
        from .fetch_presets import main as fetch_presets_main

        return fetch_presets_main(rest)
    print(f"nst_engine: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
