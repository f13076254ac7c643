"""Fixture app for slow-client tests: `/big` answers 200 000 bytes, anything else a short body."""

BIG = b'x' * 200_000


def app(environ, start_response):
    body = BIG if environ['PATH_INFO'] == '/big' else b'small'
    start_response('200 OK', [('Content-Type', 'application/octet-stream'), ('Content-Length', str(len(body)))])
    return [body]
