"""Data-mover benchmarks, driven by scripts/bench-mover.sh. Prints a markdown table.

Wall times cover the whole mover run, both sides, from start until both exit. The limit
is plain rsync (same preserving flags) to an rsync daemon over loopback without TLS,
daemon start included. Memory is the peak RSS per program, sampled from /proc.

CPU is the user+system time of every process of a run (both movers, the stunnels, every
rsync), taken from getrusage(RUSAGE_CHILDREN): this script is a child subreaper, so the
stunnel clients rsync starts and leaves behind are reaped, and counted, here. On a host
whose cores are saturated by other work the wall-time ratio follows the CPU ratio, which
is far less noisy.
"""
import argparse, ctypes, json, os, random, resource, shutil, signal, socket, statistics, subprocess, sys, threading, time

PR_SET_CHILD_SUBREAPER = 36

MB = 1000 * 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def become_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")


def children_cpu():
    """CPU seconds of all reaped descendants so far, after reaping leftover orphans."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.01)
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def write_random(path, size, rng):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(rng.randbytes(n))
            left -= n


class Peaks:
    """Samples RSS of every descendant of the given pids, per program name."""

    def __init__(self):
        self.roots, self.peak, self.stop = set(), {}, False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            parents = {}
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        stat = open(f"/proc/{pid}/stat").read()
                        parents[int(pid)] = int(stat[stat.rfind(")") + 2:].split()[1])
                    except OSError:
                        pass
            for pid in parents:
                p, hops = pid, 0
                while p not in self.roots and p > 1 and hops < 20:
                    p, hops = parents.get(p, 0), hops + 1
                if p in self.roots:
                    try:
                        comm = open(f"/proc/{pid}/comm").read().strip()
                        rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
                        self.peak[comm] = max(self.peak.get(comm, 0), rss)
                    except (OSError, StopIteration):
                        pass
            time.sleep(0.02)

    def done(self):
        self.stop = True
        self.thread.join()
        return self.peak


class Bench:
    def __init__(self, binary, root):
        self.bin, self.root = os.path.abspath(binary), root
        self.keys = os.path.join(root, "keys")
        os.makedirs(self.keys, exist_ok=True)
        with open(os.path.join(self.keys, "psk.txt"), "w") as f:
            f.write("volsync:" + os.urandom(32).hex())
        os.chmod(os.path.join(self.keys, "psk.txt"), 0o600)

    def env(self, tmp, **extra):
        os.makedirs(tmp, exist_ok=True)
        e = {"PATH": os.environ["PATH"], "KEY_DIR": self.keys, "TMP_DIR": tmp, "PRIVILEGED_MOVER": "1",
             "TERMINATION_MESSAGE_PATH": os.path.join(tmp, "summary.json"), "PROGRESS_INTERVAL": "1h"}
        e.update(extra)
        return e

    def mover(self, src, dst, **src_env):
        cpu0 = children_cpu()
        port = free_port()
        peaks = Peaks()
        start = time.monotonic()
        dtmp, stmp = os.path.join(self.root, "tmp-dst"), os.path.join(self.root, "tmp-src")
        dest = subprocess.Popen([self.bin, "mover", "destination"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=self.env(dtmp, DATA_DIR=dst, LISTEN_ADDRESS="127.0.0.1", LISTEN_PORT=str(port)))
        peaks.roots.add(dest.pid)
        # The source retries until stunnel listens, as it would in a cluster.
        srcp = subprocess.Popen([self.bin, "mover", "source"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=self.env(stmp, DATA_DIR=src, DESTINATION_ADDRESS="127.0.0.1",
                                             DESTINATION_PORT=str(port), RETRY_BASE_DELAY="50ms", MAX_ATTEMPTS="10",
                                             **src_env))
        peaks.roots.add(srcp.pid)
        rc_src, rc_dst = srcp.wait(), dest.wait()
        wall = time.monotonic() - start
        dest.stdout.read()
        if rc_src or rc_dst:
            sys.exit(f"mover failed: source {rc_src}, destination {rc_dst}")
        summary = json.load(open(os.path.join(stmp, "summary.json")))
        self.last_cpu = children_cpu() - cpu0
        return wall, summary, peaks.done()

    def plain(self, src, dst):
        cpu0 = children_cpu()
        port = free_port()
        conf = os.path.join(self.root, "plain-rsyncd.conf")
        with open(conf, "w") as f:
            f.write(f"use chroot = false\nnumeric ids = true\nread only = false\nuid = 0\ngid = *\n[data]\npath = {dst}\n")
        peaks = Peaks()
        start = time.monotonic()
        daemon = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}", f"--port={port}",
                                   "--address=127.0.0.1"])
        peaks.roots.add(daemon.pid)
        while True:
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.005)
        client = subprocess.Popen(["rsync", "-aAHSx", "--numeric-ids", src + "/", f"rsync://127.0.0.1:{port}/data/"],
                                  stdout=subprocess.DEVNULL)
        peaks.roots.add(client.pid)
        rc = client.wait()
        wall = time.monotonic() - start
        daemon.send_signal(signal.SIGTERM)
        daemon.wait()
        if rc:
            sys.exit(f"plain rsync failed: {rc}")
        self.last_cpu = children_cpu() - cpu0
        return wall, peaks.done()


def wipe(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--root", default="/dev/shm/ferrosync-bench")
    args = ap.parse_args()
    become_subreaper()
    shutil.rmtree(args.root, ignore_errors=True)
    os.makedirs(args.root)
    b = Bench(args.bin, args.root)
    rng = random.Random(1)
    src, dst = os.path.join(args.root, "src"), os.path.join(args.root, "dst")
    os.makedirs(src)
    for i in range(4):
        write_random(os.path.join(src, f"big-{i}.bin"), 200 * MB, rng)
    small = (1 << 30) - 800 * MB
    for d in range(20):
        os.makedirs(os.path.join(src, f"small-{d:02}"))
        for i in range(1000):
            write_random(os.path.join(src, f"small-{d:02}", f"f{i:04}"), small // 20000, rng)
    rows = []

    mover_t, plain_t, ratios, mover_c, plain_c = [], [], [], [], []
    for run in range(args.runs):
        wipe(dst)
        p, _ = b.plain(src, dst)
        plain_c.append(b.last_cpu)
        wipe(dst)
        m, _, _ = b.mover(src, dst)
        mover_c.append(b.last_cpu)
        mover_t.append(m)
        plain_t.append(p)
        ratios.append(p / m)
        print(f"full sync run {run + 1}: mover {m:.2f}s ({mover_c[-1]:.2f}s CPU), "
              f"plain rsync {p:.2f}s ({plain_c[-1]:.2f}s CPU)", file=sys.stderr)
    rows.append(("Full sync, 1 GiB (4 x 200 MB + 20,000 files), median of "
                 f"{args.runs} alternating runs", f"{statistics.median(mover_t):.2f} s",
                 f"{statistics.median(plain_t):.2f} s",
                 f"speed ratio {statistics.median(ratios):.2f} (target >= 0.85)"))
    rows.append(("Full sync: CPU time of all its processes (user+sys), median",
                 f"{statistics.median(mover_c):.2f} s", f"{statistics.median(plain_c):.2f} s",
                 f"CPU ratio {statistics.median(plain_c) / statistics.median(mover_c):.2f}"))
    for choice in ["auto", "lz4"]:
        wipe(dst)
        m, _, _ = b.mover(src, dst, RSYNC_COMPRESS=choice)
        rows.append((f"Full sync with RSYNC_COMPRESS={choice} (1 run)", f"{m:.2f} s", "", "tuning: not the default"))

    # dst is now in sync with src.
    big = os.path.join(src, "big-0.bin")
    for label, env in [("", {}), (" with RSYNC_COMPRESS=auto (zstd)", {"RSYNC_COMPRESS": "auto"})]:
        with open(big, "r+b") as f:
            f.seek(rng.randrange(0, 190 * MB))
            f.write(rng.randbytes(2 * MB))
        _, s, _ = b.mover(src, dst, **env)
        rows.append((f"1% contiguous change (2 MB in a 200 MB file){label}: bytes on the wire",
                     f"{s['bytesSent']:,} B", "2,000,000 B changed",
                     f"{s['bytesSent'] / (2 * MB):.2f} x changed (target <= 1.25)"))
    with open(os.path.join(src, "big-1.bin"), "r+b") as f:
        for k in range(1000):
            f.seek(k * 200 * 1000 + rng.randrange(0, 198000))
            f.write(rng.randbytes(2000))
    _, s, _ = b.mover(src, dst)
    rows.append(("1% spread over 1,000 places (2,000 B each): bytes on the wire", f"{s['bytesSent']:,} B",
                 "2,000,000 B changed", f"{s['bytesSent'] / (2 * MB):.2f} x changed (no target)"))
    write_random(os.path.join(src, "small-07", "f0123"), 4096, rng)
    m, s, _ = b.mover(src, dst)
    rows.append(("Small incremental (one 4 KiB file changed in the 1 GiB tree), end to end",
                 f"{m:.2f} s", "", f"target < 1.5 s; {s['bytesSent']:,} B sent"))

    shutil.rmtree(src)
    src100 = os.path.join(args.root, "src100k")
    for d in range(100):
        os.makedirs(os.path.join(src100, f"d{d:02}"))
        for i in range(1000):
            with open(os.path.join(src100, f"d{d:02}", f"f{i:04}"), "wb") as f:
                f.write(rng.randbytes(1024))
    wipe(dst)
    p, pp = b.plain(src100, dst)
    wipe(dst)
    m, _, mp = b.mover(src100, dst)
    mem = lambda peaks, name: f"{peaks.get(name, 0) / 1024:.1f} MiB"
    rows.append(("100,000 files of 1 KiB: time", f"{m:.2f} s", f"{p:.2f} s", f"speed ratio {p / m:.2f}"))
    rows.append(("100,000 files: peak RSS of the ferrosync process (largest of both sides)",
                 mem(mp, "ferrosync"), "", ""))
    rows.append(("100,000 files: peak RSS of one rsync process", mem(mp, "rsync"), mem(pp, "rsync"), ""))
    rows.append(("100,000 files: peak RSS of stunnel", mem(mp, "stunnel"), "", ""))
    shutil.rmtree(args.root, ignore_errors=True)

    print("| Measurement | ferrosync mover | plain rsync (no TLS) | Note |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
