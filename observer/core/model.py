"""The on-demand accounting model: modes, hysteresis, checks and decisions. No I/O.

Per watched cgroup the model holds an upper estimate (the summed total_vm of its
processes) and, in slow mode, an exact count (their summed RSS). The kernel side keeps
per-cgroup counters and wakes Python only when a counter crosses a bound; the bounds are
computed here (leaf_bounds) so that no crossing of a limit can go unseen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from .config import Action, Limit

S64_MAX = 2**63 - 1

# Adaptive hysteresis: every two switches within this window double the hysteresis,
# up to MAX_ADAPTIVE_HYSTERESIS; a quiet window brings it back to the configured one.
ADAPT_WINDOW = 10.0
MAX_ADAPTIVE_HYSTERESIS = 0.5
# Switches remembered for the adaptive hysteresis: 0.05 * 2 ** (32 // 2) is far past the
# maximum already, so more would only cost memory (a cgroup flapping 50,000 times a second
# made the list huge and 2 ** (len // 2) overflow a float).
ADAPT_KEEP = 32


class Mode(str, enum.Enum):
    FAST = "fast"
    SLOW = "slow"


class Effect(str, enum.Enum):
    """What the caller must do or record after the model changed."""

    SWITCH_SLOW = "switch_slow"   # follow faults, and check exactly now
    SWITCH_FAST = "switch_fast"   # stop following faults
    WARN = "barrier"              # exact passed the barrier
    EXCEED = "exceeded"           # exact passed the limit
    ACT = "action"                # take the configured action now


@dataclass
class Account:
    """The state of one watched cgroup (covering it and its descendants)."""

    name: str
    cgroup_id: int
    limit: Limit | None
    mode: Mode = Mode.FAST
    estimate: int = 0
    exact: int | None = None        # the figure the last decision used (usage.Usage.figure)
    rss: int | None = None          # the RSS sum of that measurement
    pss: int | None = None          # its precise figure, where taken (the RSS sum was over)
    exact_ts: float | None = None   # when exact, rss and pss were measured
    # per cgroup id, the kernel's resident-growth counter (pages) read just before that
    # measurement: the growth bound counts from here, whenever it is written again
    rss_base: dict | None = None
    maxheld: int | None = None      # the highest exact usage measured (never an estimate)
    failcnt: int = 0
    switches: int = 0
    checks: int = 0
    actions: int = 0
    acted_at: float | None = None   # set by an action; no other until a check clears it
    gen: int = 0                    # set by the session, from one counter, at each switch to slow
    recent_switches: list = field(default_factory=list)   # times, for adaptive hysteresis

    @property
    def held(self) -> int | None:
        """Usage as beancounters define it: what was measured exactly at the last check
        (the figure decided on: PSS where the RSS sum was over, else the RSS sum), never
        the estimate. None where usage is not followed (fast mode) or not measured yet."""
        return self.exact

    def _measured(self, exact: int) -> None:
        self.exact = exact
        self.maxheld = exact if self.maxheld is None else max(self.maxheld, exact)

    def hysteresis(self, now: float = 0.0) -> float:
        lim = self.limit
        if lim is None or not lim.adaptive:
            return lim.hysteresis if lim else 0.0
        self.recent_switches = [t for t in self.recent_switches if now - t < ADAPT_WINDOW]
        widened = max(lim.hysteresis, 0.05) * 2 ** (len(self.recent_switches) // 2)
        return min(max(widened, lim.hysteresis), MAX_ADAPTIVE_HYSTERESIS)

    def low_water(self, now: float = 0.0) -> int:
        return self.limit.low_water_at(self.hysteresis(now))

    def on_estimate(self, estimate: int, now: float = 0.0) -> list[Effect]:
        """The summed total_vm changed. Switches mode across the trigger, with hysteresis."""
        self.estimate = estimate
        if self.limit is None:
            return []
        if self.mode is Mode.FAST and estimate > self.limit.trigger:
            self.forget_exact()  # stale from an earlier slow period; measured again now
            return self._switch(Mode.SLOW, now)
        if self.mode is Mode.SLOW and estimate < self.low_water(now):
            # not measured in fast mode: a record must not pair an old exact figure with
            # a fresh estimate
            self.forget_exact()
            # The estimate, an upper bound of usage, is under the limit: back under, as a
            # check finding it so would say. Without this, a process killed and started
            # again at once (a restart loop, a tenant's retry) went unkilled until
            # retry_after had passed since the last kill if it crossed the limit before
            # its first check: up to 1 s at full speed, hundreds of MiB.
            self.acted_at = None
            return self._switch(Mode.FAST, now)
        return []

    def forget_exact(self) -> None:
        self.exact = self.rss = self.pss = self.exact_ts = self.rss_base = None

    def _switch(self, mode: Mode, now: float | None) -> list[Effect]:
        """Counts a switch; with a time, it also counts towards the adaptive hysteresis."""
        self.mode = mode
        self.switches += 1
        if now is not None:
            self.recent_switches.append(now)
            if len(self.recent_switches) > ADAPT_KEEP:
                del self.recent_switches[:-ADAPT_KEEP]
        return [Effect.SWITCH_SLOW if mode is Mode.SLOW else Effect.SWITCH_FAST]

    def force_slow(self) -> list[Effect]:
        """Exact checks only, whatever the estimate: some process could not be accounted,
        so the estimate is no longer an upper bound. A switch like any other, but not a
        flap: the adaptive hysteresis does not count it."""
        if self.limit is None or self.mode is Mode.SLOW:
            return []
        return self._switch(Mode.SLOW, None)

    @classmethod
    def measured_once(cls, name: str, cgroup_id: int, limit: Limit | None, estimate: int,
                      exact: int) -> "Account":
        """A one-shot evaluation (status): both figures read at one moment, the mode the
        estimate gives, one check: usage above the barrier or the limit counts one failure
        (failcnt), as a check of watch would; no switch and no action is counted."""
        acc = cls(name, cgroup_id, limit)
        acc.on_estimate(estimate)
        acc.switches = 0
        acc._measured(exact)
        acc.checks = 1
        if limit is not None and exact > min(limit.limit, limit.trigger):
            acc.failcnt = 1
        return acc

    @property
    def over_limit(self) -> bool:
        """The last exact measurement is above the limit."""
        return (self.limit is not None and self.exact is not None
                and self.exact > self.limit.limit)

    def on_exact(self, exact: int, now: float, retry_after: float = 1.0, *,
                 rss: int | None = None, pss: int | None = None) -> list[Effect]:
        """An exact measurement: exact is the figure decisions use (the precise one where
        taken, else the RSS sum); rss and pss are recorded beside it. Counts failures and
        decides whether to act.

        After an action no other is taken until a check finds the cgroup back under its
        limit; a kill that left the cgroup above its limit is retried after retry_after.
        """
        self._measured(exact)
        self.exact_ts = now
        self.rss = exact if rss is None else rss
        self.pss = pss
        self.checks += 1
        lim = self.limit
        if lim is None:
            return []
        if exact <= lim.limit:
            self.acted_at = None
            if lim.barrier is not None and exact > lim.barrier:
                self.failcnt += 1
                return [Effect.WARN]
            return []
        self.failcnt += 1
        effects = [Effect.EXCEED]
        retry = (lim.action is Action.KILL and self.acted_at is not None
                 and now - self.acted_at >= retry_after)
        if self.acted_at is None or retry:
            self.acted_at = now
            self.actions += 1
            effects.append(Effect.ACT)
        return effects

    def near_by_pss(self) -> bool:
        """Whether a precise reading may find the cgroup over: none taken since it was last
        measured under by its RSS sum, or the last one near (within an eighth of the limit)
        or over. Such a cgroup is held frozen while PSS is read, where the action may freeze
        or kill; sharers well under by PSS are read without a hold."""
        lim = self.limit
        if lim is None:
            return False
        return self.pss is None or self.pss > lim.limit - lim.limit // 8

    def holds_at_crossing(self, growth: dict[int, int], page_size: int) -> bool:
        """Whether a crossing of the kernel's resident-growth bound holds the cgroup frozen
        at once, before /proc is read. growth: per cgroup id it covers, the growth counter
        (pages) read now. The headroom the last check left (rss_headroom) is counted in
        RSS from the counters read at that check (rss_base): the summed growth past it
        means the RSS sum is over the trigger (the barrier, else the limit), as far as the
        kernel's counters tell, and the check this event asks for would take the hold
        anyway where it reads the precise tier (near_by_pss). Taken here, the hold stops
        growth some hundreds of microseconds sooner. Nothing is decided on it: the figure
        decided on is measured as before, and the hold released if it is under. Only in
        slow mode after a check, where the action may freeze or kill; a single cgroup's
        share of the headroom crossed while the sum is not past it holds nothing."""
        lim = self.limit
        if (lim is None or lim.action is Action.REPORT or self.mode is not Mode.SLOW
                or self.exact is None or self.rss_base is None or not self.near_by_pss()):
            return False
        grown = sum(g - self.rss_base.get(leaf, g) for leaf, g in growth.items())
        return grown * page_size > self.rss_headroom()

    def rss_headroom(self) -> int:
        """Bytes of resident growth allowed before the next exact check.

        Measured from exact, the figure decisions use: where that is the precise figure
        (PSS) and the RSS sum is above the limit, the kernel's bound on resident growth is
        re-armed as limit - PSS above the current counter, i.e. the RSS baseline shifted by
        RSS - PSS. Sound, since no fault grows the summed PSS more than the RSS it adds;
        and a cgroup whose RSS sum is past the limit while its PSS is not is not woken at
        every fault."""
        lim = self.limit
        if lim is None or self.exact is None:
            return S64_MAX
        if lim.barrier is not None and self.exact <= lim.barrier:
            return lim.barrier - self.exact
        if self.exact <= lim.limit:
            return lim.limit - self.exact
        # Already over and acted on: check again after a step, not on every fault.
        return max(lim.limit // 8, 1)


@dataclass(frozen=True)
class LeafBounds:
    """What the kernel side compares a cgroup's counters with (in pages)."""

    vm_high: int = S64_MAX
    vm_low: int = -S64_MAX
    rss_high: int = S64_MAX
    slow: bool = False
    gen: int = 0


@dataclass(frozen=True)
class LeafCounters:
    """A cgroup's counters as read from the kernel (pages); seed is Python's own share."""

    vm: int = 0
    seed: int = 0
    rss_growth: int = 0

    @property
    def estimate(self) -> int:
        return self.vm + self.seed


def leaf_bounds(accounts: list[Account], leaves_of: dict[str, list[int]],
                counters: dict[int, LeafCounters], all_leaves: list[int],
                page_size: int, now: float = 0.0) -> dict[int, LeafBounds]:
    """Spread each account's headroom over the cgroups it covers.

    An account covering k cgroups with headroom H (pages) gives each H // k on top of its
    current counter. As long as no counter passes its bound, the sum cannot pass the
    account's level; when one does, the kernel wakes Python, which re-measures and
    spreads again. The same holds downwards for the return to fast mode, and for
    resident growth in slow mode. A cgroup covered by several accounts takes the
    tightest bound of each kind.
    """
    out = {leaf: LeafBounds() for leaf in all_leaves}
    for acc in accounts:
        leaves = leaves_of.get(acc.name, [])
        if acc.limit is None or not leaves:
            continue
        k = len(leaves)
        est_pages = sum(counters.get(l, LeafCounters()).estimate for l in leaves)
        if acc.mode is Mode.FAST:
            headroom = max(acc.limit.trigger // page_size - est_pages, 0)
            share = headroom // k
            for leaf in leaves:
                b = out.get(leaf, LeafBounds())
                out[leaf] = replace(b, vm_high=min(b.vm_high,
                                                   counters.get(leaf, LeafCounters()).vm + share))
        else:
            excess = max(est_pages - acc.low_water(now) // page_size, 0)
            share = excess // k
            rss_share = acc.rss_headroom() // page_size // k
            base = acc.rss_base or {}
            for leaf in leaves:
                c = counters.get(leaf, LeafCounters())
                b = out.get(leaf, LeafBounds())
                # from the counter at the measurement the headroom comes from, where known:
                # a bound written again later (another cgroup's event, a new leaf) must not
                # forgive the growth since that measurement
                grown_from = base.get(leaf, c.rss_growth)
                out[leaf] = replace(b, vm_low=max(b.vm_low, c.vm - share),
                                    rss_high=min(b.rss_high, grown_from + rss_share),
                                    slow=True, gen=max(b.gen, acc.gen))
    return out
