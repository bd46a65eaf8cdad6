"""Gradual pruning (Zhu & Gupta, 2017): raise the level step by step while training.

One-shot pruning removes its share of the weights at once and finetunes
afterwards.  Zhu and Gupta ("To prune, or not to prune", 2017) prune a little
at a time *during* training instead, so the network adapts to each cut
before the next.  The level rises from s_0 to s_f in n steps, one every Δt
training steps from step t_0:

    s_t = s_f + (s_0 - s_f) * (1 - (t - t_0) / (n Δt))^3,   t = t_0, t_0 + Δt, ..., t_0 + n Δt

The cube makes the level rise fast at first, while there are many weights
to spare, and slowly towards s_f, when each one matters more.  Between
pruning steps the level stays where it was; after t_0 + n Δt it is s_f.

A schedule is a small value, like a strategy: it holds the numbers and a
strategy *factory*, a function from a level to what ``prune`` accepts (the
strategy classes are such functions)::

    schedule = GradualPrune(LevelPrune, final=0.8, start=0, interval=50, n=10)
    trainer(model, epochs, callback=schedule.attach(model))

``attach`` returns the function ``trainer`` calls after every training
batch, which is after the optimiser's step.  It counts the steps and at
each pruning step prunes the model *in place*
(:func:`tinyprune.prune.prune_in_place`), so the optimiser, bound to that
model, honours the new masks from its next step on.  Levels count from the
full size and masked weights rank first, so every pruning step keeps what
the last one pruned and adds to it: masks only lose entries, and after the
last step the level is exactly s_f (``LevelPrune``: ``N - ceil((1 - s_f) N)``
zeros in a layer of N weights; ``GlobalLevelPrune``: that many of all N
weights of the model; ``ChannelPrune``: that many of a conv's N channels).
"""

from .common import check_int, check_level
from .prune import prune, prune_in_place
from .module import check_model

__all__ = ["GradualPrune", "PruningCallback"]


class GradualPrune:
    """Zhu & Gupta's schedule: ``strategy(s_t)`` at steps t = start, start + interval, ...

    strategy  a function from a level to anything ``prune`` accepts:
              ``LevelPrune``, ``GlobalLevelPrune``, ``ChannelPrune``, or e.g.
              ``lambda p: ChannelPrune(p, magnitude=l2)``
    final     s_f, the level reached at the last pruning step
    initial   s_0, the level of the first pruning step (default 0)
    start     t_0, the training step of the first pruning; 0 prunes as soon
              as the schedule is attached, before the first batch
    interval  Δt, training steps between two pruning steps
    n         the number of pruning steps after the first, so the level is
              set n + 1 times and reaches s_f at step t_0 + n Δt (``end``)

    A training step is one batch: the callback ``attach`` returns is called
    after step t = 1, 2, ...  ``level(t)`` is the level the model holds after
    step t; ``pruning_steps()`` lists the steps where the level changes.
    """

    def __init__(self, strategy, final, initial=0.0, start=0, interval=1, n=10):
        if not callable(strategy):
            raise TypeError(f"GradualPrune: strategy must be a function from a level to a strategy "
                            f"(e.g. LevelPrune, ChannelPrune), got {strategy!r}")
        self.strategy = strategy
        self.final = check_level(final, "GradualPrune: final")
        self.initial = check_level(initial, "GradualPrune: initial")
        if self.initial > self.final:
            raise ValueError(f"GradualPrune: the initial level {self.initial} is above the final "
                             f"level {self.final}; levels only rise, since masks only grow")
        self.start = check_int(start, "start", "GradualPrune", minimum=0)
        self.interval = check_int(interval, "interval", "GradualPrune")
        self.n = check_int(n, "n", "GradualPrune")

    def __repr__(self):
        name = getattr(self.strategy, "__name__", repr(self.strategy))
        return (f"GradualPrune({name}, final={self.final}, initial={self.initial}, "
                f"start={self.start}, interval={self.interval}, n={self.n})")

    @property
    def end(self):
        """t_0 + n Δt: the step of the last pruning, at level s_f."""
        return self.start + self.n * self.interval

    def pruning_steps(self):
        """The steps at which the level is set: ``[t_0, t_0 + Δt, ..., t_0 + n Δt]``."""
        return [self.start + i * self.interval for i in range(self.n + 1)]

    def level_at_pruning_step(self, t):
        """s_t by the formula, for a pruning step t; exactly ``final`` at the last one."""
        if t not in range(self.start, self.end + 1, self.interval):
            raise ValueError(f"GradualPrune: step {t!r} is not a pruning step; those are "
                             f"{self.start}, {self.start + self.interval}, ..., {self.end}")
        if t == self.end:
            return self.final
        progress = (t - self.start) / (self.n * self.interval)
        return self.final + (self.initial - self.final) * (1 - progress) ** 3

    def level(self, t):
        """The level the model holds after training step t: s at the last pruning step <= t.

        None before the first pruning step (the schedule has pruned nothing yet).
        """
        if t < self.start:
            return None
        last = min(self.end, self.start + (t - self.start) // self.interval * self.interval)
        return self.level_at_pruning_step(last)

    def attach(self, model):
        """A :class:`PruningCallback` for ``trainer(model, ..., callback=...)``.

        Checks now, on a copy, that the strategy fits ``model`` (so a mistake
        shows before training starts), and prunes ``model`` at once if the
        schedule starts at step 0.
        """
        check_model(model, 'GradualPrune.attach')
        prune(self.strategy(self.final), model)
        return PruningCallback(self, model)


class PruningCallback:
    """What ``GradualPrune.attach`` returns: ``trainer``'s callback, counting training steps.

    ``step`` is the number of training steps done; ``levels`` lists
    ``(step, level)`` for every pruning so far; ``finished`` says whether
    the last one (level s_f) has happened.  It may be called with trainer's
    arguments ``(epoch, batch, loss)`` or with none.
    """

    def __init__(self, schedule, model):
        self.schedule = schedule
        self.model = model
        self.step = 0
        self.levels = []
        self._prune_if_due()

    def __call__(self, epoch=None, batch=None, loss=None):
        self.step += 1
        self._prune_if_due()

    @property
    def finished(self):
        return self.step >= self.schedule.end

    def _prune_if_due(self):
        if self.step in self.schedule.pruning_steps():
            level = self.schedule.level_at_pruning_step(self.step)
            prune_in_place(self.schedule.strategy(level), self.model)
            self.levels.append((self.step, level))
