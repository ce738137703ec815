"""A TCP relay that adds a fixed delay to a link: the latency half of the
network-namespace harness (netns.py), since this kernel has no netem.

    relay.py --listen HOST:PORT --to HOST:PORT --delay-ms MS

Every connection accepted on --listen is forwarded to --to. Each chunk read
from one side is written to the other MS milliseconds after it was read, in
the order it was read, in both directions: a round trip through the relay
takes 2 x MS longer. Half-closes are passed on (EOF on one side shuts the
other side's writing half once the delayed bytes before it are out); a
reset or error on either side closes both. At most QUEUE chunks wait in a
direction; beyond that the relay stops reading that side (TCP backpressure),
so a slow receiver never makes it buffer without bound.

Once listening it prints "listening on HOST:PORT" (the port it got, for
port 0) on stdout, like the daemons; SIGTERM and SIGINT stop it (exit 0).
"""
import argparse
import asyncio
import signal
import sys

CHUNK = 65536
QUEUE = 64     # chunks waiting in one direction, at most


def host_port(text):
    host, _, port = text.rpartition(':')
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError('%r is not HOST:PORT' % text)
    return host, int(port)


async def pump(reader, writer, delay):
    """Copies reader to writer, each chunk `delay` s after it was read."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue(QUEUE)

    async def send():
        while True:
            t, data = await queue.get()
            wait = t + delay - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(CHUNK)
            await queue.put((loop.time(), data))
            if not data:
                break
        await sender
    finally:
        sender.cancel()


async def serve(args):
    delay = args.delay_ms / 1000.0

    async def connection(down_reader, down_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(*args.to)
        except OSError as e:
            print('relay: connect %s:%d: %s' % (args.to + (e,)), file=sys.stderr, flush=True)
            down_writer.transport.abort()
            return
        ways = [asyncio.create_task(pump(down_reader, up_writer, delay)),
                asyncio.create_task(pump(up_reader, down_writer, delay))]
        try:
            done, _ = await asyncio.wait(ways, return_when=asyncio.FIRST_EXCEPTION)
            if any(t.exception() for t in done):
                raise next(t.exception() for t in done if t.exception())
        except OSError:
            for w in (up_writer, down_writer):
                w.transport.abort()   # an error on one side resets the other
        finally:
            for t in ways:
                t.cancel()
            for w in (up_writer, down_writer):
                w.close()

    server = await asyncio.start_server(connection, *args.listen)
    host, port = server.sockets[0].getsockname()[:2]
    print('listening on %s:%d' % (host, port), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--listen', type=host_port, required=True)
    p.add_argument('--to', type=host_port, required=True)
    p.add_argument('--delay-ms', type=float, default=0.0)
    args = p.parse_args(argv)
    if args.delay_ms < 0:
        p.error('--delay-ms must be >= 0')
    return asyncio.run(serve(args))


if __name__ == '__main__':
    sys.exit(main())
