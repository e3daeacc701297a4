"""beanwatch's own footprint: which compiler pages may be dropped after loading."""

from observer.host.selfguard import _compiler_ranges

SMAPS = """\
7f0000000000-7f0000100000 r--p 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Size:               1024 kB
Anonymous:             0 kB
7f0000100000-7f0000900000 r-xp 00100000 08:01 123 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Size:               8192 kB
Anonymous:             0 kB
7f0000900000-7f0000a00000 r--p 00900000 08:01 123 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Size:               1024 kB
Anonymous:           900 kB
7f0000a00000-7f0000a10000 rw-p 00a00000 08:01 123 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Size:                 64 kB
Anonymous:             0 kB
7f0000b00000-7f0000c00000 r-xp 00000000 08:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               1024 kB
Anonymous:             0 kB
7f0000c00000-7f0000d00000 r-xp 00000000 08:01 789 /usr/lib/x86_64-linux-gnu/libclang-cpp.so.14
Size:               1024 kB
Anonymous:             0 kB
"""


def test_only_clean_read_only_compiler_mappings():
    got = list(_compiler_ranges(SMAPS))
    assert got == [(0x7F0000000000, 0x7F0000100000), (0x7F0000100000, 0x7F0000900000),
                   (0x7F0000C00000, 0x7F0000D00000)]
    # RELRO (read-only, but with private copies), writable data, and other libraries stay
