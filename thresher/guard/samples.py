"""Skipped samples guard: a user transform that raises on some images.

What it catches: the recipe's `user_transform` raising on a sample (the field's "it crashed on
image 31,337 after two days"). The dataset skips such a sample (the next one stands in) and
counts it in memory shared with the DataLoader workers (data/skipped.py).
What it does: names the transform, its error and the first file once (an event); when the
skipped share of the samples drawn passes `max_skipped_share`, ends the run after the step with
a checkpoint and a diagnosis: the transform is broken, not one image.
What it costs: reading one shared integer at each step boundary.
When wrong: the share is judged on what the workers prepared, which runs a few batches ahead
of what was trained: early in a run it reads a little high. It waits for a full step first.
"""

from __future__ import annotations

from thresher.guard.hooks import Event, Hook, Verdict


class SkippedSamplesGuard(Hook):
    """Reports the first skipped sample, and stops past the allowed share."""

    name = "samples"

    def __init__(self, skipped, max_share: float, samples_per_step: int):
        self.skipped, self.max_share, self.samples_per_step = skipped, max_share, samples_per_step
        self.reported = 0
        self.stopped = False
        self.first_step = 0  # the count is this session's: so are the samples it is judged on

    def start(self, state) -> Verdict:
        self.first_step = state.step
        return Verdict()

    def on_timer(self, state) -> Verdict:
        n = self.skipped.count
        if n == self.reported or self.stopped:
            return Verdict()
        events = []
        if self.reported == 0:
            events.append(Event("sample_skipped", f"{self.skipped.first}; the sample is skipped "
                                "(the next one stands in) and counted", local=True))  # fmt: skip
        self.reported = n
        drawn = max((state.step - self.first_step) * self.samples_per_step, self.samples_per_step)
        share = n / drawn
        if share <= self.max_share:
            return Verdict("go", events)
        self.stopped = True
        reason = (
            f"the user_transform failed on {n} of about {drawn} samples ({100 * share:.1f}%, "
            f"more than max_skipped_share {100 * self.max_share:g}%): {self.skipped.first}. "
            "Fix the transform (or the files), then --resume"
        )
        events.append(Event("stop", reason, local=True))
        return Verdict("finish", events, reason=reason)
