"""Workers behind real network links: a harness that puts the coordinator
and each worker in a network namespace of its own, joined by a bridge, so
that every byte between daemons crosses a veth link whose rate, loss,
partitions and delay a test sets (issue 13 item 3). Needs root.

Layout, for the test process's pid P and a free subnet 10.77.N.0/24:

    namespace tsPb   the bridge br0; one port per link below
    namespace tsPc   the coordinator, 10.77.N.1 (eth0), and the delay relays
    namespace tsPwI  worker I, 10.77.N.(10+I) (eth0)
    root namespace   link tsPh, 10.77.N.254: the test process's own way in
                     (its clients reach the coordinator through it)

Links are shaped where a real one would be: rate with tbf on both ends'
egress (the namespace's eth0 and its bridge port), loss with iptables
`-m statistic --mode random` DROP rules (INPUT and OUTPUT) in the worker's
namespace, partitions with plain DROP rules there (every packet of eth0,
both ways; the TCP connections stay open and see silence, as across a
pulled cable), and delay with relay.py: this kernel has no netem, so a
worker with a delay is reached through a relay in the coordinator's
namespace that holds every chunk for the delay, each direction, and the
coordinator is given the relay's address for it.

The cluster runs with mutual TLS, as a user would run it across machines:
scripts/certs.sh makes the CA and certificates with IP SANs for every
address of the subnet the harness uses (CERT_IPS), and the test's clients
present the admin certificate.

Everything is removed on exit: the namespaces (deleting them deletes the
veth pairs, tsPh included), with the daemons stopped first; also at
interpreter exit (atexit) if a test did not get that far. At start,
namespaces and links left by a harness whose process is gone (a test
killed with -9) are removed, and their processes killed.

    import netns
    with netns.NetCluster(3, models=[('mlp', path, {'replicas': 2})],
                          delay_ms={0: 20}) as nc:
        load = ledger.Load(nc.address, 'mlp', creds=nc.creds)
        nc.net.partition(1); ...; nc.net.heal(1)
        status = nc.status()
"""
import atexit
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kserve  # noqa: E402
import ledger  # noqa: E402

NAME = re.compile(r'^ts(\d+)(b|c|h|w\d+)$')   # everything the harness names
SUBNET = '10.77.%d.'
COORDINATOR_HOST = 1
WORKER_HOST = 10          # worker I is .(10 + I)
OWN_HOST = 254            # the test process's end
RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'relay.py')
COMMAND_TIMEOUT = 30.0


def is_root():
    return os.geteuid() == 0


def run(*cmd):
    """Runs a command of the harness (ip, tc, iptables); raises with its
    stderr if it fails."""
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=COMMAND_TIMEOUT)
    if p.returncode != 0:
        raise RuntimeError('%s: exit %d: %s' % (' '.join(cmd), p.returncode, p.stderr.strip()))
    return p.stdout


def namespaces():
    """Names of the network namespaces (`ip netns list`)."""
    return [line.split()[0] for line in run('ip', 'netns', 'list').splitlines() if line.strip()]


def root_links():
    """Names of the links of the root namespace."""
    return [line.split(':')[1].strip().split('@')[0]
            for line in run('ip', '-o', 'link', 'show').splitlines()]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale():
    """Removes the namespaces and links of harnesses whose process is gone,
    killing what still runs in those namespaces; returns their names."""
    removed = []
    for ns in namespaces():
        m = NAME.match(ns)
        if not m or _alive(int(m.group(1))):
            continue
        for pid in run('ip', 'netns', 'pids', ns).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        run('ip', 'netns', 'del', ns)
        removed.append(ns)
    for link in root_links():
        m = NAME.match(link)
        if m and not _alive(int(m.group(1))):
            with contextlib.suppress(RuntimeError):   # gone with its peer meanwhile
                run('ip', 'link', 'del', link)
            removed.append(link)
    return removed


def _free_subnet(pid):
    """A third octet N whose 10.77.N.0/24 no root-namespace address uses."""
    used = set(int(m) for m in re.findall(r'inet 10\.77\.(\d+)\.', run('ip', '-4', 'addr')))
    for k in range(250):
        n = 1 + (pid + k) % 250
        if n not in used:
            return n
    raise RuntimeError('no free 10.77.N.0/24 subnet')


class Net:
    """The namespaces, bridge and links of one harness (see the module
    docstring); a context manager. Link `who` is 'c' (the coordinator's) or
    a worker index."""

    def __init__(self, workers):
        self.workers = workers
        self.tag = 'ts%d' % os.getpid()
        self.made = []            # namespaces created, for down()
        self.rules = {}           # who -> set of iptables rule specs in place
        self.subnet = None

    # -- names and addresses --
    def ns(self, who):
        return self.tag + ('c' if who == 'c' else 'w%d' % who)

    def ip(self, who):
        host = COORDINATOR_HOST if who == 'c' else WORKER_HOST + who
        return SUBNET % self.subnet + str(host)

    def port(self, who):
        """The link's port on the bridge (in the bridge namespace)."""
        return 'c' if who == 'c' else 'w%d' % who

    def exec(self, who):
        """The command prefix that runs a program in `who`'s namespace."""
        return ['ip', 'netns', 'exec', self.ns(who)]

    def addresses(self):
        """Every address the harness gives out (for certificates)."""
        return [self.ip('c')] + [self.ip(i) for i in range(self.workers)] + [
            SUBNET % self.subnet + str(OWN_HOST)]

    # -- building and removing --
    def up(self):
        clean_stale()
        if any(ns.startswith(self.tag) and NAME.match(ns) for ns in namespaces()):
            raise RuntimeError('namespaces %s* exist already: one Net at a time per process'
                               % self.tag)
        atexit.register(self.down)
        self.subnet = _free_subnet(os.getpid())
        bridge = self.tag + 'b'
        self._add_ns(bridge)
        run('ip', '-n', bridge, 'link', 'add', 'br0', 'type', 'bridge')
        run('ip', '-n', bridge, 'link', 'set', 'br0', 'up')
        for who in ['c'] + list(range(self.workers)):
            ns = self.ns(who)
            self._add_ns(ns)
            # Made with unique names in the root namespace, moved, renamed.
            tmp = self.tag + 'x'
            run('ip', 'link', 'add', tmp, 'type', 'veth', 'peer', 'name', tmp + 'p')
            run('ip', 'link', 'set', tmp, 'netns', ns)
            run('ip', 'link', 'set', tmp + 'p', 'netns', bridge)
            run('ip', '-n', ns, 'link', 'set', tmp, 'name', 'eth0')
            run('ip', '-n', bridge, 'link', 'set', tmp + 'p', 'name', self.port(who))
            run('ip', '-n', bridge, 'link', 'set', self.port(who), 'master', 'br0', 'up')
            run('ip', '-n', ns, 'addr', 'add', self.ip(who) + '/24', 'dev', 'eth0')
            run('ip', '-n', ns, 'link', 'set', 'eth0', 'up')
        own = self.tag + 'h'
        run('ip', 'link', 'add', own, 'type', 'veth', 'peer', 'name', own + 'p')
        run('ip', 'link', 'set', own + 'p', 'netns', bridge)
        run('ip', '-n', bridge, 'link', 'set', own + 'p', 'name', 'own')
        run('ip', '-n', bridge, 'link', 'set', 'own', 'master', 'br0', 'up')
        run('ip', 'addr', 'add', SUBNET % self.subnet + '%d/24' % OWN_HOST, 'dev', own)
        run('ip', 'link', 'set', own, 'up')
        return self

    def _add_ns(self, ns):
        run('ip', 'netns', 'add', ns)
        self.made.append(ns)
        run('ip', '-n', ns, 'link', 'set', 'lo', 'up')

    def down(self):
        """Removes everything up() made; safe to call twice."""
        errors = []
        for ns in reversed(self.made):
            try:
                run('ip', 'netns', 'del', ns)
            except RuntimeError as e:
                errors.append(str(e))
        self.made = []
        for link in (self.tag + 'h', self.tag + 'x', self.tag + 'xp', self.tag + 'hp'):
            if link in root_links():
                # A namespace's links go asynchronously: it may be gone now.
                with contextlib.suppress(RuntimeError):
                    run('ip', 'link', 'del', link)
        atexit.unregister(self.down)
        if errors:
            raise RuntimeError('; '.join(errors))

    def __enter__(self):
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc):
        self.down()
        return False

    # -- link properties --
    def shape(self, who, rate='100mbit'):
        """Limits the link's rate (tc tbf) both ways; rate=None removes it."""
        ends = [(self.ns(who), 'eth0'), (self.tag + 'b', self.port(who))]
        for ns, dev in ends:
            if rate is None:
                with contextlib.suppress(RuntimeError):  # none set
                    run('ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'del', 'dev', dev, 'root')
                continue
            # burst: 10 ms of the rate, at least 64 KiB (a full GSO segment).
            bits = _rate_bits(rate)
            burst = max(bits // 8 // 100, 65536)
            run('ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'replace', 'dev', dev, 'root',
                'tbf', 'rate', rate, 'burst', str(burst), 'latency', '100ms')

    def _rule(self, who, spec, on):
        """Adds (on) or removes one iptables rule in `who`'s namespace."""
        have = self.rules.setdefault(who, set())
        if on == (spec in have):
            return
        run(*(self.exec(who) + ['iptables', '-I' if on else '-D'] + list(spec)))
        (have.add if on else have.discard)(spec)

    def loss(self, who, pct):
        """Drops pct % of the packets entering and leaving `who`'s namespace
        at random (0: none)."""
        for spec in list(self.rules.get(who, ())):
            if 'statistic' in spec:
                self._rule(who, spec, False)
        if pct:
            p = '%.6f' % (pct / 100.0)
            for chain, way in (('INPUT', '-i'), ('OUTPUT', '-o')):
                self._rule(who, (chain, way, 'eth0', '-m', 'statistic', '--mode', 'random',
                                 '--probability', p, '-j', 'DROP'), True)

    PARTITION = (('INPUT', '-i', 'eth0', '-j', 'DROP'), ('OUTPUT', '-o', 'eth0', '-j', 'DROP'))

    def partition(self, who):
        """Drops every packet of `who`'s link, both ways."""
        for spec in self.PARTITION:
            self._rule(who, spec, True)

    def heal(self, who):
        """Ends partition(who)."""
        for spec in self.PARTITION:
            self._rule(who, spec, False)

    def bytes(self, who):
        """Bytes received plus bytes sent on `who`'s eth0 so far (frames:
        TCP/IP and TLS overhead included)."""
        for line in run(*(self.exec(who) + ['cat', '/proc/net/dev'])).splitlines():
            name, _, counters = line.partition(':')
            if name.strip() == 'eth0':
                fields = counters.split()
                return int(fields[0]) + int(fields[8])   # rx bytes, tx bytes
        raise RuntimeError('no eth0 in %s' % self.ns(who))

    def dropped(self, who):
        """Packets the DROP rules now in `who`'s namespace have dropped (a
        rule's count goes with it: read before heal or loss(who, 0))."""
        out = run(*(self.exec(who) + ['iptables', '-L', '-v', '-x', '-n']))
        return sum(int(line.split()[0]) for line in out.splitlines()
                   if line.split()[2:3] == ['DROP'])


def _rate_bits(rate):
    """Bits per second of a tc rate ('100mbit', '1gbit', '500kbit')."""
    m = re.match(r'^(\d+(?:\.\d+)?)(kbit|mbit|gbit|bit)$', rate)
    if not m:
        raise ValueError('rate %r: expected N[k|m|g]bit' % rate)
    scale = {'bit': 1, 'kbit': 10 ** 3, 'mbit': 10 ** 6, 'gbit': 10 ** 9}[m.group(2)]
    return int(float(m.group(1)) * scale)


class NsDaemon(kserve.Daemon):
    """A kserve.Daemon run in a namespace (`ip netns exec` execs it, so the
    process is the daemon itself)."""

    def __init__(self, name, net, who, command, **kw):
        super().__init__(net.exec(who) + list(command), **kw)
        self.name = name


class NsCoordinator(kserve.Cluster):
    """kserve.Cluster in the coordinator's namespace, listening on its
    address, its readiness probe over mutual TLS."""

    def __init__(self, net, tls_args, creds, **kw):
        super().__init__(local_workers=0, **kw)
        self.net, self.tls_args, self.creds = net, tls_args, creds

    def command(self):
        cmd = super().command()
        cmd[cmd.index('--listen') + 1] = self.net.ip('c') + ':0'
        return self.net.exec('c') + cmd + self.tls_args

    def new_client(self):
        return kserve.Client(self.address, creds=self.creds)


class NetCluster:
    """A coordinator and `workers` workers in their namespaces over mutual
    TLS, for a `with` block.

    models, extra_args: the coordinator's (as kserve.Cluster; it is given
    every worker by --worker). delay_ms: {worker index: ms} of added delay,
    each way (a relay per such worker; the coordinator dials the relay).
    worker_args: extra tessera-worker arguments. wait_ready: as
    kserve.Cluster. shape: a tc rate for every worker's link (None: none).

    Attributes once entered: net (the Net), address (the coordinator's),
    creds (the admin certificate's channel credentials), workers (the
    worker daemons), dialed[i] (the address the coordinator knows worker i
    by: its own, or its relay's), coordinator, certs (the directory).
    """

    def __init__(self, workers=3, models=(), extra_args=(), delay_ms=None, worker_args=(),
                 wait_ready=True, shape=None, start_timeout=120.0):
        self.n = workers
        self.models = models
        self.extra_args = list(extra_args)
        self.delay_ms = dict(delay_ms or {})
        self.worker_args = list(worker_args)
        self.wait_ready = wait_ready
        self.shape_rate = shape
        self.start_timeout = start_timeout
        self.stack = contextlib.ExitStack()

    def _tls(self, name):
        d = self.certs
        return ['--tls-cert', os.path.join(d, name + '.crt'),
                '--tls-key', os.path.join(d, name + '.key'),
                '--tls-ca', os.path.join(d, 'ca.crt')]

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.stack.close()
            raise
        return self

    def _start(self):
        tmp = self.stack.enter_context(tempfile.TemporaryDirectory(prefix='tessera_netns_'))
        self.net = self.stack.enter_context(Net(self.n))
        self.certs = os.path.join(tmp, 'certs')
        env = dict(os.environ, CERT_IPS=' '.join(self.net.addresses()))
        subprocess.run(['sh', os.path.join(kserve.SOURCE, 'scripts', 'certs.sh'), self.certs,
                        str(self.n)], check=True, env=env, timeout=120)
        self.creds = kserve.tls_credentials(self.certs, 'admin')
        if self.shape_rate:
            for i in range(self.n):
                self.net.shape(i, self.shape_rate)
        self.workers, self.dialed = [], []
        for i in range(self.n):
            w = self.stack.enter_context(NsDaemon(
                'worker%d' % i, self.net, i,
                [kserve.binary('tessera-worker'), '--listen', self.net.ip(i) + ':0',
                 '--threads', '1'] + self._tls('worker%d' % i) + self.worker_args,
                start_timeout=self.start_timeout))
            self.workers.append(w)
            self.dialed.append(w.address)
            if i in self.delay_ms:
                r = self.stack.enter_context(NsDaemon(
                    'relay%d' % i, self.net, 'c',
                    [sys.executable, RELAY, '--listen', self.net.ip('c') + ':0',
                     '--to', w.address, '--delay-ms', str(self.delay_ms[i])],
                    start_timeout=self.start_timeout))
                self.dialed[i] = r.address
        self.coordinator = self.stack.enter_context(NsCoordinator(
            self.net, self._tls('coordinator'), self.creds, models=self.models,
            workers=self.dialed, extra_args=self.extra_args, wait_ready=self.wait_ready,
            start_timeout=self.start_timeout))
        self.address = self.coordinator.address

    def __exit__(self, *exc):
        self.stack.close()
        return False

    def status(self, timeout=5.0):
        """The coordinator's Admin/ClusterStatus."""
        return ledger.cluster_status(self.address, timeout, creds=self.creds)

    def client(self, timeout=30.0):
        """A kserve.Client of the coordinator (admin certificate)."""
        return kserve.Client(self.address, timeout, creds=self.creds)
