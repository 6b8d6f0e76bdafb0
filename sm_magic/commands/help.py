"""``%sagemaker help``: every command with what it does."""

from __future__ import annotations

from typing import Any

from sm_magic.display import Preformatted


def run(ctx: Any, args: Any) -> Preformatted:
    from sm_magic.commands import help_text

    return Preformatted(help_text(), title="%sagemaker commands (prompts go in a cell: %%sagemaker ENDPOINT; "
                                          "cell options: %%sagemaker?)")
