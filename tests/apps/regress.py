"""Fixture apps for regression tests of response framing."""


def write_then_list(environ, start_response):
    """Sends part of the body through write(), the rest as the returned list, without Content-Length."""
    write = start_response('200 OK', [('Content-Type', 'text/plain')])
    write(b'from write, ')
    return [b'from the list']
