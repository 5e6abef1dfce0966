"""What every figure of the inspection shares: bilingual labels, readable token labels, thinned ticks, saving.

Figures stay readable on long prompts: at most `MAX_TICKS` tick labels per axis, long token lists
windowed by the caller, tokens shown with visible spaces and line breaks.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

from lanterne.errors import InputFileError

LANGUAGES = ("fr", "en")
MAX_TICKS = 40  # tick labels per axis beyond which they are thinned
TOKEN_LABEL_CHARS = 14


def check_language(lang: str) -> str:
    """`lang` if it is 'fr' or 'en', else InputTextError-like ValueError for the caller to report."""
    if lang not in LANGUAGES:
        from lanterne.errors import ConfigError

        raise ConfigError(f"unknown language {lang!r}; choose fr or en")
    return lang


def say(lang: str, french: str, english: str) -> str:
    """The label in the figure's language."""
    return french if lang == "fr" else english


def token_label(text: str, limit: int = TOKEN_LABEL_CHARS) -> str:
    """A token as a tick label: spaces as '␣', line breaks as '↵', tabs as '⇥', cut to `limit` characters."""
    shown = text.replace(" ", "␣").replace("\n", "↵").replace("\r", "⏎").replace("\t", "⇥") or "∅"
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def tick_positions(count: int, max_ticks: int = MAX_TICKS) -> list[int]:
    """Which of `count` positions get a tick label: all of them up to `max_ticks`, else an even stride (the last included)."""
    if count <= max_ticks:
        return list(range(count))
    stride = -(-count // max_ticks)
    positions = list(range(0, count, stride))
    if positions[-1] != count - 1 and len(positions) < max_ticks:
        positions.append(count - 1)
    return positions


def set_token_ticks(axis, labels: Sequence[str], which: str = "x", max_ticks: int = MAX_TICKS) -> None:
    """Label the x or y axis with tokens, thinned to at most `max_ticks` labels."""
    positions = tick_positions(len(labels), max_ticks)
    shown = [token_label(labels[index]) for index in positions]
    if which == "x":
        axis.set_xticks(positions)
        axis.set_xticklabels(shown, rotation=90, fontsize=_font_size(len(positions)))
    else:
        axis.set_yticks(positions)
        axis.set_yticklabels(shown, fontsize=_font_size(len(positions)))


def _font_size(ticks: int) -> float:
    return 10 if ticks <= 16 else 8 if ticks <= 30 else 7


# Fonts for the scripts DejaVu Sans lacks (a token in Chinese, Japanese, Korean or Telugu draws as boxes
# without them), used where Debian's fonts-noto-cjk / fonts-noto-core put them; matplotlib falls back
# glyph by glyph along the list.
FALLBACK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans Telugu", "Noto Sans Devanagari", "Noto Sans Arabic")


def font_families() -> list[str]:
    """DejaVu Sans first, then the fallback fonts installed on this machine."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(name for name in FALLBACK_FONTS if name in installed)]


def new_figure(width: float = 8.0, height: float = 5.0):
    """A matplotlib figure and axes, drawn off-screen (no display needed), with the fallback fonts."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    matplotlib.rcParams["font.family"] = font_families()
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def wrapped_title(title: str, width: float, font_size: float = 12.0) -> str:
    """`title` broken into lines that fit a figure `width` inches wide (a long title is cut at the edge, not wrapped)."""
    import textwrap

    characters = max(20, int(width * 72 / (0.6 * font_size)))  # an average glyph: about 0.6 of the font size
    return "\n".join(textwrap.fill(line, characters) for line in title.split("\n"))


def save_figure(figure, stem: str | os.PathLike, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write `figure` as stem.png and stem.svg (or the given formats); returns the paths.

    An unwritable place is an InputFileError naming it.
    """
    stem = Path(stem)
    paths = []
    for extension in formats:
        path = stem.with_suffix(f".{extension}")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # a token in a script the font lacks
                figure.savefig(path, format=extension, dpi=150 if extension == "png" else None)
        except OSError as error:
            raise InputFileError(f"cannot write the figure {path} ({error.strerror or error}); choose another --out") from None
        paths.append(path)
    return paths


def save_as(figure, path: str | os.PathLike) -> Path:
    """Write `figure` to `path`, whose suffix (.png or .svg) picks the format (the CLI's --out)."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg"):
        raise InputFileError(f"--out {path}: the figure is written as .png or .svg; end the name with one of them")
    if not path.parent.is_dir():
        raise InputFileError(f"--out {path}: folder {path.parent} does not exist; create it first")
    return save_figure(figure, path.with_suffix(""), (path.suffix.lower().lstrip("."),))[0]
