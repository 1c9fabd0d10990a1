#!/usr/bin/env python3
"""Fault injection in the manner of Jepsen: `atoll` nodes in their own
network namespaces, a workload of keyed, retried writes and concurrent
queries, a randomized schedule of faults (link cuts, one-way cuts, packet
loss, pauses, kills with and without data, a full disk, clock skew, a join
and a leave), then healing and a checker that reads the final state.

Run as root (namespaces, nftables, tmpfs): `scripts/chaos --schedules N
--seed S`. Every schedule is derived from the seed, which is printed: a
failure is replayed with `--seed S --only K`. The last line is one JSON
object with the totals; the exit status is non-zero on any lost or
duplicated acknowledged event, any wrong full answer, or any crash.
See docs/reliability.md.
"""

import argparse
import heapq
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

SUBNET = "10.77"
HTTP, FLIGHT, GOSSIP = 7070, 7071, 7072
DOWN_AFTER_S = 10  # the node's gossip failure timeout (MembershipConfig)
TABLE = "chaos"
# A query may miss writes acknowledged in the first moments after a link
# is cut, or while gossip is lossy (docs/reliability.md): until the
# cut-off node's silence passes `Membership::deaf` (1 s), and a report of
# a missed write takes a gossip round (more under loss) from its relay.
CUT_WINDOW = 1.5


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


def sh(*cmd, check=True, quiet=False):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    if not quiet and r.returncode != 0:
        log(f"(ignored) {' '.join(cmd)}: {r.stderr.strip()}")
    return r


# ---------------------------------------------------------------- network


def enter_netns(name):
    """Moves this process's main thread (and so the threads and processes
    it starts afterwards) into a named network namespace."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), f"setns into {name}")
    os.close(fd)


def clear_stale_faketime():
    """Removes what killed `faketime` wrappers left in /dev/shm.

    The wrapper names a shared-memory file and a semaphore after its pid
    and removes them when it exits, but not when SIGKILLed (as a killed
    node's is); once the pid comes round again, `sem_open` finds the old
    one and the wrapper exits 1 ("sem_open: File exists"): a run on a
    machine that had run the harness before failed so."""
    for name in os.listdir("/dev/shm"):
        for prefix in ("faketime_shm_", "sem.faketime_sem_"):
            pid = name[len(prefix):] if name.startswith(prefix) else ""
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                try:
                    os.unlink(os.path.join("/dev/shm", name))
                except OSError:
                    pass


class NetnsNet:
    """The driver's own namespace (`ctl`, entered once: its clients live
    there) holds a bridge; each node gets a namespace with a veth into it.
    Nothing is added to the host's own network. Any link can be cut, in
    either direction."""

    mode = "netns"
    faults = {"isolate", "bridge", "one_way", "loss", "pause", "kill", "kill_wipe",
              "disk_full", "clock_skew", "join_leave"}
    tmpfs = True

    def __init__(self, tag, schedule, count):
        self.tag = tag
        self.count = count
        self.nodes = [f"{tag}-s{schedule}n{i}" for i in range(count)]
        self.veths = [f"vs{schedule}n{i}" for i in range(count)]
        self.rules = set()

    def addr(self, i):
        return f"{SUBNET}.0.{10 + i}"

    def http(self, i):
        return f"{self.addr(i)}:{HTTP}"

    def prefix(self, i):
        return ["ip", "netns", "exec", self.nodes[i]]

    def node_args(self, i):
        a = self.addr(i)
        return ["--http-addr", f"{a}:{HTTP}", "--flight-addr", f"{a}:{FLIGHT}",
                "--gossip-addr", f"{a}:{GOSSIP}"]

    def seed(self, j):
        return f"{self.addr(j)}:{GOSSIP}"

    def isolate(self, x):
        for o in range(self.count):
            if o != x:
                self.cut(x, o)
                self.cut(o, x)

    def loss(self, pct, nodes):
        for a in nodes:
            for b in nodes:
                if a != b:
                    self.cut(a, b, loss=pct)

    @staticmethod
    def control(tag):
        """Creates the driver's namespace with the bridge, and enters it."""
        ctl = f"{tag}-ctl"
        sh("ip", "netns", "add", ctl)
        enter_netns(ctl)
        sh("ip", "link", "set", "lo", "up")
        sh("ip", "link", "add", "br0", "type", "bridge")
        sh("ip", "addr", "add", f"{SUBNET}.0.1/24", "dev", "br0")
        sh("ip", "link", "set", "br0", "up")
        return ctl

    def up(self):
        for i, ns in enumerate(self.nodes):
            sh("ip", "netns", "add", ns)
            host_end = self.veths[i]
            sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", host_end, "master", "br0")
            sh("ip", "link", "set", host_end, "up")
            self.node_exec(i, "ip", "link", "set", "lo", "up")
            self.node_exec(i, "ip", "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            self.node_exec(i, "ip", "link", "set", "eth0", "up")
            # One table per node for the faults: input only, so that a
            # cut from A at B is "B does not hear A".
            self.node_exec(i, "nft", "add", "table", "inet", "chaos")
            self.node_exec(i, "nft", "add", "chain", "inet", "chaos", "input",
                           "{ type filter hook input priority 0 ; policy accept ; }")

    def node_exec(self, i, *cmd, check=True):
        return sh("ip", "netns", "exec", self.nodes[i], *cmd, check=check)

    def cut(self, src, dst, loss=None):
        """`dst` stops hearing `src` (or drops `loss`% of it)."""
        rule = ["ip", "saddr", self.addr(src)]
        if loss is not None:
            rule += ["numgen", "random", "mod", "100", "<", str(loss)]
        self.node_exec(dst, "nft", "add", "rule", "inet", "chaos", "input", *rule, "drop")
        self.rules.add(dst)

    def heal(self):
        for i in list(self.rules):
            self.node_exec(i, "nft", "flush", "chain", "inet", "chaos", "input", check=False)
        self.rules.clear()

    def down(self):
        for v in self.veths:
            sh("ip", "link", "del", v, check=False, quiet=True)
        for ns in self.nodes:
            sh("ip", "netns", "del", ns, check=False, quiet=True)


class LoopbackNet:
    """Without namespaces (no root): every node on 127.0.0.1, its gossip
    and Flight reached through userspace proxies that it advertises
    (`--gossip-advertise-addr`, `--flight-advertise-addr`). A proxy knows
    which node a gossip datagram comes from (its source port), but not who
    opened a Flight connection: a node can be cut off from all others
    (gossip both ways, Flight into it), not on single links. The proxies
    also delay and reorder: the faults a kernel without `netem` cannot."""

    mode = "loopback"
    faults = {"isolate", "loss", "delay", "pause", "kill", "kill_wipe", "clock_skew",
              "join_leave"}
    tmpfs = False

    def __init__(self, tag, schedule, count):
        self.count = count
        self.base = free_port_block(count * 10)
        self.lock = threading.Lock()
        self.isolated = set()
        self.loss_pct = 0
        self.delay_ms = {}  # node -> (base, jitter) on what it receives
        self.stop = threading.Event()
        self.proxies = []
        self.later = Later(self.stop)

    def port(self, i, k):
        """k: 0 HTTP, 1 Flight, 2 gossip, 3 Flight proxy, 4 gossip proxy."""
        return self.base + 10 * i + k

    def http(self, i):
        return f"127.0.0.1:{self.port(i, 0)}"

    def prefix(self, i):
        return []

    def node_args(self, i):
        return ["--http-addr", self.http(i),
                "--flight-addr", f"127.0.0.1:{self.port(i, 1)}",
                "--gossip-addr", f"127.0.0.1:{self.port(i, 2)}",
                "--flight-advertise-addr", f"127.0.0.1:{self.port(i, 3)}",
                "--gossip-advertise-addr", f"127.0.0.1:{self.port(i, 4)}"]

    def seed(self, j):
        return f"127.0.0.1:{self.port(j, 4)}"

    def up(self):
        for i in range(self.count):
            self.proxies.append(UdpProxy(self, i))
            self.proxies.append(TcpProxy(self, i))
        for p in self.proxies:
            p.start()

    def node_of(self, port):
        """The node whose gossip socket has this port."""
        i, k = divmod(port - self.base, 10)
        return i if k == 2 and 0 <= i < self.count else None

    def cut_off(self, i):
        with self.lock:
            return i in self.isolated

    def dropped(self, src, dst):
        """Whether a datagram from node `src` to node `dst` is lost."""
        with self.lock:
            if src in self.isolated or dst in self.isolated:
                return True
            return random.random() * 100 < self.loss_pct

    def delay_of(self, dst):
        with self.lock:
            base, jitter = self.delay_ms.get(dst, (0, 0))
        return (base + random.random() * jitter) / 1000

    def isolate(self, x):
        with self.lock:
            self.isolated.add(x)
        for p in self.proxies:
            if p.node == x and isinstance(p, TcpProxy):
                p.cut_all()

    def loss(self, pct, nodes):
        with self.lock:
            self.loss_pct = pct

    def delay(self, nodes, base, jitter):
        with self.lock:
            for n in nodes:
                self.delay_ms[n] = (base, jitter)

    def heal(self):
        with self.lock:
            self.isolated.clear()
            self.loss_pct = 0
            self.delay_ms.clear()

    def down(self):
        self.stop.set()
        for p in self.proxies:
            p.close()
        for p in self.proxies:
            p.join(5)


def free_port_block(size):
    """The first port of `size` consecutive free ones (TCP and UDP)."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - size)
        socks = []
        try:
            for port in range(base, base + size):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports on 127.0.0.1")


class Later(threading.Thread):
    """Runs calls after a delay, in time order: delayed datagrams that
    overtake one another arrive reordered."""

    def __init__(self, stop):
        super().__init__(daemon=True)
        self.stop = stop
        self.cv = threading.Condition()
        self.heap = []
        self.seq = 0
        self.start()

    def call(self, delay, fn, *args):
        if delay <= 0:
            try:
                fn(*args)
            except OSError:
                pass
            return
        with self.cv:
            self.seq += 1
            heapq.heappush(self.heap, (time.time() + delay, self.seq, fn, args))
            self.cv.notify()

    def run(self):
        while not self.stop.is_set():
            with self.cv:
                while not self.heap or self.heap[0][0] > time.time():
                    wait = self.heap[0][0] - time.time() if self.heap else 0.2
                    self.cv.wait(min(0.2, max(0.0, wait)))
                    if self.stop.is_set():
                        return
                _, _, fn, args = heapq.heappop(self.heap)
            try:
                fn(*args)
            except OSError:
                pass


class UdpProxy(threading.Thread):
    """Gossip into node `i`: one upstream socket per sender (as a NAT
    does), so that the node's replies find their way back."""

    def __init__(self, net, i):
        super().__init__(daemon=True)
        self.net, self.node = net, i
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", net.port(i, 4)))
        self.sock.settimeout(0.2)
        self.target = ("127.0.0.1", net.port(i, 2))
        self.upstream = {}

    def run(self):
        while not self.net.stop.is_set():
            try:
                data, src = self.sock.recvfrom(65536)
            except (socket.timeout, OSError):
                continue
            sender = self.net.node_of(src[1])
            if self.net.dropped(sender, self.node):
                continue
            up = self.upstream.get(src)
            if up is None:
                up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                up.bind(("127.0.0.1", 0))
                up.settimeout(0.2)
                self.upstream[src] = up
                threading.Thread(target=self.replies, args=(up, src, sender),
                                 daemon=True).start()
            self.net.later.call(self.net.delay_of(self.node), up.sendto, data, self.target)

    def replies(self, up, src, sender):
        while not self.net.stop.is_set():
            try:
                data = up.recv(65536)
            except (socket.timeout, OSError):
                continue
            if self.net.dropped(self.node, sender):
                continue
            self.net.later.call(self.net.delay_of(sender) if sender is not None else 0,
                                self.sock.sendto, data, src)

    def close(self):
        self.sock.close()
        for up in self.upstream.values():
            up.close()


class TcpProxy(threading.Thread):
    """Flight into node `i`. Cut off, it refuses connections and closes
    the open ones; under loss it resets a connection now and then; under
    delay every chunk waits (in order: TCP does not reorder)."""

    def __init__(self, net, i):
        super().__init__(daemon=True)
        self.net, self.node = net, i
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", net.port(i, 3)))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.target = ("127.0.0.1", net.port(i, 1))
        self.open = set()
        self.lock = threading.Lock()

    def run(self):
        while not self.net.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            if self.net.cut_off(self.node):
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            pair = (client, server)
            with self.lock:
                self.open.add(pair)
            for a, b, dst in ((client, server, self.node), (server, client, None)):
                threading.Thread(target=self.pump, args=(a, b, dst, pair), daemon=True).start()

    def pump(self, a, b, dst, pair):
        try:
            a.settimeout(None)
            while True:
                data = a.recv(65536)
                if not data:
                    break
                if self.net.cut_off(self.node):
                    break
                if self.net.loss_pct and random.random() * 100 < self.net.loss_pct / 20:
                    break
                if dst is not None:
                    wait = self.net.delay_of(dst)
                    if wait:
                        time.sleep(wait)
                b.sendall(data)
        except OSError:
            pass
        self.drop(pair)

    def drop(self, pair):
        with self.lock:
            self.open.discard(pair)
        for s in pair:
            try:
                s.close()
            except OSError:
                pass

    def cut_all(self):
        with self.lock:
            pairs = list(self.open)
        for pair in pairs:
            self.drop(pair)

    def close(self):
        self.listener.close()
        self.cut_all()


# ---------------------------------------------------------------- HTTP


def request(host, method, path, body=None, headers=None, timeout=5.0):
    """(status, parsed JSON or text) from HOST:PORT; status None on a
    connection error or timeout."""
    try:
        c = http.client.HTTPConnection(host, timeout=timeout)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data.decode(errors="replace")
    except (OSError, http.client.HTTPException) as e:
        return None, str(e)


def query(host, sql, timeout=8.0, partial=True):
    body = json.dumps({"sql": sql, "allow_partial": partial, "timeout_ms": int(timeout * 1000)})
    return request(host, "POST", "/v1/query", body, {"Content-Type": "application/json"},
                   timeout=timeout + 2)


# ---------------------------------------------------------------- nodes


class Cluster:
    def __init__(self, net, atoll, workdir, count, secret):
        self.net = net
        self.atoll = atoll
        self.workdir = workdir
        self.secret = secret
        self.procs = {}
        self.expected_exit = set()
        self.members = set(range(count))
        self.skew = {}  # the skew of a node's next start
        self.running_skew = {}  # the skew each running node started with
        self.crashes = []
        self.cuts = []  # [from, to]: when links were cut, or lossy

    def cut_recently(self, t):
        return any(start <= t <= end + CUT_WINDOW for start, end in self.cuts)

    def data_dir(self, i):
        return os.path.join(self.workdir, f"n{i}")

    def mount(self, i):
        """The node's data dir: a small tmpfs where one can be mounted (a
        full disk is then a fault), else a plain directory."""
        d = self.data_dir(i)
        os.makedirs(d, exist_ok=True)
        if self.net.tmpfs:
            sh("mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", d)
        os.makedirs(os.path.join(d, "atoll"), exist_ok=True)

    def start(self, i, seed=True):
        cmd = self.net.prefix(i)
        self.running_skew[i] = self.skew.get(i, 0)
        if self.skew.get(i):
            clear_stale_faketime()
            cmd += ["faketime", "-f", f"{self.skew[i]:+d}s"]
        cmd += [self.atoll, "serve", "--node-name", f"n{i}", *self.net.node_args(i),
                "--gossip-interval-ms", "100",
                "--cluster-secret", self.secret, "--insecure-no-auth",
                "--data-dir", os.path.join(self.data_dir(i), "atoll"),
                "--memory-limit", "512MiB", "--max-result-rows", "1000000",
                "--log", os.environ.get("CHAOS_NODE_LOG", "warn")]
        # Every node but a founder's first start seeds from the others: a
        # restarted founder rejoins its ring instead of founding a new one.
        if seed:
            for j in sorted(self.members):
                if j != i:
                    cmd += ["--seed", self.net.seed(j)]
        out = open(os.path.join(self.workdir, f"n{i}.log"), "ab")
        # A process group of its own: signals reach the node itself, not
        # only a wrapper (`faketime` runs it as a child).
        self.procs[i] = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)
        self.expected_exit.discard(i)

    def wait_http(self, i, bound=30):
        deadline = time.time() + bound
        while time.time() < deadline:
            status, _ = request(self.net.http(i), "GET", "/healthz", timeout=1)
            if status is not None:
                return
            if self.procs[i].poll() is not None:
                raise RuntimeError(f"n{i} exited ({self.procs[i].returncode}) while starting")
            time.sleep(0.1)
        raise RuntimeError(f"n{i} did not answer within {bound} s")

    def signal(self, i, sig):
        p = self.procs.get(i)
        if p and p.poll() is None:
            os.killpg(p.pid, sig)

    def kill(self, i):
        self.expected_exit.add(i)
        self.signal(i, signal.SIGKILL)
        if i in self.procs:
            self.procs[i].wait()

    def check_crashes(self):
        for i, p in self.procs.items():
            code = p.poll()
            if code is not None and i not in self.expected_exit:
                self.crashes.append(f"n{i} exited with {code}")
                self.expected_exit.add(i)

    def stop_all(self):
        for i, p in self.procs.items():
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            p.wait()
        for i in range(self.net.count):
            if self.net.tmpfs:
                sh("umount", "-l", self.data_dir(i), check=False, quiet=True)


# ---------------------------------------------------------------- workload


class Workload:
    """Clients writing unique ids with Idempotency-Keys, retrying through
    random nodes until acknowledged; a reader counting concurrently."""

    def __init__(self, cluster, rng_seed, clients=3, batch=25):
        self.cluster = cluster
        self.rng = random.Random(rng_seed)
        self.lock = threading.Lock()
        self.sent = set()
        self.acked = set()
        self.acked_order = []  # (time acknowledged, ids)
        self.stale_after_cut = []
        self.stop_new = threading.Event()
        self.give_up = threading.Event()
        self.clients = clients
        self.batch = batch
        self.queries = {"full": 0, "partial": 0, "failed": 0}
        self.wrong = []
        self.requests = {"ok": 0, "retried": 0}
        self.threads = []

    def hosts(self):
        return [self.cluster.net.http(i) for i in sorted(self.cluster.members)]

    def writer(self, c):
        rng = random.Random(self.rng.random())
        seq = 0
        while not self.stop_new.is_set():
            seq += 1
            ids = [f"c{c}-{seq}-{k}" for k in range(self.batch)]
            body = "\n".join(json.dumps({"id": i, "client": c, "v": rng.random()}) for i in ids)
            key = uuid.uuid4().hex
            with self.lock:
                self.sent.update(ids)
            while not self.give_up.is_set():
                host = rng.choice(self.hosts())
                status, answer = request(host, "POST", f"/v1/tables/{TABLE}/events", body,
                                         {"Content-Type": "application/x-ndjson",
                                          "Idempotency-Key": key}, timeout=4)
                if status == 200 and isinstance(answer, dict) and answer.get("accepted") == len(ids):
                    with self.lock:
                        self.acked.update(ids)
                        self.acked_order.append((time.time(), len(ids)))
                        self.requests["ok"] += 1
                    break
                with self.lock:
                    self.requests["retried"] += 1
                time.sleep(0.2 + rng.random() * 0.3)

    def reader(self):
        """Counts, and every other time reads every id: a full answer holds
        every id acknowledged before it started, once, and nothing never
        sent. A full answer short of ids acknowledged in the first
        `CUT_WINDOW` s after a link was cut or a paused node resumed is
        counted apart (the window docs/reliability.md documents); any other
        is wrong."""
        rng = random.Random(self.rng.random())
        ids_query = False
        while not self.stop_new.is_set():
            ids_query = not ids_query
            started = time.time()
            with self.lock:
                acked_before = set(self.acked) if ids_query else None
                acked_count = len(self.acked)
            host = rng.choice(self.hosts())
            sql = f"SELECT id FROM {TABLE}" if ids_query else \
                f"SELECT count(*) AS n, count(DISTINCT id) AS d FROM {TABLE}"
            status, answer = query(host, sql)
            with self.lock:
                sent_after = set(self.sent) if ids_query else None
                sent_count = len(self.sent)
            if status == 200 and isinstance(answer, dict):
                if answer["stats"]["coverage"] < 1.0:
                    self.queries["partial"] += 1
                    time.sleep(0.3)
                    continue
                self.queries["full"] += 1
                if ids_query:
                    ids = [r[0] for r in answer["rows"]]
                    got = set(ids)
                    short = len(acked_before - got)
                    extra = len(got - sent_after) + len(ids) - len(got)
                else:
                    n, d = answer["rows"][0]
                    short = max(0, acked_count - n)
                    extra = max(0, n - sent_count) + n - d
                if short or extra:
                    seen = {"at": time.strftime("%H:%M:%S", time.localtime(started)),
                            "host": host, "ids" if ids_query else "count": True,
                            "short": short, "extra": extra}
                    if not extra and self.cluster.cut_recently(started):
                        self.stale_after_cut.append(seen)
                    else:
                        self.wrong.append(seen)
            elif status == 404 or (isinstance(answer, dict) and "not found" in str(answer.get("error", ""))):
                pass  # no event stored yet: the table does not exist
            else:
                self.queries["failed"] += 1
            time.sleep(0.3)

    def start(self):
        for c in range(self.clients):
            t = threading.Thread(target=self.writer, args=(c,), daemon=True)
            t.start()
            self.threads.append(t)
        t = threading.Thread(target=self.reader, daemon=True)
        t.start()
        self.threads.append(t)

    def finish(self, bound):
        """Stops new writes; lets those in flight be retried for `bound` s."""
        self.stop_new.set()
        deadline = time.time() + bound
        for t in self.threads:
            t.join(max(0.1, deadline - time.time()))
        self.give_up.set()
        for t in self.threads:
            t.join(5)


# ---------------------------------------------------------------- faults


FAULTS = ["isolate", "bridge", "one_way", "loss", "delay", "pause", "kill", "kill_wipe",
          "disk_full", "clock_skew", "join_leave"]


class Nemesis:
    def __init__(self, cluster, rng, counts):
        self.c = cluster
        self.net = cluster.net
        self.rng = rng
        self.counts = counts
        self.healing = []

    def nodes(self):
        return sorted(self.c.members)

    def apply(self, fault):
        nodes = self.nodes()
        x = self.rng.choice(nodes)
        others = [n for n in nodes if n != x]
        self.counts[fault] = self.counts.get(fault, 0) + 1
        if fault in ("isolate", "bridge", "one_way"):
            now = time.time()
            self.c.cuts.append([now, now])
        if fault == "loss":
            # Lost gossip delays the reports of missed writes for as long
            # as the loss lasts: the window spans it.
            span = [time.time(), float("inf")]
            self.c.cuts.append(span)
            self.healing.append(lambda: span.__setitem__(1, time.time()))
        if fault == "isolate":
            self.net.isolate(x)
            return f"n{x} cut off from {others}"
        if fault == "bridge":
            a, b = self.rng.sample(others, 2) if len(others) >= 2 else (others[0], x)
            self.net.cut(a, b)
            self.net.cut(b, a)
            return f"n{a} and n{b} cut apart; n{x} sees both"
        if fault == "one_way":
            o = self.rng.choice(others)
            self.net.cut(x, o)
            return f"n{o} stops hearing n{x}"
        if fault == "loss":
            pct = self.rng.choice([20, 40])
            self.net.loss(pct, nodes)
            return f"{pct}% loss between every pair"
        if fault == "delay":
            base, jitter = self.rng.choice([(20, 80), (100, 200), (300, 600)])
            hit = nodes if self.rng.random() < 0.5 else [x]
            self.net.delay(hit, base, jitter)
            return f"{base}-{base + jitter} ms delay (reordered) into {['n%d' % n for n in hit]}"
        if fault == "pause":
            self.c.signal(x, signal.SIGSTOP)

            def resume():
                # A resumed node is read again as soon as others see it up,
                # before a third node's reports of the writes it missed in
                # its last moments arrive: the window opens here too.
                now = time.time()
                self.c.cuts.append([now, now])
                self.c.signal(x, signal.SIGCONT)

            self.healing.append(resume)
            return f"n{x} paused (SIGSTOP)"
        if fault in ("kill", "kill_wipe"):
            self.c.kill(x)
            wipe = fault == "kill_wipe"
            if wipe:
                d = os.path.join(self.c.data_dir(x), "atoll")
                shutil.rmtree(d, ignore_errors=True)
                os.makedirs(d, exist_ok=True)
            self.healing.append(lambda: self.c.start(x))
            return f"n{x} killed (-9){' and its data wiped' if wipe else ''}"
        if fault == "disk_full":
            filler = os.path.join(self.c.data_dir(x), "filler")
            subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=200"],
                           capture_output=True)
            self.healing.append(lambda: os.path.exists(filler) and os.remove(filler))
            return f"n{x}'s data disk full"
        if fault == "clock_skew":
            if not shutil.which("faketime"):
                return "clock skew skipped: faketime is not installed"
            # Within the 60 s nodes accept between their clocks (gossip and
            # internal calls are signed with the time: docs/security.md);
            # a node further off is refused, saying so.
            # Any two nodes stay within 50 s of each other: a node already
            # skewed keeps its skew (healing does not restart it).
            others_skew = [s for n, s in self.c.running_skew.items() if n != x] + [0]
            skew = self.rng.choice([s for s in (-45, -5, 5, 45)
                                    if all(abs(s - o) <= 50 for o in others_skew)])
            self.c.signal(x, signal.SIGTERM)
            self.c.expected_exit.add(x)
            self.c.procs[x].wait()
            self.c.skew[x] = skew
            self.c.start(x)
            self.healing.append(lambda: self.c.skew.pop(x, None))
            return f"n{x} restarted with its clock {skew:+d} s off"
        if fault == "join_leave":
            spare = self.net.count - 1
            if spare in self.c.members:
                return "join skipped: the spare node is in use"
            self.c.members.add(spare)
            self.c.start(spare)
            self.healing.append(lambda: self.leave(spare))
            return f"n{spare} joins"
        raise ValueError(fault)

    def leave(self, i):
        host = self.net.http(min(n for n in self.c.members if n != i))
        request(host, "POST", "/v1/cluster/leave", json.dumps({"node": f"n{i}"}),
                {"Content-Type": "application/json"})
        self.c.members.discard(i)
        p = self.c.procs[i]
        self.c.expected_exit.add(i)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            self.c.crashes.append(f"n{i} did not stop within 60 s of leaving")
            p.kill()

    def heal(self):
        self.net.heal()
        for h in self.healing:
            h()
        self.healing.clear()


# ---------------------------------------------------------------- checker


def converge(cluster, bound=90):
    """Seconds until every member sees every member up, on one ring (one
    epoch) owned by exactly the members, nothing moving or incomplete, and
    the replicas of each partition holding the same rows."""
    started = time.time()
    want = {f"n{i}" for i in cluster.members}
    last = None
    while time.time() - started < bound:
        views = []
        for i in sorted(cluster.members):
            status, v = request(cluster.net.http(i), "GET", "/v1/cluster", timeout=3)
            views.append(v if status == 200 and isinstance(v, dict) and "ring" in v else None)
        last = views
        if all(v and settled(v, want) for v in views) and len({v["epoch"] for v in views}) == 1:
            return time.time() - started, None
        time.sleep(0.5)
    return None, last


def settled(v, want):
    up = {n["name"] for n in v["nodes"] if n["status"] == "up"}
    owners = {r["owner"] for r in v["ring"]}
    incomplete = any(n["incomplete_partitions"] for n in v["nodes"] if n["name"] in want)
    same_rows = all(len(set(r["replica_rows"].values())) == 1 for r in v["ring"])
    moving = any(not h.get("done") for h in v["handoffs"])
    return up >= want and owners == want and not incomplete and v["moving_partitions"] == 0 \
        and not moving and same_rows


def final_check(cluster, work):
    result = {"lost": 0, "duplicated": 0, "unexpected": 0, "per_node": {}}
    for i in sorted(cluster.members):
        status, answer = query(cluster.net.http(i), f"SELECT id FROM {TABLE}", timeout=30,
                               partial=False)
        if status != 200:
            result["per_node"][f"n{i}"] = f"no answer: {status} {answer}"
            result["lost"] = max(result["lost"], len(work.acked))
            continue
        ids = [r[0] for r in answer["rows"]]
        present = set(ids)
        lost = work.acked - present
        dup = len(ids) - len(present)
        unexpected = present - work.sent
        result["lost"] = max(result["lost"], len(lost))
        result["duplicated"] = max(result["duplicated"], dup)
        result["unexpected"] = max(result["unexpected"], len(unexpected))
        result["per_node"][f"n{i}"] = {"rows": len(ids), "lost": sorted(lost)[:5],
                                        "duplicated": dup, "unexpected": sorted(unexpected)[:5]}
    result["divergent"] = divergent_partitions(cluster)
    return result


def divergent_partitions(cluster):
    """Partitions whose primary replicas do not hold the same write ids
    (`GET /v1/cluster/writes`: count and digest per partition)."""
    members = sorted(cluster.members)
    status, view = request(cluster.net.http(members[0]), "GET", "/v1/cluster", timeout=5)
    held = {}
    for i in members:
        s, w = request(cluster.net.http(i), "GET", "/v1/cluster/writes", timeout=10)
        if status != 200 or s != 200:
            return [f"no answer from n{i}: {s} {w}"]
        held[f"n{i}"] = w["tables"].get(TABLE, {})
    differ = []
    for r in view["ring"]:
        p = str(r["partition"])
        copies = {n: held.get(n, {}).get(p) for n in r["primaries"]}
        if len({json.dumps(c, sort_keys=True) for c in copies.values()}) > 1:
            differ.append({"partition": r["partition"], "copies": copies})
    return differ


# ---------------------------------------------------------------- schedules


def run_schedule(args, k, seed, totals):
    rng = random.Random(f"{seed}-{k}")
    net = args.net(args.tag, k, args.nodes + 1)
    workdir = os.path.join(args.workdir, f"s{k}")
    os.makedirs(workdir, exist_ok=True)
    cluster = Cluster(net, args.atoll, workdir, args.nodes, f"chaos-{seed}-{k}")
    plan = [rng.choice(args.faults) for _ in range(args.faults_per_schedule)]
    log(f"schedule {k} (seed {seed}): {plan}")
    try:
        net.up()
        for i in range(args.nodes + 1):
            cluster.mount(i)
        cluster.start(0, seed=False)
        cluster.wait_http(0)
        for i in range(1, args.nodes):
            cluster.start(i)
        for i in range(args.nodes):
            cluster.wait_http(i)
        took, last = converge(cluster, bound=30)
        if took is None:
            raise RuntimeError(f"the cluster did not form: {json.dumps(last)[:2000]}")
        work = Workload(cluster, rng.random(), clients=args.clients)
        work.start()
        nemesis = Nemesis(cluster, rng, totals["faults"])
        time.sleep(1.0)
        for fault in plan:
            what = nemesis.apply(fault)
            log(f"  fault: {what}")
            hold = DOWN_AFTER_S + 2 if fault == "pause" else rng.uniform(3, 8)
            t_end = time.time() + hold
            while time.time() < t_end:
                cluster.check_crashes()
                time.sleep(0.2)
            nemesis.heal()
            log("  healed")
            time.sleep(rng.uniform(1, 2))
        work.finish(bound=30)
        nemesis.heal()
        for i in sorted(cluster.members):
            if cluster.procs[i].poll() is not None:
                cluster.start(i)
        took, last = converge(cluster)
        cluster.check_crashes()
        check = final_check(cluster, work)
        totals["schedules"] += 1
        totals["acknowledged"] += len(work.acked)
        totals["sent"] += len(work.sent)
        totals["lost"] += check["lost"]
        totals["duplicated"] += check["duplicated"]
        totals["unexpected"] += check["unexpected"]
        totals["divergent_partitions"] += len(check["divergent"])
        totals["partial_answers"] += work.queries["partial"]
        totals["full_answers"] += work.queries["full"]
        totals["failed_answers"] += work.queries["failed"]
        totals["wrong_full_answers"] += len(work.wrong)
        totals["stale_after_cut"] += len(work.stale_after_cut)
        totals["crashes"] += len(cluster.crashes)
        totals["retried_requests"] += work.requests["retried"]
        if took is None:
            totals["not_converged"] += 1
            log(f"  did not converge within 90 s: {json.dumps(last)[:1500]}")
        else:
            totals["converge_s"].append(round(took, 1))
        bad = check["lost"] or check["duplicated"] or check["unexpected"] or work.wrong \
            or check["divergent"] or cluster.crashes or took is None
        log(f"  acknowledged {len(work.acked)} of {len(work.sent)} sent; queries {work.queries} "
            f"({len(work.stale_after_cut)} full ones short just after a cut); "
            f"converged in {took if took is None else round(took, 1)} s; check "
            f"{json.dumps({k2: v for k2, v in check.items() if k2 != 'per_node'})}")
        if bad:
            log(f"  FAILED schedule {k}: per node {json.dumps(check['per_node'])}; replicas "
                f"differ {json.dumps(check['divergent'][:3])}; wrong answers "
                f"{work.wrong[:5]}; crashes {cluster.crashes}; logs in {workdir}")
            totals["failed_schedules"].append(k)
    finally:
        cluster.stop_all()
        net.down()


def install(packages):
    missing = [p for p, binary in packages if not shutil.which(binary)]
    if missing:
        log(f"installing {missing} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env,
                       capture_output=True)
    return [p for p, binary in packages if not shutil.which(binary)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--schedules", type=int, default=3)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--only", type=int, default=None, help="run only schedule K of the seed")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--faults-per-schedule", type=int, default=2)
    p.add_argument("--faults", default=",".join(FAULTS))
    p.add_argument("--atoll", default="target/debug/atoll")
    p.add_argument("--workdir", default=None)
    p.add_argument("--mode", choices=["auto", "netns", "loopback"], default="auto",
                   help="netns (root: any link can be cut) or loopback (proxies, no "
                        "privileges); auto picks netns when it can")
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    args.atoll = os.path.abspath(args.atoll)
    if not os.access(args.atoll, os.X_OK):
        print(f"scripts/chaos: no atoll binary at {args.atoll} (cargo build --bin atoll)",
              file=sys.stderr)
        return 2
    root = os.geteuid() == 0
    if args.mode == "netns" and not root:
        print("scripts/chaos: --mode netns needs root (network namespaces, nftables, "
              "tmpfs); --mode loopback runs without", file=sys.stderr)
        return 2
    if args.mode == "auto":
        args.mode = "netns" if root and shutil.which("ip") else "loopback"
        if args.mode == "loopback":
            log("not root: LOOPBACK mode (userspace proxies; a node can only be cut off "
                "from all others, no full disk)")
    packages = [("faketime", "faketime")] + ([("nftables", "nft")] if args.mode == "netns" else [])
    lacking = install(packages) if root else [p for p, b in packages if not shutil.which(b)]
    if args.mode == "netns" and "nftables" in lacking:
        print("scripts/chaos: nft is missing and apt-get could not install nftables",
              file=sys.stderr)
        return 2
    args.net = NetnsNet if args.mode == "netns" else LoopbackNet
    wanted = args.faults.split(",")
    unknown = [f for f in wanted if f not in FAULTS]
    if unknown:
        print(f"scripts/chaos: unknown faults {unknown}; known: {FAULTS}", file=sys.stderr)
        return 2
    args.faults = [f for f in wanted if f in args.net.faults]
    if "faketime" in lacking and "clock_skew" in args.faults:
        log("faketime is not installed (and could not be): clock skew faults are SKIPPED")
        args.faults.remove("clock_skew")
    skipped = [f for f in wanted if f not in args.faults]
    if skipped:
        log(f"{args.mode} mode cannot inject {skipped}: left out of the schedules")
    if not args.faults:
        print("scripts/chaos: no fault left to inject", file=sys.stderr)
        return 2
    args.workdir = args.workdir or f"/tmp/atoll-chaos-{os.getpid()}"
    os.makedirs(args.workdir, exist_ok=True)
    log(f"seed {seed}, {args.mode} mode: {args.schedules} schedules of "
        f"{args.faults_per_schedule} faults from {args.faults}, {args.nodes} nodes, "
        f"logs under {args.workdir}")
    args.tag = f"atc{os.getpid() % 100000}"
    ctl = NetnsNet.control(args.tag) if args.mode == "netns" else None
    totals = {"mode": args.mode, "seed": seed, "schedules": 0, "sent": 0, "acknowledged": 0,
              "lost": 0, "duplicated": 0, "unexpected": 0, "divergent_partitions": 0,
              "full_answers": 0, "stale_after_cut": 0,
              "partial_answers": 0, "failed_answers": 0, "wrong_full_answers": 0,
              "crashes": 0, "not_converged": 0, "retried_requests": 0, "converge_s": [],
              "faults": {}, "failed_schedules": []}
    started = time.time()
    for k in range(args.schedules):
        if args.only is not None and k != args.only:
            continue
        try:
            run_schedule(args, k, seed, totals)
        except Exception as e:  # a harness failure is a failed run, said loudly
            log(f"schedule {k} could not run: {e}")
            totals["failed_schedules"].append(k)
    if ctl:
        sh("ip", "netns", "del", ctl, check=False, quiet=True)
    c = sorted(totals.pop("converge_s"))
    totals["converge_s_p50"] = c[len(c) // 2] if c else None
    totals["converge_s_max"] = c[-1] if c else None
    totals["seconds"] = round(time.time() - started)
    print(json.dumps(totals))
    bad = totals["lost"] or totals["duplicated"] or totals["unexpected"] or totals["crashes"] \
        or totals["wrong_full_answers"] or totals["failed_schedules"] or totals["not_converged"] \
        or totals["divergent_partitions"]
    if not bad and not any(totals["failed_schedules"]):
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
