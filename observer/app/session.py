"""The live session: wires the probes, the model, /proc, cgroupfs and the actor together."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, replace

from ..kernel import wire
from ..core.config import Action, Count, Limit
from ..core.errors import BeanwatchError, Unreadable
from ..core.ratelimit import Buckets
from ..core.model import Account, Effect, LeafBounds, LeafCounters, Mode, leaf_bounds
from ..core.names import display_name, printable
from ..core.placement import place
from ..core.policy import OverNotice
from ..core.records import account_record, record
from ..core.sizes import PAGE_SIZE, to_bytes, to_pages
from ..core.usage import ProcUsage, Usage, needs_precise
from ..host.cgroupfs import Unlocatable
from .barrier import BarrierActions
from .enforcer import Enforcer
from .vmlimits import VmLimits


@dataclass(frozen=True)
class Watch:
    """One cgroup to watch, as resolved and checked by the CLI."""

    name: str
    cgroup_id: int
    limit: object  # config.Limit or None


def measure(cg, procfs, name: str) -> tuple[int, dict[int, int]]:
    """From /proc, the summed address space (bytes) of a cgroup's processes (its descendants'
    included), and each one's RSS."""
    vm, rss_by_pid = 0, {}
    for pid in cg.subtree_procs(name):
        statm = procfs.statm(pid)
        if statm:
            vm += statm[0]
            rss_by_pid[pid] = statm[1]
    return vm, rss_by_pid


def measure_usage(cg, procfs, name: str, limit: Limit | None, now: float,
                  before_precise=None) -> Usage:
    """The tiers below the estimate, from /proc: each process's RSS (statm; plus VmSwap when
    swap counts), and, only when their sum is over the limit's trigger, each one's PSS
    (smaps_rollup; plus SwapPss). A process gone between the two reads counts 0."""
    swap = limit is not None and limit.count is Count.RSS_SWAP
    procs = []
    for cgroup, pids in cg.procs_in_subtree(name).items():
        for pid in pids:
            statm = procfs.statm(pid)
            if statm is None:
                continue
            rss = statm[1] + ((procfs.vm_swap(pid) or 0) if swap else 0)
            procs.append(ProcUsage(pid, cgroup, rss))
    count = limit.count if limit is not None else Count.RSS
    if not needs_precise(sum(p.rss for p in procs), limit):
        return Usage(tuple(procs), now, count)
    if before_precise is not None:
        before_precise()
    precise, unreadable = [], []
    for p in procs:
        try:
            r = procfs.smaps_rollup(p.pid)
        except Unreadable:
            precise.append(replace(p, pss=p.rss))   # its RSS: >= its PSS
            unreadable.append(p.pid)
            continue
        if r is None:
            precise.append(replace(p, rss=0, pss=0))   # gone since statm
            continue
        # both from one read, so that the tiers stay ordered (PSS <= RSS) per process
        precise.append(replace(p, rss=r.rss + (r.swap if swap else 0),
                               pss=r.pss + (r.swap_pss if swap else 0)))
    return Usage(tuple(precise), now, count, precise=True, unreadable=tuple(unreadable))


# Detaching the page-fault programs blocks for ~0.1 s (the kernel waits for an RCU grace
# period when the last user of a tracepoint goes): keep them this long after the last cgroup
# left slow mode, so a cgroup flapping across its limit does not stall the loop each time.
FAULT_PROBE_GRACE = 10.0

# Events handled per second per cgroup (the source), and the burst allowed: past that, one
# tenant's events (a process moved between two of its cgroups in a loop) are counted and
# the cgroup is resynchronised at the next tick instead, so others are still served.
EVENT_RATE = 200.0
EVENT_BURST = 100.0
# The records a flapping cgroup makes by the hundred a second (a process moved in and out of
# it in a loop, or mapping and unmapping across its limit): per cgroup and kind, at most
# RECORD_RATE a second after a burst of RECORD_BURST. The ones over it are counted, and the
# next one sent says how many were left out (`suppressed`). Decisions are not affected:
# only the telling is. Actions, barrier and exceeded records are limited by policy already.
RECORD_RATE = {"mode": 2.0, "check": 5.0}
RECORD_BURST = 10.0

# oom_kill records per second per cgroup, and the burst: past that, kills are counted (the
# metric) and the next record says how many went unrecorded.
OOM_RECORD_RATE = 2.0
OOM_RECORD_BURST = 20.0
OOM_WAITING_MAX = 1024   # kills in not yet walked cgroups kept until the next walk

# The tree (and memory.max, when limits come from it) is walked again at least this often,
# and on news of an unknown cgroup no sooner than TREE_GAP_FACTOR times the last walk's
# duration after it: a tenant making cgroups in a loop cannot keep the loop walking.
TREE_EVERY = 2.0
TREE_GAP_FACTOR = 10.0
# ... and never sooner than TREE_GAP_MIN: a small tree walks in well under a millisecond, and
# a tenant churning cgroups faster than LOCATE_RATE made such walks run hundreds of times a
# second (a clean CI host: 1,360 walks in 6 s, 93% of a core)
TREE_GAP_MIN = 0.1
# A cgroup first seen in an event between walks is placed at once from its id alone
# (CgroupFS.locate: one open by handle, one readlink, one open per level; ~10 us, ~3 us for
# one removed already, as most of a churning tenant's are by then): covered by
# its watched ancestors' accounts from its first event, not from the next walk. At most
# LOCATE_RATE a second after a burst of LOCATE_BURST: past that (a tenant making cgroups by
# the thousand a second) they wait for the walk, which its own gap above still rate-limits.
LOCATE_RATE = 2000.0
# The loop's walks of the tree (periodic, or asked for by events) run in slices of at most
# WALK_SLICE, each of at least WALK_SLICE_MIN cgroups, with a round of the loop between two:
# a walk costs 16-57 us a cgroup here, so a tenant's 20,000 cgroups held the loop 300-400 ms,
# while another cgroup's process went from its mapping to its limit unseen (Session.walk_slice)
WALK_SLICE = 0.001
WALK_SLICE_MIN = 64
# A reconcile reads the counters of the cgroups covered one by one (not the whole map) while
# there are at most this many, or twice the map's entries at its last full read
COUNTERS_BY_KEY_MIN = 64
# While events keep coming, a round of the loop starts at most this often (see Session.pace):
# at most this much later is an event handled that comes while the loop is busy
ROUND_MIN = 0.001
LOCATE_BURST = 500.0


def memory_max_template(hysteresis: float, adaptive: bool) -> Limit:
    """What a limit read from memory.max becomes: report only (its size filled in)."""
    return Limit(1, None, Action.REPORT, hysteresis, adaptive)


class Session:
    """Keeps the model in step with the kernel counters and acts on decisions.

    Nothing here runs per page fault or per mmap: the kernel side wakes the session only
    when a cgroup crosses a bound the session programmed (see model.leaf_bounds).
    """

    def __init__(self, watches, cg, procfs, probes, actor, sink, *, interval=1.0,
                 keep_frozen=False, clock=time.time, taskstats=None, ledger=None, hooks=None,
                 memory_max: Limit | None = None, tree_every: float = TREE_EVERY,
                 tree_gap: float | None = None, event_rate: float = EVENT_RATE,
                 event_burst: float = EVENT_BURST, vm_limits=(), throttle_ledger=None):
        self.cg, self.procfs, self.probes, self.actor = cg, procfs, probes, actor
        self.sink = sink
        self.interval = interval
        self.keep_frozen = keep_frozen
        self.clock = clock
        self.taskstats = taskstats
        self.ledger = ledger            # state.FrozenLedger, or None
        self.enforcer = Enforcer(actor, sink, clock, hooks=hooks, taskstats=taskstats,
                                 ledger=ledger, keep_frozen=keep_frozen, measure=self.measure)
        self.barrier = BarrierActions(actor, sink, clock, enforcer=self.enforcer,
                                      ledger=throttle_ledger)
        self.accounts = [Account(w.name, w.cgroup_id, w.limit) for w in watches]
        self.seed: dict[int, int] = defaultdict(int)   # cgroup id -> pages found in /proc
        self.tree: dict[int, str] = {}                  # cgroup id -> name
        self.leaves_of: dict[str, list[int]] = {}       # account name -> cgroup ids covered
        self.written: dict[int, LeafBounds] = {}        # bounds last written per cgroup
        self.pending: list[wire.Event] = []
        self.dirty = False
        self.exact_due: set[str] = set()
        self.rearm: set[int] = set()
        self.gen = 0
        self.lost_seen = [0] * wire.STAT_MAX
        self.last_stats = [0] * wire.STAT_MAX   # as last read, for metrics
        self.blind = False   # some process could not be accounted: exact checks only
        self.last_slow_at = float("-inf")
        self.event_errors = 0
        self.loop_errors = 0
        self.skipped: dict[str, str] = {}   # cgroups the last walk could not read
        self.cgroups_skipped = 0             # how many were ever skipped
        # limits from memory.max, followed live (no --limit): the template, else None
        self.memory_max = memory_max
        self.covered_by: dict[int, list[Account]] = {}   # cgroup id -> accounts covering it
        self.missing: set[str] = set()       # watched names with no cgroup (yet)
        self.tree_every = tree_every
        self.tree_gap = tree_gap             # None: TREE_GAP_FACTOR x the last walk's time
        self.tree_wanted = False
        self.walked_at = float("-inf")       # time.monotonic() of the last walk
        self.walk_took = 0.0
        self.by_name: dict[str, Account] = {}
        # ids seen in events and not in the tree: placed at once (locate), within a budget
        self.unknown: set[int] = set()
        self.fresh: set[int] = set()         # placed under a slow account: bounds first
        self.locate_budget = Buckets(LOCATE_RATE, LOCATE_BURST)
        self.located = 0                     # cgroups placed from their id between walks
        self.dropped = 0                     # found removed between walks (drop_gone)
        self.locate_deferred = 0             # left to the walk (over budget, or unlocatable)
        self.walks = 0
        # per-source rate limit of events; over it: counted, resynchronised at the tick
        self.buckets = Buckets(event_rate, event_burst)
        self.record_buckets = {kind: Buckets(rate, RECORD_BURST)
                               for kind, rate in RECORD_RATE.items()}
        self.left_out: dict[str, dict[int, int]] = {kind: {} for kind in RECORD_RATE}
        self.records_suppressed = 0
        self.resync: set[int] = set()
        self.events_seen = 0
        self.map_entries = 0                 # in the leaves map at its last full read
        self.busy = False                    # the last round's events changed nothing (pace)
        self.round_at = float("-inf")        # time.monotonic() the last round started
        self.events_throttled = 0
        # kernel maps full: reported once, then exact checks every interval for the limits
        self.map_full = 0                    # failures counted (kernel side and our writes)
        self.map_full_reported = False
        self.unwritten: set[int] = set()     # bounds that could not be written (map full)
        self.notices: dict[str, OverNotice] = {}   # per account: above barrier/limit told when
        # kernel OOM kills in watched cgroups: per account, and records rate-limited per cgroup
        self.oom_kills: dict[str, int] = defaultdict(int)
        self.oom_buckets = Buckets(OOM_RECORD_RATE, OOM_RECORD_BURST)
        self.oom_unrecorded: dict[int, int] = defaultdict(int)
        self.oom_waiting: list = []          # kills in cgroups made since the last walk
        # --vm-limit: (name, VmLimit) pairs; refused in the kernel, counted here
        self.vm = VmLimits(vm_limits, probes, sink, clock)
        # called with (account, usage.Usage) after each exact check (`trace`'s rss records)
        self.on_measured = None
        self.unreadable_told = False   # tell_unreadable: once per session
        # accounts held frozen at a crossing of their growth bound, for this round's check
        self.early_holds: dict[str, Account] = {}
        # a walk in progress (walk_slice): the cgroup iterator, what it found so far, the
        # time its slices took, and the cgroups placed from events meanwhile
        self.walker = None
        self.walk_found: dict[int, str] = {}
        self.walk_cover: dict[int, list[str]] = {}   # id -> names of the accounts covering it
        self.walk_names: frozenset = frozenset()     # the accounts' names when it began
        self.walk_work = 0.0
        self.placed_in_walk: set[int] = set()

    # -- start-up -----------------------------------------------------------------------
    def start(self) -> None:
        """Attach first, then seed from /proc: a process changing its address space in
        between is then counted by the kernel side, and the seed for it is skipped."""
        self.thaw_orphans()
        self.barrier.restore_orphans()
        self.probes.start()
        extra = {"not_refused": self.probes.refusal_gaps()} if self.vm else {}
        self.sink(record("start", self.clock(), None,
                         vm_hook=getattr(self.probes, "vm_hook", None),
                         slow_source=getattr(self.probes, "slow_source", None),
                         not_covered=list(getattr(self.probes, "not_covered", list)()),
                         # features whose load the kernel refused: the slower path runs instead
                         refused_features=dict(getattr(self.probes, "dropped", {})), **extra))
        self.refresh_tree()
        self.seed_from_proc()
        if self.vm:
            self.vm.sync(self.tree, self.seed, force=True)   # the seed is in the totals now
        self.reconcile(force_all=True)

    def seed_from_proc(self) -> None:
        """Each process found in a cgroup's cgroup.procs (read through directory fds: no
        path is too long) is seeded with its address space from /proc."""
        seeded = []
        for cid, pids in self.cg.procs_by_cgroup().items():
            if cid not in self.tree:
                continue
            for pid in pids:
                statm = self.procfs.statm(pid)
                if not statm or not statm[0]:
                    continue
                pages = to_pages(statm[0])
                if self.probes.seed_process(pid, pages, cid):
                    self.seed[cid] += pages
                    seeded.append((pid, pages, cid))
        # A process that exited between our read and the insert would stay counted.
        for pid, pages, cid in seeded:
            if self.procfs.statm(pid) is None and self.probes.forget_process(pid, pages, cid):
                self.seed[cid] -= pages

    def refresh_tree(self) -> None:
        """Walks the whole tree at once (start-up, and an account whose cgroup was made
        again: its check needs the new tree now); the loop's other walks go in slices
        (begin_walk). A walk in progress is dropped: this one is newer."""
        self.drop_walk()
        started = time.monotonic()
        tree = self.cg.walk()
        self.install_tree(tree, time.monotonic() - started)

    def begin_walk(self) -> None:
        self.drop_walk()
        self.walker = self.cg.walk_steps()
        self.walk_found, self.walk_cover, self.walk_work = {}, {}, 0.0
        self.walk_names, self.placed_in_walk = frozenset(self.by_name), set()
        self.walk_slice()

    def walk_slice(self) -> None:
        """The walk in progress goes on for at most WALK_SLICE (at least WALK_SLICE_MIN
        cgroups), then the loop polls, handles events, checks and acts as in any round,
        with the tree as it was, and comes back (run() does not wait meanwhile). The last
        slice installs the new tree, with the cgroups placed from their events during the
        walk that it did not find (made after it had passed their parent)."""
        started = time.monotonic()
        deadline = started + WALK_SLICE
        found, cover, n = self.walk_found, self.walk_cover, 0
        covering = self.covering_names

        def take(cid: int, name: str) -> None:
            found[cid] = name
            # which accounts cover it, found here rather than all at once at the end
            names = covering(name)
            if names:
                cover[cid] = names
        try:
            for cid, name in self.walker:
                take(cid, name)
                n += 1
                if n >= WALK_SLICE_MIN and not n % 16 and (time.monotonic() >= deadline
                                                           or self.news_for_covered()):
                    self.walk_work += time.monotonic() - started
                    return
        except BaseException:
            self.drop_walk()   # never a partial tree: the one in use stays
            raise
        self.walker = None
        for cid in self.placed_in_walk:
            if cid not in found and cid in self.tree:
                take(cid, self.tree[cid])
        self.install_tree(found, self.walk_work + time.monotonic() - started, cover)

    def covering_names(self, name: str) -> list[str]:
        """The names of the accounts covering the cgroup at name (itself, then up)."""
        by_name = self.by_name
        return [a for a in self.cg.ancestors_or_self(name) if a in by_name]

    def news_for_covered(self) -> bool:
        """Polls the ring buffer (an epoll_wait: a few us) from inside a slice: True if an
        event came about a cgroup an account covers (a crossing, a move) or a kernel OOM
        kill, which ends the slice so that the round handles it now. Events of other
        cgroups (a churning tenant's) do not."""
        seen = len(self.pending)
        self.probes.poll(0)
        covered, written, oom = self.covered_by, self.written, wire.EV_OOM_KILL
        return any(ev[2] in covered or ev[2] in written or ev[0] == oom
                   for ev in self.pending[seen:])

    def drop_walk(self) -> None:
        if self.walker is not None:
            self.walker.close()   # its open directories closed
            self.walker = None

    def install_tree(self, tree: dict[int, str], took: float, cover=None) -> None:
        """The tree a walk found: which cgroup ids each account covers (the cgroup itself
        and its descendants, O(cgroups x depth); cover: id -> the covering accounts' names,
        as a sliced walk found them, used while the accounts' names are the same), and the
        reverse index, so an event costs O(1). Accounts follow their paths (a cgroup removed
        and made again is re-resolved), limits from memory.max are read again, and state of
        cgroups gone is dropped."""
        self.walks += 1
        self.tree = tree
        self.walk_took = took
        self.walked_at = time.monotonic()
        self.tree_wanted = False
        self.note_skipped(getattr(self.cg, "skipped", {}))
        if self.memory_max is not None:
            self.follow_memory_max()
        self.resolve_accounts()
        by_name = {acc.name: acc for acc in self.accounts}
        self.by_name = by_name
        before = {cid: [a.name for a in accs] for cid, accs in self.covered_by.items()}
        self.leaves_of = {name: [] for name in by_name}
        self.covered_by = {}
        if cover is None or frozenset(by_name) != self.walk_names:
            covering = self.covering_names
            cover = {cid: names for cid, name in tree.items() if (names := covering(name))}
        for cid, names in cover.items():
            self.covered_by[cid] = [by_name[a] for a in names]
            for a in names:
                self.leaves_of[a].append(cid)
        # Cgroups covered now and not before (made since the last walk and not placed from
        # their events): counted in the estimates and bounded from the next round on, not
        # from the next tick.
        for cid, accs in self.covered_by.items():
            if before.get(cid) != [a.name for a in accs]:
                self.took_in(cid, accs)
        # seen in events during a sliced walk and not found by it: placed from their ids
        self.unknown -= tree.keys()
        if self.unknown:
            self.place_unknown()
        self.prune()
        if self.vm:
            self.vm.sync(self.tree, self.seed)
        waiting, self.oom_waiting = self.oom_waiting, []
        for ev in waiting:
            self.on_oom_kill(ev, walked=True)

    def resolve_accounts(self) -> None:
        """Each account to the cgroup now at its path. A new id (removed and made again,
        as a service restart does) is taken with a record; the guard still compares the
        id before every action, so nothing is done to a cgroup other than the one measured.
        A path with no cgroup is waited for (one record), not fatal."""
        ids = {name: cid for cid, name in self.tree.items()}
        now = round(self.clock(), 6)
        for acc in self.accounts:
            cid = ids.get(acc.name)
            if cid is None:
                if acc.name not in self.missing:
                    self.missing.add(acc.name)
                    self.sink(account_record("waiting", acc, now,
                                             detail="no such cgroup (yet): waiting for it"))
                continue
            if acc.cgroup_id == cid:
                self.missing.discard(acc.name)
                continue
            self.follow(acc, cid, now)

    def follow(self, acc: Account, cid: int, now: float) -> None:
        """acc's path now leads to the cgroup cid: taken, with a record."""
        previous = acc.cgroup_id
        self.barrier.forget(acc.name)
        acc.cgroup_id = cid
        acc.acted_at = None
        acc.exact = None
        if acc.name in self.missing:
            self.missing.discard(acc.name)
            self.sink(account_record("appeared", acc, now, detail="cgroup created"))
        else:
            self.sink(account_record("recreated", acc, now, previous_id=previous,
                                     detail=f"removed and made again (id {previous} -> {cid})"))

    def follow_memory_max(self) -> None:
        """Limits from memory.max (no --limit): every cgroup of the tree, its limit read
        again at each walk. New cgroups are taken, changed values followed, gone ones dropped."""
        old = {acc.name: acc for acc in self.accounts}
        accounts = []
        for cid, name in sorted(self.tree.items(), key=lambda kv: kv[1]):
            try:
                value = self.cg.memory_limit(name)
            except BeanwatchError:
                value = None
            limit = replace(self.memory_max, limit=value) if value else None
            acc = old.get(name)
            if acc is None:
                acc = Account(name, cid, limit)
            elif acc.limit != limit:
                before = acc.limit
                acc.limit = limit
                if limit is None:
                    acc.mode = Mode.FAST
                self.sink(account_record("limit", acc, round(self.clock(), 6),
                                         previous_limit_bytes=before.limit if before else None,
                                         detail="memory.max changed"))
            accounts.append(acc)
        self.accounts = accounts

    def prune(self) -> None:
        """Drops what is kept per cgroup id for ids no longer in the tree."""
        tree = self.tree
        for d in (self.seed, self.written):
            for cid in [c for c in d if c not in tree]:
                del d[cid]
        self.rearm &= tree.keys()
        self.unwritten &= tree.keys()
        self.buckets.keep_only(tree)
        for kind, buckets in self.record_buckets.items():
            buckets.keep_only(tree)
            self.left_out[kind] = {c: n for c, n in self.left_out[kind].items() if c in tree}

    def tree_due_in(self) -> float:
        """Seconds until a walk asked for by an event may run."""
        gap = (self.tree_gap if self.tree_gap is not None
               else max(TREE_GAP_MIN, TREE_GAP_FACTOR * self.walk_took))
        return max(0.0, self.walked_at + gap - time.monotonic())

    def took_in(self, cid: int, accounts) -> None:
        """cid is now covered by accounts (placed, or found by a walk): its bounds are
        written at the next round, from which on its counter is in their estimates; under a
        slow account its faults are followed from before a measurement taken at once (what
        it made resident before is measured, what comes after is followed)."""
        self.rearm.add(cid)
        self.dirty = True
        for acc in accounts:
            if acc.mode is Mode.SLOW:
                self.fresh.add(cid)
                self.exact_due.add(acc.name)

    def place_unknown(self) -> None:
        """The cgroups seen in events since the last walk and not in the tree, each placed
        from its id alone (CgroupFS.locate, O(depth)) within the budget; the others, and
        any that cannot be placed so, wait for the walk (rate-limited by its gap)."""
        ids, self.unknown = self.unknown, set()
        now = time.monotonic()
        for cid in ids:
            if cid in self.tree:
                continue
            if not self.locate_budget.take(0, now):
                self.locate_deferred += 1
                self.tree_wanted = True
                continue
            try:
                chain = self.cg.locate(cid)
            except (Unlocatable, OSError):
                self.locate_deferred += 1
                self.tree_wanted = True
                continue
            if chain is None:
                continue   # removed already: nothing to cover (its entries go at rmdir)
            self.place(cid, chain)

    def place(self, cid: int, chain) -> None:
        """cid, found at the end of chain ((name, id) from the root down), put in the tree
        and under every account covering it, as the next walk would. An account whose
        path now leads to another cgroup (one of chain's) follows it first. Only cid goes in
        the tree: an ancestor made since the walk is placed by its own events, if any."""
        placement = place(chain, self.by_name)
        now = round(self.clock(), 6)
        for acc, new_id in placement.followed:
            self.follow(acc, new_id, now)
            # what it covered was the removed cgroup's subtree: gone with it
            self.leaves_of[acc.name] = []
        name = chain[-1][0]
        self.tree[cid] = name
        if self.walker is not None:
            self.placed_in_walk.add(cid)
        self.located += 1
        if not placement.covering:
            return
        self.covered_by[cid] = list(placement.covering)
        for acc in placement.covering:
            leaves = self.leaves_of.setdefault(acc.name, [])
            if cid not in leaves:
                leaves.append(cid)
        self.took_in(cid, placement.covering)
        if self.vm and any(w.name == n for w in self.vm.watches for n, _ in chain):
            self.vm.sync(self.tree, self.seed)   # mapped to its vm limit now too

    def maybe_refresh(self, periodic: bool = False) -> None:
        if self.walker is not None:
            self.walk_slice()
        elif self.tree_wanted and self.tree_due_in() <= 0.0:
            self.begin_walk()
        elif periodic and time.monotonic() - self.walked_at >= self.tree_every:
            self.begin_walk()

    def note_skipped(self, skipped: dict[str, str]) -> None:
        """Cgroups the walk could not read are not accounted: say so once per cgroup (a
        record), and count them. Never fatal."""
        for name, reason in skipped.items():
            if name not in self.skipped:
                self.cgroups_skipped += 1
                self.sink(record("skipped", self.clock(), name, detail=reason,
                                 skipped=self.cgroups_skipped))
        self.skipped = dict(skipped)

    # -- events -------------------------------------------------------------------------
    def on_event(self, ev: wire.Event) -> None:
        """Called from the ring-buffer callback: only queue, work happens in reconcile."""
        self.pending.append(ev)

    def handle_pending(self) -> None:
        """The round's events, grouped by cgroup: each cgroup is looked at once however
        many events it sent (a churning tenant's new cgroup sends two or three in a few
        microseconds, its home one per cgroup churned). Events of one cgroup past its rate
        are counted and left to the resynchronisation at the next tick (counters live in
        the kernel maps: nothing is lost from the accounting).

        Only an event about a cgroup some account covers (or one whose bounds were written)
        makes the round reconcile. One of a cgroup not in the tree asks for it to be placed;
        placed and covered, it is taken in (took_in: reconciled this round); removed already,
        as most of a churning tenant's are by then, it costs nothing more. Another cgroup's
        (a tenant's own home, outside every watched one) changes nothing to reconcile."""
        events, self.pending = self.pending, []
        if not events:
            return
        self.events_seen += len(events)
        oom = wire.EV_OOM_KILL
        by_cid: dict[int, list] = {}
        get = by_cid.get
        for ev in events:
            if ev[0] == oom:
                self.on_oom_kill(ev)
                continue
            group = get(ev[2])
            if group is None:
                by_cid[ev[2]] = [ev]
            else:
                group.append(ev)
        take, tree, covered_by, written = self.buckets.take_n, self.tree, self.covered_by, \
            self.written
        moved, rss_high = wire.EV_MOVED, wire.EV_RSS_HIGH
        for cid, group in by_cid.items():
            n = len(group)
            got = take(cid, group[-1].ts_ns / 1e9, n)
            if got < n:
                self.events_throttled += n - got
                self.resync.add(cid)
                if not got:
                    continue
                group = group[:got]
            if cid not in tree:
                self.unknown.add(cid)
            elif cid in covered_by or cid in written:
                self.dirty = True
                self.rearm.add(cid)
                kinds = {ev.kind for ev in group}
                if moved in kinds or rss_high in kinds:
                    for acc in covered_by.get(cid, ()):
                        if acc.mode is Mode.SLOW:
                            self.exact_due.add(acc.name)
                            if rss_high in kinds:
                                self.hold_at_crossing(acc)
            for ev in group:
                if ev.kind == moved and (ev.aux in covered_by or ev.aux in written):
                    # a process left a covered cgroup: its counter dropped
                    self.dirty = True
                    self.rearm.add(ev.aux)
        if self.unknown:
            self.place_unknown()
        if self.walker is None:   # a walk in progress goes on once a round, in run()
            self.maybe_refresh()

    def hold_at_crossing(self, acc: Account) -> None:
        """A resident-growth bound of acc's was crossed: where its summed growth is past the
        headroom of its last check and a precise reading would be held anyway
        (Account.holds_at_crossing), the cgroup is frozen now, before anything else of the
        round (the counters' walk, the tree, cgroup.procs, statm): a full-speed toucher
        stops at the crossing plus the wake-up, not plus the round. The check that follows
        in the same round takes the hold over (check_exact), or it is released at the end
        of the round (release_early_holds)."""
        if acc.name in self.early_holds or acc.rss_base is None:
            return
        leaves = self.leaves_of.get(acc.name, ())
        growth = {cid: c.rss_growth for cid, c in self.read_counters(leaves).items()}
        if acc.holds_at_crossing(growth, PAGE_SIZE) and self.enforcer.hold_while_measuring(acc):
            self.early_holds[acc.name] = acc

    def release_early_holds(self) -> None:
        """Holds taken at an event whose check did not run (the cgroup left slow mode, or
        was removed and made again, before it): released, nothing is left frozen."""
        holds, self.early_holds = self.early_holds, {}
        for acc in holds.values():
            self.enforcer.release_measuring_hold(acc)

    def on_oom_kill(self, ev: wire.Event, walked: bool = False) -> None:
        """The kernel's OOM killer chose a victim. In a watched cgroup (covered by some
        account): counted for every account covering it, and recorded (rate-limited per
        cgroup). The cgroup comes from the victim task (or, on kernels that pass only its
        pid, from where its pages are counted, else from /proc)."""
        cid, pid = ev.cgid, ev.value
        if not cid:
            path = self._proc_cgroup(pid)
            cid = next((c for c, n in self.tree.items() if n == path), 0) if path else 0
        if cid and cid not in self.tree and not walked:
            self.unknown.add(cid)
            self.place_unknown()
        if cid and cid not in self.tree and not walked:
            # a cgroup made since the last walk and not placed from its id: judged after the
            # next walk (as soon as its rate limit allows), never dropped for being new
            if len(self.oom_waiting) < OOM_WAITING_MAX:
                self.oom_waiting.append(ev)
            self.tree_wanted = True
            return
        accounts = self.covered_by.get(cid, [])
        if not accounts:
            return
        for acc in accounts:
            self.oom_kills[acc.name] += 1
        if not self.oom_buckets.take(cid, ev.ts_ns / 1e9):
            self.oom_unrecorded[cid] += 1
            return
        comm = getattr(ev, "comm", b"") or self._proc_comm(pid)
        name = self.tree.get(cid, "")
        self.sink(record("oom_kill", self.clock(), name, name=display_name(name), cgroup_id=cid,
                         pid=pid, tgid=ev.tgid,
                         comm=printable(comm.decode("utf-8", "replace")) if comm else None,
                         watched=[a.name for a in accounts],
                         oom_kills=self.oom_kills[accounts[0].name],
                         unrecorded=self.oom_unrecorded.pop(cid, 0)))

    def _proc_cgroup(self, pid: int) -> str | None:
        try:
            return self.procfs.cgroup2_path(pid)
        except Exception:  # noqa: BLE001 - gone already: unknown
            return None

    def _proc_comm(self, pid: int) -> bytes:
        try:
            st = self.procfs.stat(pid)   # a zombie keeps its comm until it is reaped
        except Exception:  # noqa: BLE001 - gone already: unknown
            return b""
        return st.comm.encode() if st is not None else b""

    def resynchronise(self) -> None:
        """At a tick: the cgroups whose events were over their rate are re-armed and the
        slow accounts covering them measured, as if each event had been handled."""
        if not self.resync:
            return
        for cid in self.resync:
            self.rearm.add(cid)
            if cid not in self.tree:
                self.unknown.add(cid)
            for acc in self.covered_by.get(cid, ()):
                if acc.mode is Mode.SLOW:
                    self.exact_due.add(acc.name)
        self.resync = set()
        self.dirty = True
        if self.unknown:
            self.place_unknown()

    def covering(self, cgid: int) -> list[Account]:
        return self.covered_by.get(cgid, [])

    # -- the model in step --------------------------------------------------------------
    def read_counters(self, only=None) -> dict[int, LeafCounters]:
        """Every cgroup's counters; with only (cgroup ids), those alone, where the probes
        can look them up one by one."""
        if only is not None and hasattr(self.probes, "counters_of"):
            raw = self.probes.counters_of(only)
            ids = set(only)
        else:
            raw = self.probes.counters()
            self.map_entries = len(raw)
            ids = set(raw) | set(self.seed)
        out = {}
        for cid in ids:
            vm, growth = raw.get(cid, (0, 0))
            out[cid] = LeafCounters(vm=vm, seed=self.seed.get(cid, 0), rss_growth=growth)
        return out

    def reconcile_ids(self):
        """The cgroups a reconcile needs the counters of: the ones some account covers (the
        estimates and bounds are made of theirs alone). Looked up one by one (a syscall each)
        while there are at most twice as many as the map had entries at its last full read
        (a walk of the map costs two an entry: a churning tenant's host has hundreds of
        cgroups in it, read every round, 64% of the loop's CPU); else None: the whole map."""
        ids = self.covered_by.keys()
        if len(ids) <= max(COUNTERS_BY_KEY_MIN, 2 * self.map_entries):
            return ids
        return None

    def estimate(self, acc: Account, counters: dict[int, LeafCounters]) -> int:
        pages = sum(counters[c].estimate for c in self.leaves_of.get(acc.name, ()) if c in counters)
        return to_bytes(max(pages, 0))

    def reconcile(self, force_all: bool = False, periodic: bool = False) -> None:
        self.check_losses()
        if periodic and self.vm:
            self.vm.collect(self.accounts)
        counters = self.read_counters(self.reconcile_ids())
        now = self.clock()
        newly_slow = []
        for acc in self.accounts:
            before = acc.mode
            effects = acc.on_estimate(self.estimate(acc, counters), now)
            if self.blind and acc.mode is Mode.FAST:
                effects = acc.force_slow() or effects
            if Effect.SWITCH_SLOW in effects:
                self.gen += 1
                acc.gen = self.gen
                newly_slow.append(acc)
                self.exact_due.add(acc.name)
            if effects:
                self.tell(acc, account_record("mode", acc, now, previous=before.value))
            if Effect.SWITCH_FAST in effects:
                self.barrier.on_fast(acc)
            if acc.mode is Mode.SLOW and (force_all or periodic):
                self.exact_due.add(acc.name)
        # cgroups just taken in under a slow account: followed before it is measured too
        early = {c for c in self.fresh if any(a.mode is Mode.SLOW for a in self.covering(c))}
        self.fresh.clear()
        if newly_slow or early:
            # Start following faults before measuring, so growth after the /proc read is
            # counted (the kernel side takes each process's baseline at its next fault).
            early.update(c for a in newly_slow for c in self.leaves_of[a.name])
            self.write_bounds(counters, only=early)
            self.probes.enable_faults(True)
            counters = self.read_counters(self.reconcile_ids())
        try:
            for acc in self.accounts:
                if acc.name in self.exact_due and acc.mode is Mode.SLOW:
                    self.check_exact(acc, now, counters)
        finally:
            self.release_early_holds()
        self.exact_due.clear()
        self.write_bounds(counters)
        self.update_fault_probe(now)

    def update_fault_probe(self, now: float) -> None:
        if any(a.mode is Mode.SLOW for a in self.accounts):
            self.last_slow_at = now
            self.probes.enable_faults(True)
        elif now - self.last_slow_at >= FAULT_PROBE_GRACE:
            self.probes.enable_faults(False)

    def write_bounds(self, counters, only=None) -> None:
        bounds = leaf_bounds(self.accounts, self.leaves_of, counters,
                             [c for c in self.written], PAGE_SIZE, self.clock())
        rewritten, gone = [], []
        failed = 0
        for cid, b in bounds.items():
            if only is not None and cid not in only:
                continue
            if cid in self.unwritten:
                continue   # retried at the next tick, not on every round
            if self.written.get(cid) != b or cid in self.rearm:
                done = self.probes.set_bounds(cid, b)
                if done is False:
                    self.unwritten.add(cid)
                    failed += 1
                    continue
                if done == wire.BOUNDS_GONE:
                    gone.append(cid)
                    continue
                self.written[cid] = b
                rewritten.append(cid)
        if failed:
            self.note_map_full(failed, "bounds could not be written")
        if gone:
            self.drop_gone(gone)
        if only is None:
            self.rearm.clear()
        self.check_missed_crossings(rewritten)

    def drop_gone(self, cids) -> None:
        """Cgroups the kernel side knows were removed (a bounds write found their ids among
        the dead): out of the tree and of every account's cover at once, as the next walk
        would take them out. A churning tenant's placed cgroups then do not pile up in its
        account until the walk, each new one changing the others' shares (and so having
        all their bounds written again, every round)."""
        for cid in cids:
            self.tree.pop(cid, None)
            for acc in self.covered_by.pop(cid, ()):
                leaves = self.leaves_of.get(acc.name)
                if leaves is not None and cid in leaves:
                    leaves.remove(cid)
            self.written.pop(cid, None)
            self.seed.pop(cid, None)
            self.rearm.discard(cid)
            self.fresh.discard(cid)
        self.dropped += len(cids)

    def check_missed_crossings(self, cids) -> None:
        """A counter that crossed its bound while the kernel side was disarmed (between our
        reading the counters and rewriting the bounds) sent no event, and may never send one
        if nothing else changes (an mmap followed by touching only). Read the counters again
        after writing and go round once more if any is already past."""
        if not cids:
            return
        fresh = self.read_counters(cids)
        for cid in cids:
            b, c = self.written[cid], fresh.get(cid)
            if c is not None and (c.vm > b.vm_high or c.vm < b.vm_low
                                  or (b.slow and c.rss_growth > b.rss_high)):
                self.dirty = True
                self.rearm.add(cid)
                for acc in self.covering(cid):
                    if acc.mode is Mode.SLOW:
                        self.exact_due.add(acc.name)

    def measure(self, acc: Account, before_precise=None) -> Usage:
        """The cgroup's processes from /proc: RSS, and PSS where the RSS sum is over."""
        return measure_usage(self.cg, self.procfs, acc.name, acc.limit, self.clock(),
                             before_precise)

    def check_exact(self, acc: Account, now: float, counters=None) -> None:
        """Measures acc from /proc and decides. counters: the reconcile's, read before this
        measurement. Their resident-growth counters become acc.rss_base, where the kernel's
        growth bound counts from until the next measurement (growth after they were read
        counts against the headroom the measurement leaves). Where the precise tier is read,
        the account's counters are read again just before the walk and taken instead: the
        bound then starts from the figure decided on (exactly so while held frozen), not
        from a point before the cheap tier's reading."""
        try:
            found = self.cg.cgroup_id(acc.name)
        except OSError:
            found = None
        if found != acc.cgroup_id:
            # removed (and perhaps made again) since the last walk: resolve, then measure
            # the one now there; the guard compares ids again before any action.
            self.refresh_tree()
            if found is None or found != acc.cgroup_id:
                return
        # The first time the RSS sum says "over" in a slow period, or while the precise figure
        # was last found near the limit (within an eighth of it) or over, the cgroup is held
        # frozen while PSS is read, where the action may freeze or kill: a toucher cannot run
        # on during the walk. Sharers well under by PSS are read without a hold. Held at its
        # event already (hold_at_crossing): that hold is this check's, released the same way.
        hold = {"held": self.early_holds.pop(acc.name, None) is not None, "counters": None}
        leaves = self.leaves_of.get(acc.name, ())

        def before_precise():
            if not hold["held"] and acc.near_by_pss():
                hold["held"] = self.enforcer.hold_while_measuring(acc)
            # After the hold, before smaps_rollup: growth from here on counts against the
            # headroom PSS leaves (sound: PSS is read later, so it may only include more).
            # Frozen, it is exactly the growth counter at the figure decided on.
            hold["counters"] = self.read_counters(leaves)
        # the counters as they were before /proc was read (the reconcile's, or read now)
        before = counters if counters is not None else self.read_counters(leaves)
        usage = self.measure(acc, before_precise)
        # the growth counters the bound counts from: read before the tier decided on
        base = hold["counters"] if hold["counters"] is not None else counters
        # The estimate read after /proc: a process /proc lists (a child just forked) is
        # then counted in it too, so a record never shows exact above its estimate.
        acc.estimate = self.estimate(acc, self.read_counters(leaves))
        for _ in range(3):
            # a child in cgroup.procs before the fork tracepoint counted it: microseconds
            if acc.estimate >= usage.rss:
                break
            acc.estimate = self.estimate(acc, self.read_counters(leaves))
        if acc.estimate < usage.rss:
            # Shrunk meanwhile: a process /proc read just before its exec (a copy of its
            # parent's address space, resident pages included) was counted small after it.
            # The estimate read before /proc bounded that moment: the record shows the
            # larger of the two, an upper bound at some instant of the measurement.
            acc.estimate = max(acc.estimate, self.estimate(acc, before))
        effects = acc.on_exact(usage.figure, usage.ts, rss=usage.rss, pss=usage.pss)
        if self.on_measured is not None:
            self.on_measured(acc, usage)
        acc.rss_base = ({leaf: base[leaf].rss_growth for leaf in leaves if leaf in base}
                        if base is not None else None)
        held = hold["held"]
        extra = {"held_while_measured": True} if held else {}
        if usage.unreadable:
            extra["pss_unreadable_pids"] = list(usage.unreadable)
            self.tell_unreadable(acc, usage.unreadable, now)
        # frozen meanwhile: the records cost the workload nothing
        self.tell(acc, account_record("check", acc, now, **extra))
        # barrier/exceeded: recorded on the way there, then as a reminder (core/policy)
        level = next((e.value for e in effects if e in (Effect.WARN, Effect.EXCEED)), None)
        told = self.notices.setdefault(acc.name, OverNotice()).note(level, now)
        if told is not None:
            self.sink(account_record(level, acc, now, reminder=told[0], repeats=told[1]))
        if Effect.ACT in effects:
            self.enforcer.enforce(acc, usage, held=held)   # the attempt takes the hold
            held = False
        if held:
            # Under the limit: the kernel's bound is re-armed from this figure before the
            # thaw, so that growth past what is left wakes the loop at once: no moment
            # where the processes run on against a bound that has fired already.
            if counters is not None:
                self.write_bounds(counters, only=set(leaves))
            self.enforcer.release_measuring_hold(acc)
        self.barrier.on_check(acc, now)

    def tell_unreadable(self, acc: Account, pids, now: float) -> None:
        """Some processes' smaps_rollup could not be read (permission): their RSS counted
        instead of their PSS. Said once per session (an error record), then in each check
        record's pss_unreadable_pids: the figure is sound (only higher), but sharers among
        them may be acted on for memory they share."""
        if self.unreadable_told:
            return
        self.unreadable_told = True
        self.sink(record("error", now, acc.name, errors=self.loop_errors, detail=(
            f"cannot read /proc/PID/smaps_rollup of {len(pids)} process(es) (e.g. {pids[0]}):"
            " permission denied (beanwatch lacks CAP_SYS_PTRACE?); their RSS counts instead"
            " of their PSS")))

    def check_losses(self) -> None:
        stats = self.probes.stats()
        self.last_stats = stats
        lost = stats[wire.STAT_RINGBUF_FULL] - self.lost_seen[wire.STAT_RINGBUF_FULL]
        unaccounted = stats[wire.STAT_PROCS_FULL] - self.lost_seen[wire.STAT_PROCS_FULL]
        unaccounted += stats[wire.STAT_LEAVES_FULL] - self.lost_seen[wire.STAT_LEAVES_FULL]
        errors = self.probes.callback_errors - self.event_errors
        self.lost_seen = stats
        self.event_errors = self.probes.callback_errors
        if unaccounted:
            self.note_map_full(unaccounted, "a process or a cgroup could not be accounted")
        if lost:
            # a lost wake-up may have been a new cgroup's first (EV_NEW_LEAF): only a walk
            # finds that one now (as soon as its gap allows)
            self.tree_wanted = True
        if lost or errors:
            now = self.clock()
            for acc in self.accounts:
                self.sink(account_record("lost", acc, now, events_lost=lost,
                                         processes_unaccounted=unaccounted,
                                         callback_errors=errors))
                self.rearm.update(self.leaves_of.get(acc.name, ()))
                if acc.mode is Mode.SLOW:
                    self.exact_due.add(acc.name)

    def tell(self, acc: Account, rec: dict) -> None:
        """A mode or check record, within its rate per cgroup (RECORD_RATE)."""
        kind = rec["event"]
        if not self.record_buckets[kind].take(acc.cgroup_id, rec["ts"]):
            self.records_suppressed += 1
            left = self.left_out[kind]
            left[acc.cgroup_id] = left.get(acc.cgroup_id, 0) + 1
            return
        missed = self.left_out[kind].pop(acc.cgroup_id, 0)
        if missed:
            rec["suppressed"] = missed
        self.sink(rec)

    def note_map_full(self, count: int, why: str) -> None:
        """A kernel map is full. The estimate is no longer an upper bound: every limited
        cgroup goes to slow mode, measured exactly at every tick. Reported once (a record),
        counted always; nothing is retried in a loop (no spinning on failing writes)."""
        self.map_full += count
        self.blind = True
        if self.map_full_reported:
            return
        self.map_full_reported = True
        self.sink(record("map_full", self.clock(), None,
                         detail=f"{why}: kernel map full; every limited cgroup is now measured "
                                f"exactly every interval", map_full=self.map_full))

    def snapshot(self) -> None:
        now = self.clock()
        for acc in self.accounts:
            self.sink(account_record("snapshot", acc, now))

    # -- the loop -----------------------------------------------------------------------
    def run(self, duration: float | None, should_stop, on_tick=None, on_loop=None) -> None:
        """Until should_stop() or duration: poll, reconcile, snapshot every interval.
        on_loop runs every iteration (at most 0.2 s apart), on_tick after each snapshot."""
        start = self.clock()
        next_tick = start + self.interval
        self.snapshot()
        while not should_stop():
            now = self.clock()
            if duration is not None and now - start >= duration:
                break
            # a walk in progress goes on at the next round: polled, not waited for
            wait = 0.0 if self.dirty or self.walker is not None \
                else max(0.0, min(next_tick - now, 0.2))
            if self.tree_wanted:
                wait = min(wait, self.tree_due_in())
            try:
                wait = self.pace(wait)
                self.probes.poll(int(wait * 1000))
                had = bool(self.pending)
                self.handle_pending()
                # paced only while the events change nothing covered: one that does (a
                # crossing, a process moved into a watched cgroup) is never held back
                self.busy = had and not self.dirty
                self.enforcer.poll()   # hooks run beside the loop: resume what they decided
                if on_loop is not None:
                    on_loop()
                periodic = self.clock() >= next_tick
                if periodic:
                    self.unwritten.clear()   # retried once a tick
                    self.resynchronise()
                self.maybe_refresh(periodic)
                if self.dirty or periodic:
                    self.dirty = False
                    self.reconcile(periodic=periodic)
                if periodic:
                    next_tick += self.interval * max(
                        1, int((self.clock() - next_tick) // self.interval) + 1)
                    self.snapshot()
                    if on_tick is not None:
                        on_tick()
            except BeanwatchError:
                raise
            except Exception as e:  # noqa: BLE001 - logged, counted, and the loop goes on
                self.loop_failed(e)

    def pace(self, wait: float) -> float:
        """Busy (the last round had events, none of them about a covered cgroup), a round
        starts no sooner than ROUND_MIN after the one before: the events of that moment
        are handled together, in one round. A churning tenant's events come every ~50 us;
        handled as they came, each round had one or two, and the rounds and their wake-ups
        were most of beanwatch's CPU. Idle, or after a round that had work for a covered
        cgroup, the next event is handled at once. Returns what is left of wait."""
        now = time.monotonic()
        if self.busy and not self.dirty:
            rest = self.round_at + ROUND_MIN - now
            if rest > 0:
                time.sleep(rest)
                now += rest
                wait = max(0.0, wait - rest)
        self.round_at = now
        return wait

    def loop_failed(self, error: Exception) -> None:
        """An unexpected error in one round: say so (rate-limited), count it, and force a
        full resynchronisation next round instead of carrying on blind."""
        self.loop_errors += 1
        if self.loop_errors <= 5 or self.loop_errors % 100 == 0:
            self.sink(record("error", self.clock(), None,
                             detail=f"{type(error).__name__}: {error}", errors=self.loop_errors))
        self.dirty = True
        for acc in self.accounts:
            self.rearm.update(self.leaves_of.get(acc.name, ()))
            if acc.mode is Mode.SLOW:
                self.exact_due.add(acc.name)

    def apply_watches(self, watches) -> None:
        """A reloaded configuration. Accounts of cgroups still watched (same name and id)
        keep their state (mode, counts, maxheld); the others start afresh or go."""
        old = {a.name: a for a in self.accounts}
        accounts = []
        for w in watches:
            acc = old.get(w.name)
            if acc is None or acc.cgroup_id != w.cgroup_id:
                acc = Account(w.name, w.cgroup_id, w.limit)
            else:
                acc.limit = w.limit
                if w.limit is None:
                    acc.mode = Mode.FAST
            accounts.append(acc)
        self.accounts = accounts
        self.barrier.keep_only({a.name for a in accounts
                                if a.limit is not None and a.limit.barrier is not None})
        self.refresh_tree()
        self.rearm.update(self.written)
        self.reconcile(force_all=True)

    def stop(self) -> list[str]:
        """Detach everything and thaw what we froze. Returns what was thawed."""
        thawed = []
        self.drop_walk()
        try:
            self.probes.close()
            if self.taskstats is not None and hasattr(self.taskstats, "close"):
                self.taskstats.close()
        finally:
            # memory.high put back; hooks ended, holds and (unless --keep-frozen) freezes
            # thawed, failures recorded
            try:
                self.barrier.close()
            finally:
                thawed = self.enforcer.close()
        return thawed

    def thaw_orphans(self) -> None:
        """Thaws what a beanwatch that died without cleaning up had frozen, if the cgroup is
        still the same one (same id)."""
        if self.ledger is None:
            return
        done = set()
        for name, cid, path in self.ledger.orphans():
            if name:
                try:
                    res = self.actor.thaw(name, cid)
                    self.sink(record("thaw", self.clock(), name, ok=res.ok,
                                     detail="frozen by a beanwatch that died"))
                except Exception as e:
                    self.sink(record("thaw", self.clock(), name, ok=False, detail=str(e)))
            done.add(path)
        self.ledger.drop(done)
