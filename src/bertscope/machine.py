"""What this process may use of the machine it runs on: its CPUs (the affinity mask) and the memory it can still
allocate (MemAvailable, less where a cgroup limit leaves less). Guards compare plans with these before any work."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as taskset or a container sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):                          # not Linux
        return os.cpu_count() or 1


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1), counting its reclaimable page cache as room;
    None where no limit is set or none can be read."""
    for limit_file, usage_file, stat_file, key in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory.stat",
             "inactive_file"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
             "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is None or usage is None or limit >= 1 << 60:       # "max", or v1's "unlimited" page-rounded 2^63
            continue
        cache = 0
        try:
            with open(stat_file) as f:
                cache = next((int(line.split()[1]) for line in f if line.split()[0] == key), 0)
        except (OSError, ValueError, IndexError):
            pass
        return max(0, limit - usage + cache)
    return None


def available_memory() -> tuple[int, str]:
    """(bytes, what they are) this process can still allocate: MemAvailable from /proc/meminfo (else the free pages,
    else all of memory, from sysconf), less where a cgroup memory limit leaves less."""
    room, what = None, "available"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    room = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if room is None:
        for name, label in (("SC_AVPHYS_PAGES", "free"), ("SC_PHYS_PAGES", "in all")):
            try:
                room, what = os.sysconf(name) * os.sysconf("SC_PAGE_SIZE"), label
                break
            except (ValueError, OSError, AttributeError):
                continue
    limit = _cgroup_room()
    if limit is not None and (room is None or limit < room):
        room, what = limit, "available under this process's memory limit (cgroup)"
    return (room if room is not None else 1 << 62), what


def fmt_gib(n: int) -> str:
    """A size in bytes as the messages about memory say it: 0.05 GiB, 3.20 GiB, 24 GiB."""
    gib = n / 1024 ** 3
    return f"{gib:.2f} GiB" if gib < 10 else f"{gib:,.0f} GiB"
