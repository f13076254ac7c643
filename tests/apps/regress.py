"""Fixture apps for regression tests of response framing."""


def write_then_list(environ, start_response):
    """Sends part of the body through write(), the rest as the returned list, without Content-Length."""
    write = start_response('200 OK', [('Content-Type', 'text/plain')])
    write(b'from write, ')
    return [b'from the list']


def input_read_by_another_thread(environ, start_response):
    """Streams a first block while a helper thread waits on wsgi.input for the rest of a large body, then
    answers with the body's length: the response write must not wait for the helper's body read."""
    import threading

    result = []
    reader = threading.Thread(target=lambda: result.append(environ['wsgi.input'].read()))
    reader.start()
    start_response('200 OK', [('Content-Type', 'text/plain')])

    def body():
        yield b'first block\n'
        reader.join(20)
        yield b'read %d bytes\n' % len(result[0]) if result else b'reader still waiting\n'

    return body()


def block_then_raise(environ, start_response):
    """Yields one small block and raises at once: the block may still be staged, not yet written, when the
    request fails."""
    start_response('200 OK', [('Content-Type', 'text/plain')])
    yield b'first block\n'
    raise LookupError('failed after the first block')


def blocks(environ, start_response):
    """Yields `n` blocks of `size` bytes (query `n=..&size=..&seed=..`), block i filled with one letter picked by
    i and the seed, so that bytes left over from an earlier response would not pass for this one's."""
    query = dict(part.split('=') for part in environ['QUERY_STRING'].split('&') if part)
    n, size, seed = int(query.get('n', 4)), int(query.get('size', 1024)), int(query.get('seed', 0))
    start_response('200 OK', [('Content-Type', 'application/octet-stream')])
    for i in range(n):
        yield bytes([97 + (i + seed) % 26]) * size
