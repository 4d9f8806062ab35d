"""The CLI reference in the docs, rendered from the commands themselves.

`help_text("db", "setup")` is `pgkb db setup --help` as plain text (no colour, no boxes) at a fixed width,
so the same code always renders the same bytes. The docs embed it with cog blocks:

    <!-- [[[cog from pgkb.cli.reference import cog_help; cog_help("db", "setup")]]] -->
    ...generated...
    <!-- [[[end]]] -->

`cog -r docs/*.md` regenerates them; the suite runs `cog --check` and fails when a doc is stale.
"""

from __future__ import annotations

from typing import Any

WIDTH = 100


def help_text(*command: str, width: int = WIDTH) -> str:
    """`pgkb <command...> --help`, formatted by click's plain formatter rather than rich's panels."""
    from typer.core import _click  # the click typer builds its commands on
    from typer.main import get_command

    from pgkb.cli import app

    cmd: Any = get_command(app)
    ctx = _click.Context(cmd, info_name="pgkb", terminal_width=width, max_content_width=width)
    for name in command:
        sub = cmd.get_command(ctx, name)
        if sub is None:
            raise KeyError(f"no command pgkb {' '.join(command)}")
        cmd, ctx = sub, _click.Context(sub, info_name=name, parent=ctx, terminal_width=width, max_content_width=width)
    cmd.rich_markup_mode = None  # a fresh command object per call: plain output, nothing global changes
    formatter = ctx.make_formatter()
    cmd.format_help(ctx, formatter)
    return "\n".join(line.rstrip() for line in formatter.getvalue().splitlines())


def cog_help(*command: str) -> None:
    """Inside a cog block: the help of `pgkb <command...>` as a fenced text block."""
    import cog  # type: ignore[import-not-found]  # cogapp, present only while cog runs

    cog.out(f"\n```text\n{help_text(*command)}\n```\n\n")
