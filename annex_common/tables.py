"""Tables and label/value fields a person reads on any terminal, and a script reads whole in a pipe.

On a terminal no word is ever cut: a table whose words cannot all fit the width is shown as one
record per block instead (the first column as the block's title, then a line per column). Written
to a file or a pipe, a table is as wide as its longest row needs, so a script reads whole ids.
"""

from __future__ import annotations

from typing import Any, Collection, Iterable

from rich.console import Console
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

WIDE = 1_000_000  # a width no table reaches: measures what a table needs when nothing wraps


def print_table(console: Any, table: Table, *, prose: Collection[str] = ()) -> None:
    """Print ``table`` without cutting a word.

    Columns named in ``prose`` hold sentences, which may wrap between words; every other
    column's cells stay whole (ids, names, prices, times). On a terminal too narrow for that,
    each row becomes a block.
    """
    if not console.is_terminal:
        for column in table.columns:
            column.overflow = "fold"
        natural = Measurement.get(console, console.options.update_width(WIDE), table).maximum
        # A console prints no wider than itself: a second one, as wide as the table, on the same file.
        Console(file=console.file, width=max(natural, console.width), highlight=False).print(table)
        return
    for column in table.columns:
        if column.header in prose:
            column.overflow = "fold"  # only a word longer than the whole column is folded
        else:
            column.no_wrap = True
            column.min_width = _widest_cell(console, column)
    needed = Measurement.get(console, console.options.update_width(WIDE), table).minimum
    if needed <= console.width:
        console.print(table)
    else:
        _print_records(console, table)


def print_fields(console: Any, title: str, rows: Iterable[tuple[str, str]]) -> None:
    """A title, then one ``label  value`` line per row, the values aligned.

    On a terminal a long value wraps between words under itself, not under the labels; in a
    pipe each row stays one line, for grep.
    """
    rows = list(rows)
    console.print(title)
    if not console.is_terminal:
        label_width = max(_width(console, label) for label, _ in rows)
        for label, value in rows:
            console.print(f"  {label}{' ' * (label_width - _width(console, label))}  {value}")
        return
    _print_labelled(console, rows)


def print_command(console: Any, lead: str, command: str) -> None:
    """``lead`` then a command to copy: never broken between its words. When both do not fit
    one line, the command gets a line of its own (the terminal wraps it if it must, which copies
    back as one line)."""
    if not console.is_terminal or len(lead) + 1 + len(command) <= console.width:
        console.print(f"{lead} {command}", soft_wrap=True)
        return
    console.print(lead)
    console.print(f"  {command}", soft_wrap=True)


def _print_labelled(console: Any, rows: list[tuple[Any, Any]]) -> None:
    """Labels and values, indented, on a terminal: values beside their labels, wrapping between
    words under themselves; when a value's longest word cannot fit beside them, each label
    with its value under it."""
    if not rows:  # a record of a one-column table: its title says it all
        return
    labelled = any(label for label, _ in rows)
    label_width = max(_width(console, label) for label, _ in rows)
    options = console.options.update_width(WIDE)
    longest_word = max(Measurement.get(console, options, value).minimum for _, value in rows)
    if not labelled or 2 + label_width + 2 + longest_word <= console.width:
        console.print(Padding(_field_grid(rows, labelled=labelled), (0, 0, 0, 2)))
        return
    for label, value in rows:
        console.print(Padding(label, (0, 0, 0, 2)))
        console.print(Padding(_field_grid([(label, value)], labelled=False), (0, 0, 0, 4)))


def _width(console: Any, renderable: Any) -> int:
    """How wide ``renderable`` is when nothing wraps (markup counts for nothing)."""
    return Measurement.get(console, console.options.update_width(WIDE), renderable).maximum


def _widest_cell(console: Any, column: Any) -> int:
    return max(_width(console, cell) for cell in [column.header, *column.cells])


def _field_grid(rows: Iterable[tuple[Any, Any]], *, labelled: bool) -> Table:
    """Values (beside their labels), each wrapping between words under itself."""
    grid = Table.grid(padding=(0, 2))
    if labelled:
        grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(*((label, value) if labelled else (value,)))
    return grid


def _print_records(console: Any, table: Table) -> None:
    """One block per row: the first column (and any column with no header, such as a verdict)
    as the title, then the other columns as labelled lines."""
    columns = table.columns
    cells = [list(column.cells) for column in columns]
    in_title = [index for index, column in enumerate(columns) if index == 0 or not column.header]
    for row in range(table.row_count):
        if row:
            console.print()
        title = Text("  ").join(_as_text(console, cells[index][row]) for index in in_title)
        title.stylize("bold")
        console.print(title)
        fields = [(column.header, cells[index][row]) for index, column in enumerate(columns) if index not in in_title]
        if len(fields) == 1:  # a lone field (a check's detail) needs no label: its value gets the width
            fields = [("", fields[0][1])]
        _print_labelled(console, fields)


def _as_text(console: Any, cell: Any) -> Text:
    return console.render_str(cell) if isinstance(cell, str) else cell
