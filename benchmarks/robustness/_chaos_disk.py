"""The chaos soak's checkpoint file system, which a fault can make slow or full.

This kernel has no FUSE or dm-delay, so a slow disk is built from what it has: ext4 on a loop
device (its image on a tmpfs of its own, so the disk under it costs nothing), and a cgroup-v1
blkio cgroup that every host's ringrun joins at start (its workers inherit it). The cgroup's
write throttle for the loop device is off (no rule) until the ``slow_ckpt`` fault sets one;
lifting the fault removes it. ``ringrt.checkpoint`` fsyncs every file it writes, and a
throttled fsync waits for its writes to pass the throttle, so a save really slows down.

Where ``losetup``, ``mkfs.ext4`` or the blkio throttle are missing the file system is a plain
tmpfs (it can still be filled) and the soak draws no ``slow_ckpt``.

Everything is named after the round's directory (``/var/tmp/PREFIX-chaos-PID/rN``), so
:func:`sweep` can find what a soak that died (SIGKILL, a crash) left behind: its mounts, loop
devices and cgroups, once the pid in the name is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

BLKIO = Path("/sys/fs/cgroup/blkio")
IMAGE_MB = 64
# a soak's directory is SOAK_PARENT/PREFIX-chaos-PID (its rounds below it), its cgroups
# PREFIX-chaos-PID-rN
SOAK_PARENT = Path("/var/tmp")
SOAK_CGROUP = re.compile(r"^[A-Za-z0-9_]+-chaos-(\d+)-r\d+$")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, timeout=30, capture_output=True, text=True)


def unavailable() -> str | None:
    """Why a slow checkpoint directory cannot be built here, or None when it can."""
    missing = [tool for tool in ("losetup", "mkfs.ext4") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found"
    if not (BLKIO / "blkio.throttle.write_bps_device").exists():
        return f"no cgroup-v1 blkio write throttle under {BLKIO}"
    return None


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", str(path))


def unmount(path: Path) -> None:
    _run("umount", "-l", str(path), check=False)


class CheckpointDisk:
    """The round's checkpoint file system at ``mountpoint``: ext4 on a loop device whose writes
    a blkio cgroup can throttle, or (``slow=False``) a tmpfs.

    ``join_path`` is the cgroup's ``cgroup.procs`` as a process inside a lab host reaches it
    (``ip netns exec`` mounts a fresh /sys there, without the cgroup hierarchies, so the path
    goes through this process's root in /proc); "" when there is no cgroup to join.
    """

    def __init__(self, root: Path, mountpoint: Path, slow: bool):
        self.mountpoint, self.slow = mountpoint, slow
        self.image_fs = root / "ckptimg"
        self.cgroup = BLKIO / f"{root.parent.name}-{root.name}"
        self.device = ""

    def create(self) -> None:
        """Make and mount it (:meth:`remove` undoes as much of it as was done)."""
        if not self.slow:
            mount_tmpfs(self.mountpoint, "16m")
            return
        mount_tmpfs(self.image_fs, f"{IMAGE_MB + 8}m")
        image = self.image_fs / "ckpt.img"
        with open(image, "wb") as out:
            out.truncate(IMAGE_MB << 20)
        self.device = _run("losetup", "-f", "--show", str(image)).stdout.strip()
        _run("mkfs.ext4", "-q", "-m", "0", self.device)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        _run("mount", self.device, str(self.mountpoint))
        self.mountpoint.chmod(0o1777)
        self.cgroup.mkdir()

    @property
    def join_path(self) -> str:
        if not self.slow:
            return ""
        return f"/proc/{os.getpid()}/root{self.cgroup / 'cgroup.procs'}"

    def throttle(self, write_bps: int, write_iops: int) -> None:
        """Cap the cgroup's writes to the loop device; 0, 0 removes the caps."""
        rdev = os.stat(self.device).st_rdev
        number = f"{os.major(rdev)}:{os.minor(rdev)}"
        (self.cgroup / "blkio.throttle.write_bps_device").write_text(f"{number} {write_bps}")
        (self.cgroup / "blkio.throttle.write_iops_device").write_text(f"{number} {write_iops}")

    def remove(self) -> None:
        """Unmount, detach and remove the cgroup (the round's processes are gone by now)."""
        unmount(self.mountpoint)
        if self.device:
            _detach(self.device)
        if self.slow:
            unmount(self.image_fs)
            _remove_cgroup(self.cgroup)


def _detach(device: str) -> None:
    # a device still busy (a lazy unmount not yet finished) detaches when it is let go
    _run("losetup", "-d", device, check=False)


def _remove_cgroup(cgroup: Path) -> None:
    """rmdir the cgroup; its last processes may take a moment to leave after SIGKILL."""
    for _ in range(50):
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


def _dead(pid: str) -> bool:
    return not Path(f"/proc/{pid}").exists()


def _dead_soaks(path: str) -> bool:
    """True if ``path`` is in the directory of a soak that is no longer running."""
    match = re.match(rf"^{re.escape(str(SOAK_PARENT))}/[A-Za-z0-9_]+-chaos-(\d+)(/|$)", path)
    return bool(match) and _dead(match.group(1))


def sweep() -> list[str]:
    """Remove what soaks that are no longer running left behind: mounts under their
    ``/var/tmp/*-chaos-PID`` directories, loop devices backed by files there, their blkio
    cgroups and the directories. Returns what it removed."""
    removed = []
    # the loop devices first: once its tmpfs is unmounted, an image's path no longer says
    # whose it is
    loops = _loop_devices()
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mountpoint in sorted(mounts, key=len, reverse=True):     # the deepest first
        if _dead_soaks(mountpoint):
            unmount(Path(mountpoint))
            removed.append(f"mount {mountpoint}")
    for device, backing in loops:
        if _dead_soaks(backing):
            _detach(device)
            removed.append(f"loop {device} ({backing})")
    if BLKIO.is_dir():
        for cgroup in BLKIO.iterdir():
            match = SOAK_CGROUP.match(cgroup.name)
            if match and cgroup.is_dir() and _dead(match.group(1)):
                _remove_cgroup(cgroup)
                removed.append(f"cgroup {cgroup}")
    for directory in SOAK_PARENT.glob("*-chaos-*"):
        if _dead_soaks(str(directory)):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(f"directory {directory}")
    return removed


def _loop_devices() -> list[tuple[str, str]]:
    """(device, backing file) of every attached loop device."""
    if shutil.which("losetup") is None:
        return []
    listed = _run("losetup", "-J", "-l", check=False).stdout
    with contextlib.suppress(ValueError):
        return [(entry["name"], entry.get("back-file") or "")
                for entry in json.loads(listed or "{}").get("loopdevices", [])]
    return []
