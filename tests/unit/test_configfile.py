"""--config FILE: file safety checks, strict TOML parsing, and properties of both."""

import math
import re
import os
import threading

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from observer.host import configfile
from observer.core.config import DEFAULT_HYSTERESIS, Action, ConfigError, Limit
from observer.host.configfile import (MAX_CONFIG_BYTES, CgroupConfig, ConfigFileError, FileConfig, check_file,
                                 load, parse_config, read_checked)
from observer.core.sizes import MAX_SIZE

K, M, G = 1 << 10, 1 << 20, 1 << 30
SRC = "/etc/beanwatch/beanwatch.toml"
PROPS = settings(database=None, deadline=None, max_examples=300)
GOOD = b'[cgroup."a"]\nlimit = "1G"\n'


def one(name, limit, barrier=None, action=Action.REPORT, hysteresis=DEFAULT_HYSTERESIS):
    return CgroupConfig(name, Limit(limit, barrier, action, hysteresis))


def test_config_file_error_is_a_config_error():
    assert issubclass(ConfigFileError, ConfigError)


# --- contents -----------------------------------------------------------------------------

SPEC_EXAMPLE = """\
# optional defaults for every cgroup
[defaults]
action = "report"        # report | freeze | kill
hysteresis = 0.10        # 0 <= h < 1
interval = 1.0           # seconds, 0.05..3600 (session-wide; only allowed in [defaults])

[cgroup."batch.slice/job-1"]
limit = "4G"             # required; a size string (K/M/G/T) or an integer number of bytes
barrier = "3500M"        # optional, <= limit
action = "kill"          # optional, overrides defaults
hysteresis = 0.2         # optional
"""


@pytest.mark.parametrize("text, expected", [
    (SPEC_EXAMPLE, FileConfig((one("batch.slice/job-1", 4 * G, 3500 * M, Action.KILL, 0.2),), 1.0)),
    ('[cgroup.a]\nlimit = "4G"', FileConfig((one("a", 4 * G),), None)),
    ("[cgroup.a]\nlimit = 4194304", FileConfig((one("a", 4 * M),), None)),
    ("[cgroup.a]\nlimit = 1048576", FileConfig((one("a", M),), None)),
    (f"[cgroup.a]\nlimit = {MAX_SIZE}", FileConfig((one("a", MAX_SIZE),), None)),
    ('[cgroup.a]\nlimit = "1G"\nbarrier = "1G"', FileConfig((one("a", G, G),), None)),
    ('[cgroup.a]\nlimit = "1G"\nbarrier = 1048576', FileConfig((one("a", G, M),), None)),
    ('[cgroup.a]\nlimit = "512m"', FileConfig((one("a", 512 * M),), None)),
    ('[cgroup.a]\nlimit = "1.5G"', FileConfig((one("a", 3 * G // 2),), None)),
    ('[cgroup.a]\nlimit = "4GiB"', FileConfig((one("a", 4 * G),), None)),
    # defaults apply to every cgroup; a cgroup's own keys win
    ('[defaults]\naction = "freeze"\nhysteresis = 0.3\n'
     '[cgroup.a]\nlimit = "1G"\n[cgroup.b]\nlimit = "2G"\naction = "kill"\nhysteresis = 0',
     FileConfig((one("a", G, None, Action.FREEZE, 0.3), one("b", 2 * G, None, Action.KILL, 0.0)), None)),
    # order of the file is kept
    ('[cgroup.z]\nlimit = "1M"\n[cgroup.a]\nlimit = "2M"\n[cgroup.m]\nlimit = "3M"',
     FileConfig((one("z", M), one("a", 2 * M), one("m", 3 * M)), None)),
    ("[defaults]\ninterval = 2\n[cgroup.a]\nlimit = 1048576", FileConfig((one("a", M),), 2.0)),
    ("[defaults]\ninterval = 0.05\n[cgroup.a]\nlimit = 1048576", FileConfig((one("a", M),), 0.05)),
    ("[defaults]\ninterval = 3600\n[cgroup.a]\nlimit = 1048576", FileConfig((one("a", M),), 3600.0)),
    ("[defaults]\nhysteresis = 0.999\n[cgroup.a]\nlimit = 1048576", FileConfig((one("a", M, hysteresis=0.999),), None)),
    ("[defaults]\n[cgroup.a]\nlimit = 1048576", FileConfig((one("a", M),), None)),
    # other TOML spellings of the same tables
    ('cgroup = { "a/b" = { limit = "1G", action = "kill" } }', FileConfig((one("a/b", G, None, Action.KILL),), None)),
    ('cgroup."a/b".limit = "1G"', FileConfig((one("a/b", G),), None)),
    ('[cgroup]\n[cgroup."x"]\nlimit = "1G"', FileConfig((one("x", G),), None)),
    ('\r\n# comment\r\n[cgroup.a] # trailing\r\nlimit = "1G"\r\n', FileConfig((one("a", G),), None)),
    # names are kept as written: the caller resolves them
    ('[cgroup."/sys/fs/cgroup/x.slice/"]\nlimit = 1048576', FileConfig((one("/sys/fs/cgroup/x.slice/", M),), None)),
    ('[cgroup."données.slice"]\nlimit = 1048576', FileConfig((one("données.slice", M),), None)),
    ('[cgroup."a"]\nlimit = 1048576\n[cgroup."a/b"]\nlimit = 1048576', FileConfig((one("a", M), one("a/b", M)), None)),
])
def test_parse_config_accepts(text, expected):
    assert parse_config(text, source=SRC) == expected
    assert parse_config(text.encode(), source=SRC) == expected


@pytest.mark.parametrize("data, fragment", [
    # empty, or nothing to watch
    (b"", "the config is empty"),
    (" \n\t\n", "the config is empty"),
    ("# only a comment\n", 'no [cgroup."NAME"] tables'),
    ('[defaults]\naction = "kill"', 'no [cgroup."NAME"] tables'),
    ("[cgroup]", 'no [cgroup."NAME"] tables'),
    # not TOML, not text
    ("[cgroup.a\nlimit = 1048576", "invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 10)"),
    ("[cgroup.a]\nlimit = 1048576\nlimit = 2", "invalid TOML"),
    ("[cgroup.a]\nlimit = 1048576\n[cgroup.a]\nlimit = 2", "invalid TOML"),
    ("[cgroup.a]\nlimit = 1048576" + "0" * 5000, "invalid TOML: a number has too many digits"),
    ("x = " + "[" * 100_000, "invalid TOML: arrays or tables nested too deeply"),
    ("x = " + "{a = " * 100_000, "invalid TOML"),
    (b"[cgroup.a]\nlimit = \"1G\"\n# caf\xe9", "not UTF-8 text (invalid byte at line 3)"),
    (b"\xff\xfe[\x00", "not UTF-8 text"),
    ('[cgroup."\ud800"]\nlimit = 1048576', "lone surrogate"),
    # unknown names
    ('[cgroups.a]\nlimit = "1G"', 'unknown top-level key "cgroups"'),
    ('limit = "1G"\n[cgroup.a]\nlimit = 1048576', 'unknown top-level key "limit"'),
    ('[default]\naction = "kill"', 'unknown top-level key "default"'),
    ('[defaults]\nlimit = "1G"\n[cgroup.a]\nlimit = 1048576', '[defaults]: unknown key "limit"'),
    ('[defaults]\nbarrier = "1G"\n[cgroup.a]\nlimit = 1048576', '[defaults]: unknown key "barrier"'),
    ('[cgroup.a]\nlimit = 1048576\ncolour = "red"', 'cgroup "a": unknown key "colour" (expected limit, barrier,'),
    ('[cgroup.a]\nlimit = 1048576\nLimit = 2', 'cgroup "a": unknown key "Limit"'),
    ('[cgroup.a]\nlimit = 1048576\ninterval = 1', 'cgroup "a": interval is session-wide: set it in [defaults]'),
    ('[cgroup.a.b]\nlimit = 1048576', 'cgroup "a": unknown key "b"'),
    # tables that are not tables
    ("defaults = 1\n[cgroup.a]\nlimit = 1048576", "defaults must be a table, not an integer"),
    ('cgroup = "a"', "cgroup must be a table, not a string"),
    ("[[cgroup]]\nlimit = 1048576", "cgroup must be a table, not an array"),
    ("cgroup.a = 1", 'cgroup "a" must be a table, not an integer'),
    # limit and barrier
    ('[cgroup.a]\naction = "kill"', 'cgroup "a": limit is required'),
    ("[cgroup.a]", 'cgroup "a": limit is required'),
    ('[cgroup.a]\nlimit = "4G"\nbarrier = "5G"', 'cgroup "a": barrier 5G is above limit 4G'),
    ("[cgroup.a]\nlimit = 1000\nbarrier = 1001", 'cgroup "a": barrier 1001 is above limit 1000'),
    ("[cgroup.a]\nlimit = 0", 'cgroup "a": limit must be above zero, not 0'),
    ('[cgroup.a]\nlimit = "0"', 'cgroup "a": limit must be above zero, not 0'),
    ("[cgroup.a]\nlimit = -1", 'cgroup "a": limit must be above zero, not -1'),
    ('[cgroup.a]\nlimit = "1G"\nbarrier = 0', 'cgroup "a": barrier must be above zero'),
    (f"[cgroup.a]\nlimit = {MAX_SIZE + 1}", f'cgroup "a": limit {MAX_SIZE + 1} is above {MAX_SIZE} bytes'),
    ('[cgroup.a]\nlimit = "8E"', 'cgroup "a": limit: bad size'),
    ('[cgroup.a]\nlimit = "4X"', "cgroup \"a\": limit: bad size '4X'"),
    ('[cgroup.a]\nlimit = "-1G"', 'cgroup "a": limit: bad size'),
    ('[cgroup.a]\nlimit = ""', 'cgroup "a": limit: bad size'),
    ('[cgroup.a]\nlimit = "max"', 'cgroup "a": limit: bad size'),
    ('[cgroup.a]\nlimit = "1G"\nbarrier = "lots"', 'cgroup "a": barrier: bad size'),
    ('[cgroup.a]\nlimit = "1\u212a"', 'cgroup "a": limit "1\u212a" is not a size'),  # KELVIN SIGN
    ('[cgroup.a]\nlimit = "\u0663G"', 'cgroup "a": limit "\u0663G" is not a size'),  # ARABIC-INDIC THREE
    ("[cgroup.a]\nlimit = true", 'cgroup "a": limit must be a size string or an integer number of bytes, '
                                  "not a boolean"),
    ("[cgroup.a]\nlimit = 1.5", "not a float"),
    ("[cgroup.a]\nlimit = 1e9", "not a float"),
    ("[cgroup.a]\nlimit = inf", "not a float"),
    ("[cgroup.a]\nlimit = 1979-05-27", "not a date or time"),
    ("[cgroup.a]\nlimit = [1]", "not an array"),
    ("[cgroup.a]\nlimit = {}", "not a table"),
    ('[cgroup.a]\nlimit = "1G"\nbarrier = false', 'cgroup "a": barrier must be a size string'),
    # hysteresis
    ("[cgroup.a]\nlimit = 1048576\nhysteresis = 1.0", 'cgroup "a": hysteresis 1.0 is outside [0, 1)'),
    ("[cgroup.a]\nlimit = 1048576\nhysteresis = 1", 'cgroup "a": hysteresis 1 is outside [0, 1)'),
    ("[cgroup.a]\nlimit = 1048576\nhysteresis = -0.1", "hysteresis -0.1 is outside [0, 1)"),
    ("[cgroup.a]\nlimit = 1048576\nhysteresis = nan", "hysteresis nan is outside [0, 1)"),
    ("[cgroup.a]\nlimit = 1048576\nhysteresis = -inf", "hysteresis -inf is outside [0, 1)"),
    ("[cgroup.a]\nlimit = 1048576\nhysteresis = true", 'cgroup "a": hysteresis must be a number, not a boolean'),
    ('[cgroup.a]\nlimit = 1048576\nhysteresis = "0.1"', "hysteresis must be a number, not a string"),
    ("[defaults]\nhysteresis = 2\n[cgroup.a]\nlimit = 1048576", "[defaults]: hysteresis 2 is outside [0, 1)"),
    ("[defaults]\nhysteresis = false\n[cgroup.a]\nlimit = 1048576", "[defaults]: hysteresis must be a number"),
    # interval
    ("[defaults]\ninterval = 0.01\n[cgroup.a]\nlimit = 1048576", "[defaults]: interval 0.01 is outside [0.05, 3600]"),
    ("[defaults]\ninterval = 0\n[cgroup.a]\nlimit = 1048576", "[defaults]: interval 0 is outside"),
    ("[defaults]\ninterval = -1\n[cgroup.a]\nlimit = 1048576", "[defaults]: interval -1 is outside"),
    ("[defaults]\ninterval = 3600.5\n[cgroup.a]\nlimit = 1048576", "[defaults]: interval 3600.5 is outside"),
    ("[defaults]\ninterval = nan\n[cgroup.a]\nlimit = 1048576", "[defaults]: interval nan is outside"),
    ("[defaults]\ninterval = inf\n[cgroup.a]\nlimit = 1048576", "[defaults]: interval inf is outside"),
    ("[defaults]\ninterval = true\n[cgroup.a]\nlimit = 1048576", "[defaults]: interval must be a number, not a boolean"),
    ('[defaults]\ninterval = "1s"\n[cgroup.a]\nlimit = 1048576', "[defaults]: interval must be a number, not a string"),
    # action
    ('[cgroup.a]\nlimit = 1048576\naction = "explode"', 'cgroup "a": action "explode" is not one of report, freeze, kill'),
    ('[cgroup.a]\nlimit = 1048576\naction = "Kill"', 'action "Kill" is not one of'),
    ('[cgroup.a]\nlimit = 1048576\naction = ""', 'action "" is not one of'),
    ('[cgroup.a]\nlimit = 1048576\naction = "kill\\n"', 'action "kill\\n" is not one of'),
    ("[cgroup.a]\nlimit = 1048576\naction = 1", 'cgroup "a": action must be a string, not an integer'),
    ('[defaults]\naction = "stop"\n[cgroup.a]\nlimit = 1048576', '[defaults]: action "stop" is not one of'),
    # cgroup names
    ('[cgroup.""]\nlimit = 1048576', 'cgroup "": the cgroup name is empty'),
    ('[cgroup."a\\u0000b"]\nlimit = 1048576', 'cgroup "a\\u0000b": the cgroup name contains a NUL or a line break'),
    ('[cgroup."a\\nb"]\nlimit = 1048576', 'cgroup "a\\nb": the cgroup name contains a NUL or a line break'),
    ('[cgroup."a\\r"]\nlimit = 1048576', "contains a NUL or a line break"),
    ('[cgroup."a\\u2028b"]\nlimit = 1048576', 'cgroup "a\\u2028b": the cgroup name contains'),
    ('[cgroup.a]\nlimit = 1048576\n[cgroup."a/"]\nlimit = 2', 'cgroup "a/" is the same cgroup as "a"'),
    ('[cgroup."a//"]\nlimit = 1048576\n[cgroup.a]\nlimit = 2', 'cgroup "a" is the same cgroup as "a//"'),
    ('[cgroup."/"]\nlimit = 1048576\n[cgroup."//"]\nlimit = 2', 'cgroup "//" is the same cgroup as "/"'),
])
def test_parse_config_rejects(data, fragment):
    with pytest.raises(ConfigFileError) as err:
        parse_config(data, source=SRC)
    message = str(err.value)
    assert fragment in message
    assert message.startswith(SRC + ": ") and message.count(SRC) == 1
    assert message.splitlines() == [message]


def test_parse_config_default_source():
    with pytest.raises(ConfigFileError, match=r"^<config>: the config is empty"):
        parse_config("")


def test_parse_config_without_a_toml_reader(monkeypatch):
    monkeypatch.setattr(configfile, "tomllib", None)
    with pytest.raises(ConfigFileError, match=r"needs Python 3\.11 or the tomli package"):
        parse_config(GOOD, source=SRC)


# --- the file -----------------------------------------------------------------------------

def write(path, data=GOOD, mode=0o644):
    path.write_bytes(data)
    path.chmod(mode)  # not subject to the umask
    return str(path)


def finishes(fn, seconds=10):
    """fn() raised ConfigFileError (returned as the result) within seconds; it did not hang."""
    box = []

    def run():
        try:
            box.append(fn())
        except ConfigFileError as e:
            box.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "hung"
    return box[0]


ME = os.getuid()


def test_load_reads_a_good_file(tmp_path):
    path = write(tmp_path / "beanwatch.toml", mode=0o600)
    assert read_checked(path, required_uid=ME) == GOOD
    assert load(path, required_uid=ME) == FileConfig((one("a", G),), None)
    check_file(path, required_uid=ME)


def test_load_reads_group_and_world_readable_files(tmp_path):
    path = write(tmp_path / "beanwatch.toml", mode=0o444)
    assert load(path, required_uid=ME).cgroups[0].cgroup == "a"


def test_load_names_the_path_in_content_errors(tmp_path):
    path = write(tmp_path / "beanwatch.toml", b'[cgroup.a]\nlimit = "4G"\nbarrier = "5G"\n')
    with pytest.raises(ConfigFileError, match=r'beanwatch\.toml: cgroup "a": barrier 5G is above limit 4G$'):
        load(path, required_uid=ME)


def test_load_reads_a_file_of_exactly_the_maximum_size(tmp_path):
    data = GOOD + b"#" * (MAX_CONFIG_BYTES - len(GOOD))
    path = write(tmp_path / "big.toml", data)
    assert read_checked(path, required_uid=ME) == data


def test_required_uid_defaults_to_root(tmp_path):
    path = write(tmp_path / "beanwatch.toml")
    if ME == 0:
        assert read_checked(path) == GOOD
    else:
        with pytest.raises(ConfigFileError, match=rf"is owned by uid {ME}, not uid 0$"):
            read_checked(path)


def make_symlink(tmp_path):
    target = write(tmp_path / "real.toml")
    os.symlink(target, tmp_path / "link.toml")
    return str(tmp_path / "link.toml")


def make_fifo(tmp_path):
    os.mkfifo(tmp_path / "fifo.toml", 0o644)
    return str(tmp_path / "fifo.toml")


@pytest.mark.parametrize("make, fragment", [
    (lambda p: write(p / "c.toml"), None),
    (lambda p: write(p / "c.toml", mode=0o666), "is writable by group or others (mode 0666); run chmod go-w"),
    (lambda p: write(p / "c.toml", mode=0o620), "is writable by group or others (mode 0620)"),
    (lambda p: write(p / "c.toml", mode=0o602), "is writable by group or others (mode 0602)"),
    (make_symlink, "is a symbolic link; give the file itself"),
    (lambda p: str(p), "is a directory, not a regular file"),
    (make_fifo, "is a fifo, not a regular file"),
    (lambda p: write(p / "c.toml", b"#" * (MAX_CONFIG_BYTES + 1)), f"is larger than {MAX_CONFIG_BYTES} bytes"),
    (lambda p: str(p / "missing.toml"), "cannot read config: No such file or directory"),
    (lambda p: str(p / "missing" / "c.toml"), "cannot read config: No such file or directory"),
    (lambda p: write(p / "c.toml", b"", mode=0o600), "the config is empty"),
])
def test_load_refuses_unsafe_files(tmp_path, make, fragment):
    path = make(tmp_path)
    result = finishes(lambda: load(path, required_uid=ME))
    if fragment is None:
        assert result == FileConfig((one("a", G),), None)
    else:
        assert isinstance(result, ConfigFileError)
        assert str(result).startswith(path + ": ")
        assert fragment in str(result)


def test_load_refuses_a_file_owned_by_someone_else(tmp_path):
    path = write(tmp_path / "c.toml")
    with pytest.raises(ConfigFileError, match=rf"c\.toml: refusing config: is owned by uid {ME}, not uid {ME + 1}$"):
        load(path, required_uid=ME + 1)


def test_owner_is_checked_before_mode(tmp_path):
    path = write(tmp_path / "c.toml", mode=0o666)
    with pytest.raises(ConfigFileError, match="is owned by"):
        check_file(path, required_uid=ME + 1)


@pytest.mark.skipif(ME == 0, reason="root reads files whatever their mode")
def test_load_reports_an_unreadable_file(tmp_path):
    path = write(tmp_path / "c.toml", mode=0o200)
    with pytest.raises(ConfigFileError, match="cannot read config: Permission denied"):
        load(path, required_uid=ME)


@pytest.mark.parametrize("make, fragment", [
    (make_symlink, "is a symbolic link"),
    (make_fifo, "is a fifo"),
    (lambda p: str(p), "is a directory"),
    (lambda p: write(p / "c.toml", mode=0o666), "is writable by group or others"),
    (lambda p: write(p / "c.toml", b"#" * (MAX_CONFIG_BYTES + 1)), "is larger than"),
])
def test_read_checked_checks_the_open_file_itself(tmp_path, monkeypatch, make, fragment):
    """The path may be swapped after check_file's lstat: the open fd is checked again."""
    path = make(tmp_path)
    monkeypatch.setattr(configfile, "check_file", lambda *a, **k: None)
    result = finishes(lambda: read_checked(path, required_uid=ME))
    assert isinstance(result, ConfigFileError) and fragment in str(result)


def test_read_checked_stops_reading_at_the_maximum(tmp_path, monkeypatch):
    """A file that grows after fstat is still caught by the bounded read."""
    path = write(tmp_path / "c.toml", b"#" * (MAX_CONFIG_BYTES + 1))
    monkeypatch.setattr(configfile, "check_file", lambda *a, **k: None)
    monkeypatch.setattr(configfile, "_refuse_unsafe", lambda *a: None)
    reads = []
    real_read = os.read
    monkeypatch.setattr(configfile.os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    with pytest.raises(ConfigFileError, match="is larger than"):
        read_checked(path, required_uid=ME)
    assert sum(reads) <= MAX_CONFIG_BYTES + 1


def test_check_file_uses_the_stat_it_is_given(tmp_path):
    path = write(tmp_path / "c.toml")
    real = os.lstat(path)

    def fake(p):
        fields = list(real)
        fields[4] = 4242  # st_uid
        return os.stat_result(fields)

    check_file(path, required_uid=ME, stat=os.lstat)
    with pytest.raises(ConfigFileError, match="is owned by uid 4242"):
        check_file(path, required_uid=ME, stat=fake)


def test_check_file_refuses_a_large_file_without_reading_it(tmp_path):
    path = write(tmp_path / "c.toml", b"#" * (MAX_CONFIG_BYTES + 1), mode=0o200)  # unreadable as non-root
    with pytest.raises(ConfigFileError, match="is larger than"):
        check_file(path, required_uid=ME)


def test_check_file_looks_at_the_link_not_its_target(tmp_path):
    link = make_symlink(tmp_path)
    with pytest.raises(ConfigFileError, match="is a symbolic link"):
        check_file(link, required_uid=ME)
    check_file(link, required_uid=ME, stat=os.stat)  # the target itself is fine


# --- properties ---------------------------------------------------------------------------

def assert_only_config_file_error(data):
    try:
        result = parse_config(data, source=SRC)
    except ConfigFileError as e:
        message = str(e)
        assert message.startswith(SRC + ": ") and message.count(SRC) == 1
        assert message.splitlines() == [message]
        return None
    assert isinstance(result, FileConfig) and result.cgroups
    for c in result.cgroups:
        assert c.cgroup and "\0" not in c.cgroup and c.cgroup.splitlines() == [c.cgroup]
        assert 0 < c.limit.limit <= MAX_SIZE
        assert c.limit.barrier is None or 0 < c.limit.barrier <= c.limit.limit
        assert 0 <= c.limit.hysteresis < 1
    assert result.interval is None or 0.05 <= result.interval <= 3600
    return result


TOMLISH = '[]."=\n\\#{},. abcdefgilmnortuyKMG0123456789-_:'


@PROPS
@given(st.one_of(st.text(max_size=200), st.text(alphabet=TOMLISH, max_size=120)))
@example('[cgroup.a]\nlimit = "1\u212a"')
@example("x = " + "[" * 5000)
def test_parse_config_text_raises_only_its_own_error(text):
    assert_only_config_file_error(text)


@PROPS
@given(st.binary(max_size=200))
@example(b"\xef\xbb\xbf[cgroup.a]\nlimit = 1048576")  # a UTF-8 byte order mark
@example(b"[cgroup.a]\nlimit = 1048576\n\x00")
def test_parse_config_bytes_raises_only_its_own_error(data):
    assert_only_config_file_error(data)


def toml_string(s):
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_document(doc):
    """doc: {table: {key: value}}; cgroup entries that are dicts become [cgroup."NAME"] sections."""
    root, sections = [], []  # keys after a section header would belong to it: write them first
    for table, body in doc.items():
        if not isinstance(body, dict):
            root.append(f"{toml_string(table)} = {toml_value(body)}")
            continue
        for key, sub in body.items():
            if isinstance(sub, dict) and table == "cgroup":
                sections.append(f"[{toml_string(table)}.{toml_string(key)}]")
                sections += [f"{toml_string(k)} = {toml_value(v)}" for k, v in sub.items()]
            else:
                root.append(f"{toml_string(table)}.{toml_string(key)} = {toml_value(sub)}")
    return "\n".join(root + sections) + "\n"


sizes = st.one_of(st.sampled_from(["1", "4G", "3500M", "0", "1.5G", "8E", "-1", "max", "", "1\u212a", "4GiB"]),
                  st.from_regex(r"[0-9]{1,22}(\.[0-9]{0,3})?[KMGTPEkmgtpe]?(i?[bB])?", fullmatch=True),
                  st.integers(min_value=-1, max_value=MAX_SIZE + 1))
scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10), sizes,
    st.sampled_from(["report", "freeze", "kill", "Kill"]),
    st.sampled_from([0, 1, 0.05, 0.1, 0.99, 3600, 3600.5, MAX_SIZE, MAX_SIZE + 1]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5)



def mostly(good, bad):
    """good four times in five (one_of would weigh by the number of branches in each)."""
    return st.integers(0, 4).flatmap(lambda i: bad if i == 4 else good)


def table_of(required=(), **known):
    """Mostly the keys beanwatch knows, each with a plausible or an arbitrary value."""
    plausible = st.fixed_dictionaries({k: mostly(known.pop(k), values) for k in required},
                                      optional={k: mostly(v, values) for k, v in known.items()})
    junk = st.dictionaries(st.text(max_size=6), values, max_size=1)
    return st.builds(lambda a, b: a | b, plausible, mostly(st.just({}), junk))


numbers = st.one_of(st.floats(), st.sampled_from([0, 1, 0.05, 0.1, 0.99, 3600, 3600.5]))
hystereses = mostly(st.floats(0, 1, exclude_max=True), numbers)
action_names = mostly(st.sampled_from(["report", "freeze", "kill"]), st.text(max_size=6))
defaults_tables = table_of(action=action_names, hysteresis=hystereses,
                           interval=mostly(st.floats(0.05, 3600), numbers))
cgroup_keys = dict(limit=sizes, barrier=sizes, action=action_names, hysteresis=hystereses)
names = mostly(st.from_regex(r"[a-c]{1,2}(/[a-c]{1,2})?/?", fullmatch=True),
                st.sampled_from(["/", "", "a\nb", "a\0b", "a\u2028"]) | st.text(max_size=8))
cgroup_tables = mostly(table_of(("limit",), **cgroup_keys), table_of(**cgroup_keys, interval=numbers))

documents = st.builds(
    lambda d, c, extra: ({} if d is None else {"defaults": d}) | ({} if c is None else {"cgroup": c}) | extra,
    mostly(st.none() | defaults_tables, values),
    mostly(st.dictionaries(names, mostly(cgroup_tables, values), min_size=1, max_size=4),
           st.none() | values | st.just({})),
    mostly(st.just({}), st.dictionaries(st.sampled_from(["cgroups", "x"]), values | defaults_tables, max_size=1)))


@PROPS
@given(documents)
def test_parse_config_generated_toml_raises_only_its_own_error(doc):
    assert_only_config_file_error(toml_document(doc))


@st.composite
def valid_configs(draw):
    """A valid document and the FileConfig it must give."""
    actions = st.sampled_from(list(Action))
    hystereses = st.floats(min_value=0, max_value=1, exclude_max=True)
    d_action = draw(st.none() | actions)
    d_hyst = draw(st.none() | hystereses)
    interval = draw(st.none() | st.floats(min_value=0.05, max_value=3600))
    defaults = {k: v for k, v in (("action", d_action and d_action.value), ("hysteresis", d_hyst),
                                  ("interval", interval)) if v is not None}
    names_ = draw(st.lists(st.from_regex(r"[a-z0-9_.@-]{1,12}(/[a-z0-9_.@-]{1,12}){0,2}", fullmatch=True),
                           min_size=1, max_size=5, unique=True))
    doc, expected = {}, []
    for name in names_:
        limit = draw(st.integers(min_value=M, max_value=MAX_SIZE))
        barrier = draw(st.none() | st.integers(min_value=M, max_value=limit))
        action, hyst = draw(st.none() | actions), draw(st.none() | hystereses)
        table = {"limit": limit}
        if barrier is not None:
            table["barrier"] = barrier
        if action is not None:
            table["action"] = action.value
        if hyst is not None:
            table["hysteresis"] = hyst
        doc[name] = table
        expected.append(one(name, limit, barrier, action or d_action or Action.REPORT,
                            hyst if hyst is not None else d_hyst if d_hyst is not None else DEFAULT_HYSTERESIS))
    document = ({"defaults": defaults} if defaults else {}) | {"cgroup": doc}
    return toml_document(document), FileConfig(tuple(expected), interval)


@PROPS
@given(valid_configs())
def test_parse_config_reads_back_what_was_written(case):
    text, expected = case
    assert assert_only_config_file_error(text) == expected


# issue 11: count, kill scope, grace, prefer and avoid


def test_policy_keys_in_defaults_and_per_cgroup():
    from observer.core.config import Count, KillScope
    cfg = parse_config('''
[defaults]
count = "rss+swap"
kill_scope = "child"
grace = 2
avoid = ["db*"]
[cgroup."a"]
limit = "1G"
[cgroup."b"]
limit = "1G"
kill_scope = "process"
grace = 0.5
prefer = ["worker-*"]
avoid = []
''')
    a, b = (c.limit for c in cfg.cgroups)
    assert (a.count, a.kill_scope, a.grace, a.prefer, a.avoid) == (
        Count.RSS_SWAP, KillScope.CHILD, 2.0, (), ("db*",))
    assert (b.count, b.kill_scope, b.grace, b.prefer, b.avoid) == (
        Count.RSS_SWAP, KillScope.PROCESS, 0.5, ("worker-*",), ())
    assert cfg.cgroups[1].explicit >= {"kill_scope", "grace", "prefer", "avoid"}


@pytest.mark.parametrize("line, message", [
    ('count = "pss"', 'count "pss" is not one of rss, rss+swap'),
    ('kill_scope = 1', "kill_scope must be a string"),
    ('grace = -1', "grace -1 is outside [0, 3600]"),
    ('grace = 3601', "grace 3601 is outside"),
    ('prefer = "x"', "prefer must be an array of strings"),
    ('avoid = [""]', "avoid: a pattern is empty"),
])
def test_policy_keys_refused(line, message):
    with pytest.raises(ConfigFileError, match=re.escape(message)):
        parse_config(f'[cgroup."a"]\nlimit = "1G"\n{line}\n')
