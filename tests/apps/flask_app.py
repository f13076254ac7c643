"""A real Flask app, served unchanged by `rustwsgi serve flask_app:app`."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

from flask import Flask, Response, jsonify, redirect, request, send_file, stream_with_context, url_for

app = Flask(__name__)

_gates: dict[str, threading.Event] = {}
_gates_lock = threading.Lock()


def _gate(name: str) -> threading.Event:
    with _gates_lock:
        return _gates.setdefault(name, threading.Event())


@app.get('/json')
def json_view() -> Response:
    """JSON GET: echoes the method and the `q` query argument."""
    return jsonify(hello='world', method=request.method, q=request.args.get('q'))


@app.post('/form')
def form_view() -> Response:
    """Form POST (application/x-www-form-urlencoded): echoes every field."""
    return jsonify(fields=request.form.to_dict(flat=False), content_type=request.content_type)


@app.post('/upload')
def upload_view() -> Response:
    """Multipart upload: size and sha256 of the `file` part, plus the `note` field."""
    upload = request.files['file']
    data = upload.read()
    return jsonify(
        filename=upload.filename,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        note=request.form.get('note'),
    )


@app.post('/body')
def body_view() -> Response:
    """Raw body (also chunked request bodies): size and sha256."""
    data = request.get_data()
    return jsonify(size=len(data), sha256=hashlib.sha256(data).hexdigest())


@app.get('/redirect')
def redirect_view() -> Response:
    """302 to the JSON view."""
    return redirect(url_for('json_view', q='redirected'))


@app.get('/cookies')
def cookies_view() -> Response:
    """Three Set-Cookie headers with different attributes."""
    response = jsonify(cookies='set')
    response.set_cookie('alpha', '1')
    response.set_cookie('beta', '2', httponly=True, path='/')
    response.set_cookie('gamma', '3', max_age=120, samesite='Lax')
    return response


@app.get('/stream')
def stream_view() -> Response:
    """A streamed response that reads the request context inside the generator."""

    @stream_with_context
    def generate() -> Iterator[str]:
        count = int(request.args.get('n', '5'))
        for index in range(count):
            yield f'line {index} of {count} for {request.path}\n'

    return Response(generate(), mimetype='text/plain')


@app.get('/gated-stream')
def gated_stream_view() -> Response:
    """Yield a first chunk, then wait until /release?gate=G is requested (at most 30 s)."""

    @stream_with_context
    def generate() -> Iterator[str]:
        event = _gate(request.args['gate'])
        yield 'before-gate\n'
        yield 'released\n' if event.wait(30) else 'gate-timeout\n'

    return Response(generate(), mimetype='text/plain')


@app.get('/release')
def release_view() -> str:
    """Open the gate named by ?gate=G."""
    _gate(request.args['gate']).set()
    return 'released'


@app.get('/file')
def file_view() -> Response:
    """send_file (goes through wsgi.file_wrapper; honours Range)."""
    return send_file(request.args['path'], mimetype='application/octet-stream', conditional=True)


@app.get('/error')
def error_view() -> Response:
    """An unhandled exception: Flask answers 500 and logs the traceback to wsgi.errors."""
    raise RuntimeError('flask boom marker')
