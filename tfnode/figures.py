"""What every page and plot of tfnode shares: percentages as the tables print them, and
a labelled figure written atomically."""

import contextlib

from tfnode import files


def pct(v):
    """A proportion as a percentage with two decimals; ``-`` for None."""
    return "-" if v is None else f"{100 * v:.2f}"


def pct_interval(v, ci):
    """``17.00 [10.9, 25.6]``: a proportion (%) and its 95% interval to one decimal (a
    finer interval would claim a precision it does not have); the proportion alone
    where there is no interval."""
    if not ci or ci[0] is None:
        return pct(v)
    return f"{pct(v)} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def pct_proportion(prop):
    """`pct_interval` of a stored proportion (`tfnode.stats.proportion`); ``-`` for None."""
    return "-" if prop is None else pct_interval(prop["p"], prop["ci95"])


def pvalue(value):
    """A p-value as the pages print it: two significant digits, scientific below 1e-4,
    ``< 1e-300`` where the test's tail underflowed to 0, ``-`` for None."""
    if value is None:
        return "-"
    if value == 0:  # below the smallest double: the test's tail underflowed
        return "< 1e-300"
    return f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}"


@contextlib.contextmanager
def figure(path, *, xlabel, ylabel, title, legend_size=7):
    """A 6x4 in. axes to draw on; labelled, then written to ``path`` atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    try:
        yield ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
        fig.tight_layout()
        with files.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
