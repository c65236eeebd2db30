"""Data-mover benchmarks, driven by scripts/bench-mover.sh. Prints markdown tables.

Three data paths side by side, in the same run, alternating so they share the host's
conditions:
  plain    rsync (same preserving flags) to an rsync daemon, no TLS, daemon start included;
  stunnel  both `ferrosync mover` sides with TLS_TUNNEL=stunnel (the fallback);
  builtin  both `ferrosync mover` sides with the built-in TLS-PSK tunnel (the default).
Mover times cover both sides from start until both exit (both passes, the symlink list,
the completion handshake).

CPU is the user+system time of every process of a run, from getrusage(RUSAGE_CHILDREN):
this script is a child subreaper, so processes rsync starts and leaves behind are reaped,
and counted, here. The split by program samples /proc/<pid>/stat of every descendant every
20 ms and keeps each process's last value (a process's final < 20 ms can be missed).

The emulated WAN puts the two ends in network namespaces joined by a veth pair whose
both directions are shaped by tbf (this kernel has no netem: no latency is added).
"""
import argparse, ctypes, json, os, random, resource, shutil, signal, socket, statistics, subprocess, sys, threading, time

PR_SET_CHILD_SUBREAPER = 36
MB = 1000 * 1000
TICK = os.sysconf("SC_CLK_TCK")
VARIANTS = ["plain", "stunnel", "builtin"]


# (target, goal, measured, met) rows for the closing table, filled by the sections.
TARGETS = []


def target(name, goal, value, met):
    TARGETS.append([name, goal, value, "met" if met else "missed"])


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def loadavg():
    return open("/proc/loadavg").read().split()[0]


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


def write_dblike(path, size, rng):
    """Database-like pages: 8 KiB pages of rows with ids, names, amounts and padding;
    zstd compresses them about 4:1."""
    words = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"foxtrot", b"golf", b"hotel"]
    with open(path, "wb") as f:
        written, row = 0, 0
        while written < size:
            page = bytearray()
            while len(page) < 8192 - 120:
                row += 1
                page += b"%08d|%s-%05d|%s|%10d.%02d|%s\n" % (
                    row, rng.choice(words), rng.randrange(100000), rng.choice(words) * 2,
                    rng.randrange(10 ** 9), rng.randrange(100), b"active " if row % 3 else b"closed ")
            page += b"\0" * (8192 - len(page))
            page = bytes(page[: min(8192, size - written)])
            f.write(page)
            written += len(page)


class Sampler:
    """Peak RSS and last seen CPU per descendant process, grouped by program."""

    def __init__(self):
        self.roots, self.peak, self.cpu, self.comm, self.stop = set(), {}, {}, {}, False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    # The kernel's name of the mover binary's processes (its first 15 bytes).
    mover_comm = "ferrosync"

    def label(self, pid, comm):
        if comm == self.mover_comm:
            try:
                argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            except OSError:
                argv = []
            return "ferrosync connect" if b"connect" in argv else "ferrosync"
        return comm

    def run(self):
        while not self.stop:
            stats = {}
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        stat = open(f"/proc/{pid}/stat").read()
                        f = stat[stat.rfind(")") + 2:].split()
                        stats[int(pid)] = (int(f[1]), (int(f[11]) + int(f[12])) / TICK)
                    except (OSError, IndexError):
                        pass
            for pid, (ppid, cpu) in stats.items():
                p, hops = pid, 0
                while p not in self.roots and p > 1 and hops < 20:
                    p, hops = stats.get(p, (0, 0))[0], hops + 1
                if p in self.roots:
                    try:
                        comm = open(f"/proc/{pid}/comm").read().strip()
                        rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
                    except (OSError, StopIteration):
                        continue
                    # Labelled again at every sample: a child is first seen under its
                    # parent's name between fork and exec (stunnel started by the mover).
                    self.comm[pid] = self.label(pid, comm)
                    name = self.comm[pid]
                    self.peak[name] = max(self.peak.get(name, 0), rss)
                    self.cpu[pid] = cpu
            time.sleep(0.02)

    def done(self):
        self.stop = True
        self.thread.join()
        split = {}
        for pid, cpu in self.cpu.items():
            split[self.comm[pid]] = split.get(self.comm[pid], 0) + cpu
        return self.peak, split


class Run:
    def __init__(self, wall, cpu, peaks, split, summary=None):
        self.wall, self.cpu, self.peaks, self.split, self.summary = wall, cpu, peaks, split, summary

    def wire(self):
        """Bytes on the wire both ways, as the source's rsync counted them."""
        return self.summary["bytesSent"] + self.summary["bytesReceived"]


class Bench:
    def __init__(self, binary, root):
        self.bin, self.root = os.path.abspath(binary), root
        Sampler.mover_comm = os.path.basename(self.bin)[:15]
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

    def run(self, variant, src, dst, net=None, compress="none", **src_env):
        if variant == "plain":
            return self.plain(src, dst, net, compress)
        src_env.setdefault("RSYNC_COMPRESS", compress)
        return self.mover(src, dst, net, TLS_TUNNEL=variant, **src_env)

    def mover(self, src, dst, net=None, **src_env):
        """net: None for loopback, else (source netns, destination netns, destination IP)."""
        cpu0 = children_cpu()
        port = free_port()
        addr = net[2] if net else "127.0.0.1"
        wrap = lambda ns: ["ip", "netns", "exec", ns] if ns else []
        sampler = Sampler()
        start = time.monotonic()
        dtmp, stmp = os.path.join(self.root, "tmp-dst"), os.path.join(self.root, "tmp-src")
        tunnel = src_env.get("TLS_TUNNEL", "builtin")
        dest = subprocess.Popen(wrap(net and net[1]) + [self.bin, "mover", "destination"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                env=self.env(dtmp, DATA_DIR=dst, LISTEN_ADDRESS=addr, LISTEN_PORT=str(port),
                                             TLS_TUNNEL=tunnel))
        sampler.roots.add(dest.pid)
        # The source retries until the destination listens, as it would in a cluster.
        srcp = subprocess.Popen(wrap(net and net[0]) + [self.bin, "mover", "source"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                                env=self.env(stmp, DATA_DIR=src, DESTINATION_ADDRESS=addr,
                                             DESTINATION_PORT=str(port), RETRY_BASE_DELAY="50ms", MAX_ATTEMPTS="10",
                                             **src_env))
        sampler.roots.add(srcp.pid)
        rc_src, rc_dst = srcp.wait(), dest.wait()
        wall = time.monotonic() - start
        out = dest.stdout.read()
        if rc_src or rc_dst:
            sys.exit(f"mover failed: source {rc_src}, destination {rc_dst}\n{out.decode(errors='replace')}")
        summary = json.load(open(os.path.join(stmp, "summary.json")))
        peaks, split = sampler.done()
        return Run(wall, children_cpu() - cpu0, peaks, split, summary)

    def plain(self, src, dst, net=None, compress="none"):
        cpu0 = children_cpu()
        port = free_port()
        addr = net[2] if net else "127.0.0.1"
        wrap = lambda ns: ["ip", "netns", "exec", ns] if ns else []
        conf = os.path.join(self.root, "plain-rsyncd.conf")
        with open(conf, "w") as f:
            f.write(f"use chroot = false\nnumeric ids = true\nread only = false\nuid = 0\ngid = *\n[data]\npath = {dst}\n")
        sampler = Sampler()
        start = time.monotonic()
        daemon = subprocess.Popen(wrap(net and net[1]) + ["rsync", "--daemon", "--no-detach", f"--config={conf}",
                                                          f"--port={port}", f"--address={addr}"])
        sampler.roots.add(daemon.pid)
        while True:
            probe = subprocess.run(wrap(net and net[0]) + ["bash", "-c", f"exec 3<>/dev/tcp/{addr}/{port}"],
                                   stderr=subprocess.DEVNULL) if net else None
            if net and probe.returncode == 0:
                break
            if not net:
                try:
                    socket.create_connection((addr, port)).close()
                    break
                except OSError:
                    pass
            time.sleep(0.005)
        zflags = ["-z", "--compress-choice=zstd"] if compress == "zstd" else []
        client = subprocess.Popen(wrap(net and net[0]) + ["rsync", "-aAHSx", "--numeric-ids", "--stats"] + zflags +
                                  [src + "/", f"rsync://{addr}:{port}/data/"], stdout=subprocess.PIPE)
        sampler.roots.add(client.pid)
        out = client.stdout.read().decode()
        rc = client.wait()
        wall = time.monotonic() - start
        daemon.send_signal(signal.SIGTERM)
        daemon.wait()
        if rc:
            sys.exit(f"plain rsync failed: {rc}")
        num = lambda key: int(next(l for l in out.splitlines() if l.startswith(key)).split(":")[1].split()[0].replace(",", ""))
        summary = {"bytesSent": num("Total bytes sent"), "bytesReceived": num("Total bytes received")}
        peaks, split = sampler.done()
        return Run(wall, children_cpu() - cpu0, peaks, split, summary)


def wipe(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def med(xs):
    return statistics.median(xs)


def table(title, head, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    sys.stdout.flush()


def loopback(b, args, rng):
    src, dst = os.path.join(args.root, "src"), os.path.join(args.root, "dst")
    os.makedirs(src)
    for i in range(4):
        write_random(os.path.join(src, f"big-{i}.bin"), 200 * MB, rng)
    small = (1 << 30) - 800 * MB
    for d in range(20):
        os.makedirs(os.path.join(src, f"small-{d:02}"))
        for i in range(1000):
            write_random(os.path.join(src, f"small-{d:02}", f"f{i:04}"), small // 20000, rng)

    runs = {v: [] for v in VARIANTS}
    loads = []
    for n in range(args.runs):
        # Rotate the order so no variant always runs first.
        for v in VARIANTS[n % 3:] + VARIANTS[:n % 3]:
            wipe(dst)
            loads.append(float(loadavg()))
            runs[v].append(b.run(v, src, dst))
            r = runs[v][-1]
            log(f"full sync {n + 1} {v}: {r.wall:.2f}s wall, {r.cpu:.2f}s CPU, load {loadavg()}")
    t = {v: med([r.wall for r in runs[v]]) for v in VARIANTS}
    c = {v: med([r.cpu for r in runs[v]]) for v in VARIANTS}
    ratio = lambda v: med([p.wall / m.wall for p, m in zip(runs["plain"], runs[v])])
    table(f"Loopback full sync, 1 GiB (4 x 200 MB + 20,000 files), median of {args.runs} rotating runs, "
          f"load average {min(loads):.1f}-{max(loads):.1f}",
          ["", "time", "CPU (all processes)", "speed ratio to plain (median of per-run ratios)", "CPU ratio"],
          [[v, f"{t[v]:.2f} s", f"{c[v]:.2f} s", f"{ratio(v):.2f}", f"{c['plain'] / c[v]:.2f}"] for v in VARIANTS])
    progs = ["rsync", "stunnel", "ferrosync", "ferrosync connect"]
    rows = []
    for v in VARIANTS:
        split = {p: med([r.split.get(p, 0) for r in runs[v]]) for p in progs}
        rows.append([v] + [f"{split[p]:.2f} s" for p in progs])
    table("Where the full sync's CPU goes (median of the runs; sampled per process)",
          ["", "rsync", "stunnel", "ferrosync (mover, destination tunnel)", "ferrosync connect (source tunnel)"],
          rows)
    # The tunnel's own CPU: the built-in run's ferrosync processes minus the movers' own
    # work, which is what ferrosync costs in the stunnel run (starting passes, reading
    # rsync's output); against the stunnel pair.
    own = med([r.split.get("ferrosync", 0) for r in runs["stunnel"]])
    builtin = med([r.split.get("ferrosync", 0) + r.split.get("ferrosync connect", 0) for r in runs["builtin"]])
    pair = med([r.split.get("stunnel", 0) for r in runs["stunnel"]])
    tunnel = max(builtin - own, 0.0)
    target("Loopback full sync, time of plain / time of the mover", ">= 0.85", f"{ratio('builtin'):.2f} "
           f"(stunnel {ratio('stunnel'):.2f}; CPU ratio {c['plain'] / c['builtin']:.2f})", ratio("builtin") >= 0.85)
    if pair > 0 and builtin > 0:
        target("Tunnel CPU / stunnel pair's CPU (full sync)", "<= 0.50",
               f"{tunnel / pair:.2f} ({tunnel:.2f} s against {pair:.2f} s)", tunnel / pair <= 0.5)
    return src, dst


def delta(b, args, rng):
    """Bytes on the wire for the same change of a 200 MB file, under each block rule and
    compression. The tree holds only that file, so no other file's list entry counts."""
    src, dst = os.path.join(args.root, "delta-src"), os.path.join(args.root, "delta-dst")
    wipe(src)
    wipe(dst)
    name = "data.bin"
    write_random(os.path.join(src, name), 200 * MB, rng)
    b.run("builtin", src, dst)
    pristine = os.path.join(args.root, "pristine.bin")
    shutil.copy2(os.path.join(dst, name), pristine)
    original = os.path.join(args.root, "original.bin")
    shutil.copy2(os.path.join(src, name), original)
    configs = [("rsync's own (RSYNC_BLOCK_SIZE=rsync)", {"RSYNC_BLOCK_SIZE": "rsync"}),
               ("auto, the default (2,048 B here)", {}),
               ("auto, RSYNC_COMPRESS=zstd", {"RSYNC_COMPRESS": "zstd"})]
    if args.quick:
        configs = configs[:2]
    for size in [] if args.quick else args.block_sizes:
        configs.append((f"RSYNC_BLOCK_SIZE={size}", {"RSYNC_BLOCK_SIZE": str(size)}))
    rows = []
    for label, change in [
        ("1% contiguous (2 MB at one place)",
         lambda f: (f.seek(rng.randrange(0, 190 * MB)), f.write(rng.randbytes(2 * MB)))),
        ("1% scattered (1,000 x 2,000 B)",
         lambda f: [(f.seek(k * 200 * 1000 + rng.randrange(0, 198000)), f.write(rng.randbytes(2000)))
                    for k in range(1000)]),
    ]:
        shutil.copy2(original, os.path.join(src, name))
        with open(os.path.join(src, name), "r+b") as f:
            change(f)
        for clabel, env in configs:
            shutil.copy2(pristine, os.path.join(dst, name))
            r = b.run("builtin", src, dst, **env)
            s = r.summary
            rows.append([label, clabel, f"{s['bytesSent']:,}", f"{s['bytesReceived']:,}",
                         f"{r.wire() / (2 * MB):.2f} x", f"{s['bytesSent'] / (2 * MB):.2f} x"])
            if env == {}:
                both, sent = r.wire() / (2 * MB), s["bytesSent"] / (2 * MB)
                if label.startswith("1% scattered"):
                    target("Scattered change (1,000 x 2,000 B in 200 MB): wire bytes both ways / changed",
                           "<= 3", f"{both:.2f} x", both <= 3)
                else:
                    target("1% contiguous change: wire bytes / changed", "<= 1.25",
                           f"{sent:.2f} x sent, {both:.2f} x both ways", sent <= 1.25)
            log(f"{label} {clabel}: {r.wire():,} B")
    table("Changed bytes on the wire: a 200 MB file, 2,000,000 B changed (whole mover run: both passes and "
          "the control upload)",
          ["change", "block size", "sent (data, tokens)", "received (checksums)",
           "both ways / changed", "sent / changed"], rows)
    shutil.rmtree(src)
    shutil.rmtree(dst)


def incremental(b, args, rng, src, dst):
    rows = {v: [] for v in VARIANTS}
    for n in range(args.runs):
        for v in VARIANTS:
            write_random(os.path.join(src, "small-07", "f0123"), 4096, rng)
            rows[v].append(b.run(v, src, dst))
    table(f"Small incremental: one 4 KiB file changed in the 1 GiB tree, end to end, median of {args.runs}, "
          f"load average {loadavg()}",
          ["", "time", "CPU", "bytes both ways"],
          [[v, f"{med([r.wall for r in rows[v]]):.2f} s", f"{med([r.cpu for r in rows[v]]):.2f} s",
            f"{rows[v][-1].wire():,}"] for v in VARIANTS])
    t = med([r.wall for r in rows["builtin"]])
    target("Small incremental (one 4 KiB file in the 1 GiB tree), end to end", "<= 0.5 s",
           f"{t:.2f} s (plain rsync {med([r.wall for r in rows['plain']]):.2f} s; "
           f"CPU {med([r.cpu for r in rows['builtin']]):.2f} s)", t <= 0.5)


def many_files(b, args, rng):
    src = os.path.join(args.root, "src100k")
    dst = os.path.join(args.root, "dst")
    for d in range(100):
        os.makedirs(os.path.join(src, f"d{d:02}"))
        for i in range(1000):
            with open(os.path.join(src, f"d{d:02}", f"f{i:04}"), "wb") as f:
                f.write(rng.randbytes(1024))
    runs = {v: [] for v in VARIANTS}
    for n in range(args.runs):
        for v in VARIANTS[n % 3:] + VARIANTS[:n % 3]:
            wipe(dst)
            runs[v].append(b.run(v, src, dst))
            log(f"100k files {n + 1} {v}: {runs[v][-1].wall:.2f}s")
    mem = lambda r, name: f"{r.peaks.get(name, 0) / 1024:.1f} MiB"
    table(f"100,000 files of 1 KiB, median of {args.runs} rotating runs, load average {loadavg()}",
          ["", "time", "CPU", "speed ratio to plain", "peak RSS ferrosync", "peak RSS rsync", "peak RSS stunnel"],
          [[v, f"{med([r.wall for r in runs[v]]):.2f} s", f"{med([r.cpu for r in runs[v]]):.2f} s",
            f"{med([p.wall / m.wall for p, m in zip(runs['plain'], runs[v])]):.2f}",
            mem(runs[v][-1], "ferrosync"), mem(runs[v][-1], "rsync"), mem(runs[v][-1], "stunnel")]
           for v in VARIANTS])
    r = med([p.wall / m.wall for p, m in zip(runs["plain"], runs["builtin"])])
    target("100,000 files of 1 KiB, time of plain / time of the mover", ">= 0.85", f"{r:.2f}", r >= 0.85)
    shutil.rmtree(src)


class Wan:
    """Two network namespaces joined by a veth pair, each direction shaped by tbf."""

    def __init__(self, rate_mbit):
        self.src_ns, self.dst_ns, self.rate = "fsbench-src", "fsbench-dst", rate_mbit
        self.down()
        sh = lambda *a: subprocess.run(list(a), check=True)
        sh("ip", "netns", "add", self.src_ns)
        sh("ip", "netns", "add", self.dst_ns)
        sh("ip", "link", "add", "fsb-s", "netns", self.src_ns, "type", "veth", "peer", "name", "fsb-d",
           "netns", self.dst_ns)
        for ns, dev, ip in [(self.src_ns, "fsb-s", "10.77.0.1/24"), (self.dst_ns, "fsb-d", "10.77.0.2/24")]:
            sh("ip", "-n", ns, "addr", "add", ip, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # The burst must cover a timer tick's worth at this rate, or tbf undershoots it.
            sh("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{rate_mbit}mbit",
               "burst", "256kb", "latency", "100ms")
        self.net = (self.src_ns, self.dst_ns, "10.77.0.2")

    def frames(self):
        """Bytes each direction's tbf has sent so far: whole frames as the link carries them
        (Ethernet, IP and TCP headers included), which is what its rate limits."""
        out = {}
        for ns, dev in [(self.src_ns, "fsb-s"), (self.dst_ns, "fsb-d")]:
            text = subprocess.run(["tc", "-n", ns, "-s", "qdisc", "show", "dev", dev], check=True,
                                  capture_output=True, text=True).stdout
            out[ns] = int(text.split(" Sent ", 1)[1].split()[0])
        return out

    def down(self):
        for ns in ["fsbench-src", "fsbench-dst"]:
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def wan(b, args, rng):
    w = Wan(args.wan_rate)
    try:
        link = args.wan_rate * 1e6 / 8
        results, times = [], {}
        for kind, writer in [("incompressible", write_random), ("database-like", write_dblike)]:
            src, dst = os.path.join(args.root, "wan-src"), os.path.join(args.root, "wan-dst")
            wipe(src)
            for i in range(4):
                writer(os.path.join(src, f"part-{i}.bin"), 50 * MB, rng)
            data = 200 * MB
            cell = {}
            pairs = [(v, comp) for v in VARIANTS for comp in ["none", "zstd"]]
            if args.quick:
                pairs = [("plain", "none"), ("builtin", "none" if kind == "incompressible" else "zstd")]
            for rep in range(args.wan_runs):
                for v, comp in pairs:
                    wipe(dst)
                    before = w.frames()
                    full = b.run(v, src, dst, w.net, comp)
                    after = w.frames()
                    # The busier direction: the data's.
                    full.frames = max(after[k] - before[k] for k in after)
                    # The 1% change: 2 MB of the destination's copy differ from the source.
                    with open(os.path.join(dst, "part-1.bin"), "r+b") as f:
                        f.seek(20 * MB)
                        f.write(rng.randbytes(2 * MB))
                    os.utime(os.path.join(dst, "part-1.bin"), (1, 1))
                    inc = b.run(v, src, dst, w.net, comp)
                    cell.setdefault((v, comp), []).append((full, inc, float(loadavg())))
                    log(f"WAN {kind} {rep + 1} {v} {comp}: full {full.wall:.2f}s ({full.frames / full.wall / link:.1%} of link, "
                        f"rsync's bytes {full.wire() / full.wall / link:.1%}), 1% {inc.wall:.2f}s, load {loadavg()}")
            for (v, comp), rs in cell.items():
                fw = med([f.wall for f, _, _ in rs])
                fwire = med([f.wire() for f, _, _ in rs])
                iw = med([i.wall for _, i, _ in rs])
                iwire = med([i.wire() for _, i, _ in rs])
                use = med([f.frames / f.wall / link for f, _, _ in rs])
                results.append([kind, v, comp, f"{fw:.2f} s", f"{use:.1%}",
                                f"{med([f.wire() / f.wall / link for f, _, _ in rs]):.1%}",
                                f"{data / fw / 1e6:.1f} MB/s", f"{fwire / 1e6:.1f} MB",
                                f"{iw:.2f} s", f"{iwire / 1e6:.2f} MB",
                                f"{min(l for _, _, l in rs):.1f}-{max(l for _, _, l in rs):.1f}"])
                if kind == "incompressible" and v == "builtin" and comp == "none":
                    target("WAN, incompressible: the link's rate used by the mover (frames / time / rate)", ">= 95%",
                           f"{use:.1%}", use >= 0.95)
                times[(kind, v, comp)] = fw
            if ("database-like", "builtin", "zstd") in times:
                z, p = times[("database-like", "builtin", "zstd")], times[("database-like", "plain", "none")]
                target("WAN, database-like: mover with zstd vs plain rsync without compression", "faster",
                       f"{z:.2f} s against {p:.2f} s", z < p)
        table(f"Emulated WAN: {args.wan_rate} Mbit/s each way (veth + tbf, no added latency), 200 MB "
              f"(4 x 50 MB), median of {args.wan_runs}",
              ["data", "", "compression", "full sync", "link use (frames on the link / time / rate)",
               "rsync's bytes / time / rate", "data rate",
               "wire bytes", "1% change (2 MB)", "1% wire bytes", "load average"], results)
    finally:
        w.down()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--wan-runs", type=int, default=3)
    ap.add_argument("--wan-rate", type=int, default=100)
    ap.add_argument("--block-sizes", type=int, nargs="*", default=[1024, 1536, 3072, 4096, 8192])
    ap.add_argument("--sections", default="loopback,incremental,delta,files,wan")
    ap.add_argument("--root", default="/dev/shm/ferrosync-bench")
    ap.add_argument("--quick", action="store_true",
                    help="the side-by-side set in about 5 minutes on an idle 2-core host: loopback full sync, "
                         "small incremental, 1%% contiguous and scattered change (default block rule only), "
                         "100,000 files, and a WAN full sync per data kind (one repetition)")
    args = ap.parse_args()
    if args.quick:
        args.wan_runs = 1
    sections = args.sections.split(",")
    started = time.monotonic()
    become_subreaper()
    shutil.rmtree(args.root, ignore_errors=True)
    os.makedirs(args.root)
    b = Bench(args.bin, args.root)
    rng = random.Random(1)
    print(f"Host: {os.cpu_count()} CPUs, load average at start {loadavg()}")
    if "delta" in sections:
        delta(b, args, rng)
    if {"loopback", "incremental"} & set(sections):
        src, dst = loopback(b, args, rng)
        if "incremental" in sections:
            incremental(b, args, rng, src, dst)
        shutil.rmtree(src)
    if "files" in sections:
        many_files(b, args, rng)
    if "wan" in sections:
        wan(b, args, rng)
    shutil.rmtree(args.root, ignore_errors=True)
    table(f"Targets of issue 15 (this run; load average at the end {loadavg()})",
          ["target", "goal", "measured", ""], TARGETS)
    log(f"bench took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
