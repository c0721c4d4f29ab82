"""An IPython extension the Python kernel loads: E2B's extra result formats.

- `e2b/chart`: a matplotlib figure as data (its type, title, axes, points, bars...), made by
  `e2b_charts`, the reference implementation; the SDKs decode it as `result.chart`.
- `e2b/data`: a pandas DataFrame as columns (`to_dict(orient="list")`): `result.data`.

Both know their types by name, so neither pandas nor matplotlib is imported before the user's
code imports them (kernels start faster).
"""

from __future__ import annotations

import logging
from typing import Any

from IPython.core.formatters import BaseFormatter
from traitlets import ObjectName, Unicode

log = logging.getLogger(__name__)

_FIGURE = {"matplotlib.figure.Figure"}
_DATA_FRAME = {"pandas.DataFrame", "pandas.core.frame.DataFrame"}  # pandas 3 says `pandas`


def _is_a(obj: Any, names: set[str]) -> bool:
    return any(f"{cls.__module__}.{cls.__qualname__}" in names for cls in type(obj).__mro__)


def _figure_as_chart(figure: Any) -> dict[str, Any] | None:
    try:
        from e2b_charts import chart_figure_to_dict
    except ImportError:  # a template without e2b-charts: PNG only
        return None
    try:
        return chart_figure_to_dict(figure) or None
    except Exception:  # a figure e2b_charts cannot read still shows as PNG
        log.debug("no chart data for %r", figure, exc_info=True)
        return None


def _frame_as_data(frame: Any) -> dict[str, Any]:
    return frame.to_dict(orient="list")


class ChartFormatter(BaseFormatter):
    """Both formatters look at the type at call time: registering it does not last (when
    pyplot is imported, IPython's inline backend drops every formatter's entry for `Figure`,
    pylabtools.select_figure_formats)."""

    format_type = Unicode("e2b/chart")
    print_method = ObjectName("_repr_e2b_chart_")
    _return_type = (dict,)

    def __call__(self, obj: Any) -> Any:
        if any(
            f"{cls.__module__}.{cls.__qualname__}" == "matplotlib.figure.Figure" for cls in type(obj).__mro__
        ):
            return _figure_as_chart(obj)
        return super().__call__(obj)


class DataFormatter(BaseFormatter):
    format_type = Unicode("e2b/data")
    print_method = ObjectName("_repr_e2b_data_")
    _return_type = (dict,)

    def __call__(self, obj: Any) -> Any:
        return _frame_as_data(obj) if _is_a(obj, _DATA_FRAME) else super().__call__(obj)


def load_ipython_extension(ipython: Any) -> None:
    formatters = ipython.display_formatter.formatters
    chart = ChartFormatter(parent=ipython.display_formatter)
    data = DataFormatter(parent=ipython.display_formatter)
    formatters["e2b/chart"] = chart
    formatters["e2b/data"] = data
    # Only the types active when the shell started are asked for otherwise.
    display = ipython.display_formatter
    display.active_types = [*display.active_types, *(t for t in formatters if t not in display.active_types)]
