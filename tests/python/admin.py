"""A client for Tessera's admin API (proto/admin.proto), written from the
protocol alone like kserve.py: the message classes come from compiling
admin.proto with `protoc --python_out` at import time, and methods are
called by path through grpc.Channel.unary_unary.

    import admin
    with admin.AdminClient(cluster.address) as a:
        status = a.cluster_status()       # ClusterStatusResponse
        shards = admin.shards_of(status, 'mlp')
        calls = {w.address: w.calls for w in status.workers}
"""
import collections

import kserve

SERVICE = '/tessera.admin.v1.Admin/'


pb, = kserve.compile_protos('admin.proto')


class AdminClient(kserve.Client):
    """Synchronous client of tessera.admin.v1.Admin (the channel handling is
    kserve.Client's); methods raise grpc.RpcError on a non-OK status."""

    def _call(self, method, request, response_class, timeout=None):
        return self.call(SERVICE + method, request, response_class, timeout)

    def cluster_status(self):
        return self._call('ClusterStatus', pb.ClusterStatusRequest(),
                          pb.ClusterStatusResponse)

    def register_worker(self, address):
        return self._call('RegisterWorker', pb.RegisterWorkerRequest(address=address),
                          pb.RegisterWorkerResponse)


def cluster_status(address):
    """One ClusterStatus call on a fresh channel."""
    with AdminClient(address) as a:
        return a.cluster_status()


def model_state(status, name):
    """The ModelState named `name`, or None."""
    for m in status.models:
        if m.name == name:
            return m
    return None


def shards_of(status, name):
    """{stage: [ShardPlacement, ...] in shard order} of model `name`."""
    stages = collections.defaultdict(list)
    for s in status.shards:
        if s.model == name:
            stages[s.stage].append(s)
    return {k: sorted(v, key=lambda s: s.shard) for k, v in sorted(stages.items())}


def calls_by_worker(status):
    """{worker address: calls}."""
    return {w.address: w.calls for w in status.workers}
