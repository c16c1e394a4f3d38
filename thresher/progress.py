"""The progress bars (rich, on stderr): one bar for the scan and the training run, and a bar
per stage for a command of several stages (clean: find issues, write the report).

Label, bar, done/total, a line of figures (the measured rate, or what the caller says),
elapsed time and ETA. Silent when off, so callers need no `if`.
"""

from __future__ import annotations

from contextlib import contextmanager


class ProgressBar:
    """A rich progress bar on stderr (stdout stays for results), or nothing when not enabled.

    With `rate_unit` ("img/s"), the figures are the measured rate of `advance`; otherwise
    they are the `info` the caller gives to `update`.
    """

    def __init__(
        self,
        label: str,
        total: int,
        enabled: bool = True,
        start: int = 0,
        rate_unit: str | None = None,
    ):
        self.bar = None
        self.rate_unit = rate_unit
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.bar.start()
        self.task = self.bar.add_task(label, total=total, completed=start, info="")

    def advance(self, n: int) -> None:
        """`n` more done; the figures show the measured rate when the bar has a rate_unit."""
        if self.bar is None:
            return
        self.bar.advance(self.task, n)
        if self.rate_unit:
            speed = self.bar.tasks[0].speed
            self.bar.update(self.task, info=f"{speed:.0f} {self.rate_unit}" if speed else "")

    def update(self, completed: int, info: str = "") -> None:
        """`completed` done in all, with a line of figures."""
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, info=info)

    def note(self, message: str) -> None:
        """A line printed above the bar."""
        if self.bar is not None:
            self.bar.console.print(message)

    def close(self) -> None:
        """Stop drawing (the last state stays on the terminal)."""
        if self.bar is not None:
            self.bar.stop()


@contextmanager
def stage_bars(command: str, names: list[str]):
    """One bar per stage of COMMAND (on stderr, silent when not a terminal): `thresher clean`'s.

    Yields step(stage, done=None, total=None, what=None): start a stage, or move its own bar
    (`what`: the part of the stage now running, shown after its name).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )
    titles = [f"{command} {i + 1}/{len(names)}: {n}" for i, n in enumerate(names)]
    tasks = [bar.add_task(t, total=None, start=False) for t in titles]

    def step(
        stage: int, done: int | None = None, total: int | None = None, what: str | None = None
    ) -> None:
        for earlier in range(stage):
            finish(earlier)
        bar.start_task(tasks[stage])
        if total is not None:
            totals[stage] = total
            bar.update(tasks[stage], total=total, completed=done)
        if what is not None:
            bar.update(tasks[stage], description=f"{titles[stage]} ({what})")

    totals = [1] * len(names)

    def finish(stage: int) -> None:  # "4/4" for a stage of four detectors
        bar.update(tasks[stage], total=totals[stage], completed=totals[stage],
                   description=titles[stage])  # fmt: skip

    with bar:
        yield step
        for stage in range(len(tasks)):
            finish(stage)
