"""Prometheus metrics (--metrics-listen): a coordinator with local workers is
scraped before and after a known number of requests; counts equal the
requests sent, every histogram's _count follows, bytes grow, and
`promtool check metrics` accepts the text.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_models  # noqa: E402
import kserve  # noqa: E402

export_models.torch.set_num_threads(1)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


METRICS_PORT = free_port()


def scrape():
    with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % METRICS_PORT,
                                timeout=10) as r:
        return r.read().decode()


def value(text, name, **labels):
    """The sample `name{labels}` (labels matched as a subset), 0 if absent."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ''))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


class Metrics(kserve.ClusterTestCase):
    @classmethod
    def cluster_options(cls, tmp):
        path = export_models.export('logistic', tmp)
        return {'models': [('logistic', path, {})], 'local_workers': 2,
                'extra_args': ['--metrics-listen', '127.0.0.1:%d' % METRICS_PORT]}

    def test_counts_follow_requests(self):
        before = scrape()
        n = 25
        for i in range(n):
            self.client.infer('logistic',
                              export_models.make_inputs('logistic', 3, seed=i))
        with self.assertRaises(Exception):
            self.client.infer('nope', export_models.make_inputs('logistic', 1))
        after = scrape()

        def delta(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)

        self.assertEqual(delta('tessera_requests_total', model='logistic',
                               code='OK'), n)
        self.assertEqual(delta('tessera_requests_total', model='nope',
                               code='NOT_FOUND'), 1)
        for h in ('tessera_request_duration_seconds',
                  'tessera_request_compute_input_seconds',
                  'tessera_request_compute_output_seconds',
                  'tessera_request_queue_seconds',
                  'tessera_request_compute_seconds', 'tessera_batch_size'):
            self.assertEqual(delta(h + '_count', model='logistic'), n, h)
            self.assertEqual(delta(h + '_bucket', model='logistic', le='+Inf'),
                             n, h)
        self.assertEqual(delta('tessera_batch_size_sum', model='logistic'), 3 * n)
        self.assertGreater(delta('tessera_request_duration_seconds_sum',
                                 model='logistic'), 0)
        self.assertGreater(delta('tessera_worker_sent_bytes_total'), 0)
        self.assertGreater(delta('tessera_worker_received_bytes_total'), 0)
        self.assertEqual(delta('tessera_worker_calls_total'),
                         delta('tessera_batch_size_count', model='logistic'))
        self.assertEqual(value(after, 'tessera_worker_up'), 2)
        self.assertGreater(value(after, 'tessera_worker_throughput_bytes_per_second'), 0)
        self.assertEqual(value(after, 'tessera_in_flight_requests'), 0)
        self.assertGreater(value(after, 'process_resident_memory_bytes'), 0)

    @unittest.skipUnless(shutil.which('promtool'), 'promtool not installed')
    def test_promtool_accepts(self):
        self.client.infer('logistic', export_models.make_inputs('logistic', 2))
        p = subprocess.run(['promtool', 'check', 'metrics'], input=scrape(),
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_unknown_path_is_404(self):
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen('http://127.0.0.1:%d/nope' % METRICS_PORT,
                                   timeout=10)
        self.assertEqual(cm.exception.code, 404)


class WorkerMetrics(unittest.TestCase):
    """A worker's own /metrics: runs counted, shard bytes held, promtool."""

    def test_worker_counts_runs(self):
        import tempfile
        port = free_port()
        url = 'http://127.0.0.1:%d/metrics' % port
        with tempfile.TemporaryDirectory() as tmp:
            path = export_models.export('logistic', tmp)
            with kserve.Worker(extra_args=['--metrics-listen',
                                           '127.0.0.1:%d' % port]) as w:
                with kserve.Cluster(models=[('logistic', path, {})],
                                    local_workers=0,
                                    workers=[w.address]) as c:
                    before = urllib.request.urlopen(url, timeout=10).read().decode()
                    n = 10
                    for i in range(n):
                        c.client.infer('logistic',
                                       export_models.make_inputs('logistic', 2, seed=i))
                    after = urllib.request.urlopen(url, timeout=10).read().decode()
        runs = (value(after, 'tessera_worker_run_seconds_count') -
                value(before, 'tessera_worker_run_seconds_count'))
        self.assertEqual(runs, n)
        self.assertGreater(value(after, 'tessera_worker_shard_memory_bytes'), 0)
        self.assertEqual(value(after, 'tessera_worker_shards'), 1)
        self.assertEqual(value(after, 'tessera_worker_runs_refused_total'), 0)
        if shutil.which('promtool'):
            p = subprocess.run(['promtool', 'check', 'metrics'], input=after,
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)


if __name__ == '__main__':
    unittest.main()
