"""Fixture app for deadline and capacity tests: `/sleep?S` sleeps S seconds, `/burn?S` computes S seconds,
`/until?PATH` waits (up to 10 s) until the file PATH exists, `/file?PATH` sends file PATH through wsgi.file_wrapper,
anything else answers at once."""

import os
import sys
import time


def stream(environ, start_response):
    """Ten blocks, 0.3 s apart: a response that takes 3 s but keeps making progress."""
    start_response('200 OK', [('Content-Type', 'text/plain')])
    for i in range(10):
        time.sleep(0.3)
        yield f'block {i}\n'.encode()


def app(environ, start_response):
    if environ['PATH_INFO'] == '/stream':
        return stream(environ, start_response)
    if environ['PATH_INFO'] == '/burn':
        until = time.monotonic() + float(environ['QUERY_STRING'] or '1')
        while time.monotonic() < until:  # computes, holding the GIL but for the interpreter's switches
            pass
    if environ['PATH_INFO'] == '/file':
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return environ['wsgi.file_wrapper'](open(environ['QUERY_STRING'], 'rb'))  # the server closes it
    if environ['PATH_INFO'] == '/until':
        deadline = time.monotonic() + 10
        while not os.path.exists(environ['QUERY_STRING']) and time.monotonic() < deadline:
            time.sleep(0.01)
        body = b'released' if os.path.exists(environ['QUERY_STRING']) else b'timed out'
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
        return [body]
    if environ['PATH_INFO'] == '/sleep':
        print('slow request entered the app', file=sys.stderr, flush=True)
        time.sleep(float(environ['QUERY_STRING'] or '1'))
    body = b'done'
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
