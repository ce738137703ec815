#!/usr/bin/python3
"""What a link costs each strategy (issue 13 item 5): the same models served
unsplit and split, behind real shaped links (tests/python/netns.py; needs
root).

For each N of --workers and each added delay of --delays, one cluster: a
coordinator and N workers (1 kernel thread each) in network namespaces of
their own over mutual TLS, every worker reached through a relay that adds
the delay each way (so a round trip gains 2x the delay), serving, for each
model of --models, these variants:

  unsplit    strategy=data,replicas=1: the whole model on one worker
  data       strategy=data,replicas=N: whole copies, requests spread
  tensor     strategy=tensor,shards=N,replicas=1
  pipeline   strategy=pipeline,stages=N,replicas=1
  auto       strategy=auto (what it chose is reported)

Then, for each rate of --rates, every link (the coordinator's and each
worker's) is shaped to it (tc tbf, both ways), and each variant is loaded
by --clients closed-loop clients sending batch-1 requests for --seconds,
every answer compared with torch's (tests/python/ledger.py). Reported per
variant: bytes on the wire per request (frames received and sent by the
workers' interfaces over the run, over the requests answered: TCP/IP and
TLS included, so the inputs and outputs of every shard call, plus the
prober's health checks), p50 and p99 latency, throughput, and throughput
against the unsplit variant of the same run. Each run follows a warm-up
of a third of its length (at least 1 s) that is not counted. Models are loaded before the
links are shaped (uploads are not what is measured).

The daemons, the relays and the load share the machine's CPUs: on a
machine with few cores the numbers measure CPU contention as well as the
links (the header says how many CPUs there were).

    sudo /usr/bin/python3 bench/network.py --build DIR [--workers 2,4]
        [--models mlp_168mb,resnet,transformer] [--rates 1gbit,100mbit]
        [--delays 0.2,2] [--clients 2] [--seconds 5] [--out DIR]

The exit status is 1 if any request failed or was answered wrongly.
"""
import argparse
import csv
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE, 'tests', 'python'))

VARIANTS = ('unsplit', 'data', 'tensor', 'pipeline', 'auto')
FIELDS = ['model', 'workers', 'rate', 'delay_ms', 'variant', 'chose', 'requests', 'failed',
          'wrong', 'bytes_per_request', 'p50_ms', 'p99_ms', 'rps', 'vs_unsplit']


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--build', default=os.path.join(SOURCE, 'build'))
    p.add_argument('--workers', default='2,4')
    p.add_argument('--models', default='mlp_168mb,resnet,transformer')
    p.add_argument('--rates', default='1gbit,100mbit')
    p.add_argument('--delays', default='0.2,2')
    p.add_argument('--clients', type=int, default=2)
    p.add_argument('--seconds', type=float, default=5.0)
    p.add_argument('--out', default='.')
    return p.parse_args(argv[1:])


def options(variant, n):
    return {'unsplit': {'strategy': 'data', 'replicas': 1},
            'data': {'strategy': 'data', 'replicas': n},
            'tensor': {'strategy': 'tensor', 'shards': n, 'replicas': 1},
            'pipeline': {'strategy': 'pipeline', 'stages': n, 'replicas': 1},
            'auto': {'strategy': 'auto'}}[variant]


def percentile(values, q):
    return float(np.percentile(values, q)) if values else float('nan')


def measure(nc, ledger, model, served, pool, clients, seconds):
    """One closed-loop run of `served`: (ledger, bytes on the workers'
    links during it)."""
    def wire():
        return sum(nc.net.bytes(i) for i in range(nc.n))
    def load():
        return ledger.Load(nc.address, model, clients=clients, batches=(1,), pool=pool,
                           served=served, creds=nc.creds, deadline=60.0, title=served)
    load().run(max(1.0, seconds / 3))        # warm-up: connections, pages of the weights
    before = wire()
    t0 = time.monotonic()
    led = load().run(seconds)
    elapsed = time.monotonic() - t0
    return led, wire() - before, elapsed


def main(argv):
    args = parse_args(argv)
    os.environ['TESSERA_BUILD'] = os.path.abspath(args.build)
    import export_models  # noqa: E402 (after TESSERA_BUILD)
    import ledger  # noqa: E402
    import netns  # noqa: E402
    if not netns.is_root():
        raise SystemExit('network.py: needs root (network namespaces, tc, iptables)')
    export_models.torch.set_num_threads(1)
    models = args.models.split(',')
    tmp = tempfile.mkdtemp(prefix='tessera_network_')
    paths = {m: export_models.export(m, tmp) for m in models}
    pools = {m: ledger.Pool(m, (1,), size=8, seed=3) for m in models}
    print('network.py: %d CPUs; models %s; %d clients, %.0f s per run' % (
        os.cpu_count(), ','.join(models), args.clients, args.seconds), flush=True)
    rows, bad = [], 0
    for n in [int(x) for x in args.workers.split(',')]:
        for delay in [float(x) for x in args.delays.split(',')]:
            specs = [('%s_%s' % (m, v), paths[m], options(v, n)) for m in models
                     for v in VARIANTS]
            with netns.NetCluster(n, models=specs, delay_ms={i: delay for i in range(n)},
                                  extra_args=['--max-deadline-ms', '120000'],
                                  start_timeout=900) as nc:
                chose = {m.name: m.strategy for m in nc.status().models}
                for rate in args.rates.split(','):
                    for who in ['c'] + list(range(n)):
                        nc.net.shape(who, rate)
                    for m in models:
                        base = None
                        for v in VARIANTS:
                            served = '%s_%s' % (m, v)
                            led, wire, elapsed = measure(nc, ledger, m, served, pools[m],
                                                         args.clients, args.seconds)
                            ok = led.latencies(led.entries)
                            rps = len(ok) / elapsed
                            base = rps if v == 'unsplit' else base
                            row = dict(model=m, workers=n, rate=rate, delay_ms=delay,
                                       variant=v, chose=chose.get(served, '?'),
                                       requests=led.sent(), failed=sum(led.codes().values()),
                                       wrong=led.count(ledger.WRONG),
                                       bytes_per_request=int(wire / max(1, len(ok))),
                                       p50_ms=round(1e3 * percentile(ok, 50), 2),
                                       p99_ms=round(1e3 * percentile(ok, 99), 2),
                                       rps=round(rps, 1),
                                       vs_unsplit=round(rps / base, 2) if base else '')
                            bad += row['failed'] + row['wrong']
                            rows.append(row)
                            print('  '.join('%s=%s' % (k, row[k]) for k in FIELDS), flush=True)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, 'network.csv')
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    print('\n| model | workers | link | delay (each way) | variant | bytes/request | '
          'p50 ms | p99 ms | req/s | vs unsplit |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        print('| %s | %d | %s | %s ms | %s | %d | %.2f | %.2f | %.1f | %s |' % (
            r['model'], r['workers'], r['rate'], r['delay_ms'],
            r['variant'] + (' (%s)' % r['chose'] if r['variant'] == 'auto' else ''),
            r['bytes_per_request'], r['p50_ms'], r['p99_ms'], r['rps'], r['vs_unsplit']))
    print('\nwrote %s' % path)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
