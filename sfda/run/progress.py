"""Rich progress bars for long passes outside Lightning's loops (engine refreshes, fetches)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def track(items: Iterable[T], description: str, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` showing a rich progress bar (transient) when ``enabled`` (rank 0)."""
    if not enabled:
        yield from items
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    total = len(items) if hasattr(items, "__len__") else None
    columns = [TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)
