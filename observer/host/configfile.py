"""The --config FILE loader: refuses unsafe files and turns strict TOML into per-cgroup Limits."""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field, replace
from stat import S_ISBLK, S_ISCHR, S_ISDIR, S_ISFIFO, S_ISLNK, S_ISREG, S_ISSOCK

from ..core.config import (DEFAULT_HYSTERESIS, MAX_GRACE, Action, BarrierAction, ConfigError,
                           Count, KillScope, Limit, VmLimit, barrier_fits, check_minimum,
                           parse_barrier_action)
from ..core.sizes import MAX_SIZE, SizeError, format_size, parse_size

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

MAX_CONFIG_BYTES = 1 << 20
MIN_INTERVAL, MAX_INTERVAL = 0.05, 3600.0
_POLICY_KEYS = ("count", "kill_scope", "grace", "prefer", "avoid")
_DEFAULT_KEYS = ("action", "hysteresis", "interval", "barrier_action") + _POLICY_KEYS
_CGROUP_KEYS = ("limit", "barrier", "action", "hysteresis", "barrier_action", "vm_limit",
                "vm_barrier") + _POLICY_KEYS
_ACTIONS = ", ".join(a.value for a in Action)


class ConfigFileError(ConfigError):
    """A config file that is unsafe to trust or does not say what beanwatch needs."""


@dataclass(frozen=True)
class CgroupConfig:
    cgroup: str  # as written in the file; the caller resolves it against the cgroup mount
    limit: Limit | None  # with the file alone: its own settings, else [defaults], else
    #                      built-in; None: a vm_limit only
    # what its table says itself (None: not set there), for the command line's precedence
    own_action: Action | None = field(default=None, compare=False)
    own_hysteresis: float | None = field(default=None, compare=False)
    own_barrier_action: BarrierAction | None = field(default=None, compare=False)
    vm_limit: VmLimit | None = None   # vm_limit / vm_barrier: refusal at the allocation
    # the keys its own table sets (count, kill_scope, ... win over the command line)
    explicit: frozenset = field(default=frozenset(), compare=False)


@dataclass(frozen=True)
class FileConfig:
    cgroups: tuple[CgroupConfig, ...]
    interval: float | None
    default_action: Action | None = field(default=None, compare=False)       # [defaults]
    default_hysteresis: float | None = field(default=None, compare=False)
    default_barrier_action: BarrierAction | None = field(default=None, compare=False)

    def limits(self, action: Action | None = None, hysteresis: float | None = None,
               barrier_action: BarrierAction | None = None):
        """(cgroup, Limit) per table, each setting taken from, in order: the cgroup's own
        table, the command line (action, hysteresis: None where not given), the file's
        [defaults], the built-in default."""
        out = []
        for c in self.cgroups:
            if c.limit is None:
                continue
            act = first(c.own_action, action, self.default_action, Action.REPORT)
            hyst = first(c.own_hysteresis, hysteresis, self.default_hysteresis,
                         DEFAULT_HYSTERESIS)
            bact = first(c.own_barrier_action, barrier_action, self.default_barrier_action,
                         BarrierAction())
            out.append((c.cgroup, replace(c.limit, action=act, hysteresis=hyst,
                                          barrier_action=bact)))
        return out

    def vm_limits(self):
        """(cgroup, VmLimit) per table with a vm_limit."""
        return [(c.cgroup, c.vm_limit) for c in self.cgroups if c.vm_limit is not None]


def first(*values):
    """The first value that is not None (the precedence of settings)."""
    return next(v for v in values if v is not None)


# --- the file ---------------------------------------------------------------------------

def _kind_of_file(mode: int) -> str:
    for test, kind in ((S_ISDIR, "a directory"), (S_ISFIFO, "a fifo"), (S_ISSOCK, "a socket"),
                       (S_ISCHR, "a character device"), (S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def _refuse_unsafe(path: str, st: os.stat_result, required_uid: int) -> None:
    if S_ISLNK(st.st_mode):
        problem = "is a symbolic link; give the file itself"
    elif not S_ISREG(st.st_mode):
        problem = f"is {_kind_of_file(st.st_mode)}, not a regular file"
    elif st.st_uid != required_uid:
        problem = f"is owned by uid {st.st_uid}, not uid {required_uid}"
    elif st.st_mode & 0o022:
        problem = f"is writable by group or others (mode {st.st_mode & 0o777:04o}); run chmod go-w"
    elif st.st_size > MAX_CONFIG_BYTES:
        problem = f"is larger than {MAX_CONFIG_BYTES} bytes"
    else:
        return
    raise ConfigFileError(f"{path}: refusing config: {problem}")


def _os_problem(path: str, e: OSError) -> ConfigFileError:
    return ConfigFileError(f"{path}: cannot read config: {e.strerror or e}")


def check_file(path: str, *, required_uid: int = 0, stat=os.lstat) -> None:
    """Refuse, like logrotate, a config someone other than required_uid could have written."""
    try:
        st = stat(path)
    except OSError as e:
        raise _os_problem(path, e) from None
    _refuse_unsafe(path, st, required_uid)


def read_checked(path: str, *, required_uid: int = 0) -> bytes:
    """The bytes of a config file that passes check_file, checked and read through one fd."""
    check_file(path, required_uid=required_uid)  # never open a device or fifo at all
    # The path may change after that lstat: the checks on the open fd are the ones that count.
    # O_NONBLOCK so a fifo swapped in cannot hang the open.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ConfigFileError(f"{path}: refusing config: is a symbolic link; give the file itself") from None
        raise _os_problem(path, e) from None
    try:
        _refuse_unsafe(path, os.fstat(fd), required_uid)
        chunks, size = [], 0
        while size <= MAX_CONFIG_BYTES:  # the file may grow after fstat
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise _os_problem(path, e) from None
    finally:
        os.close(fd)
    if size > MAX_CONFIG_BYTES:
        raise ConfigFileError(f"{path}: refusing config: is larger than {MAX_CONFIG_BYTES} bytes")
    return b"".join(chunks)


def load(path: str, *, required_uid: int = 0) -> FileConfig:
    return parse_config(read_checked(path, required_uid=required_uid), source=path)


# --- the contents -----------------------------------------------------------------------

def _q(name: str) -> str:
    """name in double quotes, on one line whatever it contains."""
    return json.dumps(name, ensure_ascii=not name.isprintable())


def _toml_type(value) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"),
                       (str, "a string"), (dict, "a table"), (list, "an array")):
        if isinstance(value, kind):
            return name
    return "a date or time"


class _Table:
    """One TOML table being validated; every error names the source and the table."""

    def __init__(self, source: str, where: str, table: dict, allowed: tuple[str, ...]):
        self.source, self.where, self.table = source, where, table
        for key in table:
            if key not in allowed:
                hint = ("interval is session-wide: set it in [defaults]" if key == "interval"
                        else f"unknown key {_q(key)} (expected {', '.join(allowed)})")
                raise self.error(hint)

    def error(self, problem: str) -> ConfigFileError:
        return ConfigFileError(f"{self.source}: {self.where}: {problem}")

    def number(self, key: str, low: float, high: float, high_open: bool, default):
        if key not in self.table:
            return default
        value = self.table[key]
        # bool is an int in Python, but `hysteresis = true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"{key} must be a number, not {_toml_type(value)}")
        above = value >= high if high_open else value > high
        if not value >= low or above:  # written so that nan fails too
            raise self.error(f"{key} {value} is outside [{low:g}, {high:g}{')' if high_open else ']'}")
        return float(value)

    def action(self, default: Action) -> Action:
        if "action" not in self.table:
            return default
        value = self.table["action"]
        if not isinstance(value, str):
            raise self.error(f"action must be a string, not {_toml_type(value)}")
        try:
            return Action(value)
        except ValueError:
            raise self.error(f"action {_q(value)} is not one of {_ACTIONS}") from None

    def barrier_action(self) -> BarrierAction | None:
        if "barrier_action" not in self.table:
            return None
        value = self.table["barrier_action"]
        if not isinstance(value, str):
            raise self.error(f"barrier_action must be a string, not {_toml_type(value)}")
        try:
            return parse_barrier_action(value)
        except ConfigError as e:
            raise self.error(str(e)) from None

    def choice(self, key: str, enum_type, default):
        if key not in self.table:
            return default
        value = self.table[key]
        allowed = ", ".join(e.value for e in enum_type)
        if not isinstance(value, str):
            raise self.error(f"{key} must be a string, not {_toml_type(value)}")
        try:
            return enum_type(value)
        except ValueError:
            raise self.error(f"{key} {_q(value)} is not one of {allowed}") from None

    def patterns(self, key: str, default: tuple) -> tuple:
        if key not in self.table:
            return default
        value = self.table[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{key} must be an array of strings (glob patterns)")
        if any(not v or "\0" in v or "\n" in v for v in value):
            raise self.error(f"{key}: a pattern is empty or holds a NUL or a line break")
        return tuple(value)

    def policy(self, base: dict) -> dict:
        """count, kill_scope, grace, prefer, avoid: this table's, else base's."""
        return {"count": self.choice("count", Count, base["count"]),
                "kill_scope": self.choice("kill_scope", KillScope, base["kill_scope"]),
                "grace": self.number("grace", 0.0, MAX_GRACE, False, base["grace"]),
                "prefer": self.patterns("prefer", base["prefer"]),
                "avoid": self.patterns("avoid", base["avoid"])}

    def size(self, key: str) -> int | None:
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            # parse_size's regex is Unicode-aware (KELVIN SIGN, Arabic-Indic digits): keep to ASCII.
            if not value.isascii():
                raise self.error(f"{key} {_q(value)} is not a size: use ASCII digits and K, M, G, T, P or E")
            try:
                value = parse_size(value)
            except SizeError as e:
                raise self.error(f"{key}: {e}") from None
        elif isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{key} must be a size string or an integer number of bytes, "
                             f"not {_toml_type(value)}")
        if value <= 0:
            raise self.error(f"{key} must be above zero, not {value}")
        if value > MAX_SIZE:
            raise self.error(f"{key} {value} is above {MAX_SIZE} bytes")
        return value


def _decode(data: bytes | str, source: str) -> str:
    if isinstance(data, (bytes, bytearray)):
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise ConfigFileError(f"{source}: not UTF-8 text (invalid byte at line {line})") from None
    if not isinstance(data, str):
        raise TypeError(f"config data must be bytes or str, not {type(data).__name__}")
    try:
        data.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ConfigFileError(f"{source}: not valid text (character {e.start} is a lone surrogate)") from None
    return data


def _parse_toml(text: str, source: str) -> dict:
    if tomllib is None:
        raise ConfigFileError(f"{source}: reading TOML needs Python 3.11 or the tomli package")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigFileError(f"{source}: invalid TOML: {e}") from None
    except ValueError:  # int() refuses integers of more than 4300 digits
        raise ConfigFileError(f"{source}: invalid TOML: a number has too many digits") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays and inline tables
        raise ConfigFileError(f"{source}: invalid TOML: arrays or tables nested too deeply") from None


def _vm_limit(t: "_Table", table: dict) -> VmLimit | None:
    """vm_limit and vm_barrier of a cgroup's table (--vm-limit's SIZE and BARRIER)."""
    if "vm_limit" not in table:
        if "vm_barrier" in table:
            raise t.error("vm_barrier needs a vm_limit")
        return None
    limit, barrier = t.size("vm_limit"), t.size("vm_barrier")
    if not barrier_fits(limit, barrier):
        raise t.error(f"vm_barrier {format_size(barrier, exact=True)} is above "
                      f"vm_limit {format_size(limit, exact=True)}")
    for key, value in (("vm_limit", limit), ("vm_barrier", barrier)):
        try:
            check_minimum(key, value, table.get(key))
        except ConfigError as e:
            raise t.error(str(e)) from None
    return VmLimit(limit, barrier)


def parse_config(data: bytes | str, *, source: str = "<config>") -> FileConfig:
    """A FileConfig from the text of a config file, or a one-line ConfigFileError."""
    text = _decode(data, source)
    if not text.strip():
        raise ConfigFileError(f'{source}: the config is empty: it needs at least one [cgroup."NAME"] table')
    doc = _parse_toml(text, source)
    for key in doc:
        if key not in ("defaults", "cgroup"):
            raise ConfigFileError(f'{source}: unknown top-level key {_q(key)} '
                                  f'(expected [defaults] and [cgroup."NAME"] tables)')
        if not isinstance(doc[key], dict):
            raise ConfigFileError(f"{source}: {key} must be a table, not {_toml_type(doc[key])}")

    defaults = _Table(source, "[defaults]", doc.get("defaults", {}), _DEFAULT_KEYS)
    action = defaults.action(Action.REPORT)
    hysteresis = defaults.number("hysteresis", 0.0, 1.0, True, DEFAULT_HYSTERESIS)
    interval = defaults.number("interval", MIN_INTERVAL, MAX_INTERVAL, False, None)
    default_barrier = defaults.barrier_action()
    policy = defaults.policy({"count": Count.RSS, "kill_scope": KillScope.CGROUP, "grace": 0.0,
                              "prefer": (), "avoid": ()})

    cgroups, seen = [], {}
    for name, table in doc.get("cgroup", {}).items():
        where = f"cgroup {_q(name)}"
        if not name:
            raise ConfigFileError(f"{source}: {where}: the cgroup name is empty")
        if "\0" in name or name.splitlines() != [name]:
            raise ConfigFileError(f"{source}: {where}: the cgroup name contains a NUL or a line break")
        if not isinstance(table, dict):
            raise ConfigFileError(f"{source}: {where} must be a table, not {_toml_type(table)}")
        same = name.rstrip("/") or "/"
        if same in seen:
            raise ConfigFileError(f"{source}: {where} is the same cgroup as {_q(seen[same])}")
        seen[same] = name

        t = _Table(source, where, table, _CGROUP_KEYS)
        vm_limit = _vm_limit(t, table)
        if "limit" not in table:
            if vm_limit is None:
                raise t.error("limit is required (or a vm_limit)")
            if "barrier" in table:
                raise t.error("barrier needs a limit")
            if "barrier_action" in table:
                raise t.error("barrier_action needs a limit with a barrier")
            cgroups.append(CgroupConfig(name, None, vm_limit=vm_limit))
            continue
        limit, barrier = t.size("limit"), t.size("barrier")
        if not barrier_fits(limit, barrier):   # above zero already: t.size says so
            raise t.error(f"barrier {format_size(barrier, exact=True)} is above "
                          f"limit {format_size(limit, exact=True)}")
        for key, value in (("limit", limit), ("barrier", barrier)):
            try:
                check_minimum(key, value, table.get(key))
            except ConfigError as e:
                raise t.error(str(e)) from None
        own_action, own_hysteresis = t.action(action), t.number("hysteresis", 0.0, 1.0, True, hysteresis)
        own_barrier = t.barrier_action()
        if own_barrier is not None and own_barrier.kind != "report" and barrier is None:
            raise t.error(f"barrier_action {_q(str(own_barrier))} needs a barrier")
        try:
            built = Limit(limit, barrier, own_action, own_hysteresis,
                          barrier_action=first(own_barrier, default_barrier, BarrierAction()),
                          **t.policy(policy))
        except ConfigError as e:  # checked above already; kept so Limit stays the final word
            raise t.error(str(e)) from None
        cgroups.append(CgroupConfig(name, built, t.action(None), t.number(
            "hysteresis", 0.0, 1.0, True, None), own_barrier, vm_limit, frozenset(table)))

    if not cgroups:
        raise ConfigFileError(f'{source}: no [cgroup."NAME"] tables: the config limits nothing')
    return FileConfig(tuple(cgroups), interval, defaults.action(None),
                      defaults.number("hysteresis", 0.0, 1.0, True, None), default_barrier)
