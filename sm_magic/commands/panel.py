"""``%sagemaker panel``: the widget panel (Jupyter only)."""

from __future__ import annotations

from typing import Any

from sm_magic.display import Preformatted, rich_frontend


def run(ctx: Any, args: Any) -> Any:
    if not rich_frontend():
        return Preformatted("The panel is a Jupyter widget: open this notebook in JupyterLab or Notebook. In a "
                            "terminal, the line magic does the same: %sagemaker help.")
    from sm_magic.widgets.panel import Panel

    return Panel(ctx.runner, ctx.shell).widget
