"""A real single-file Django app (settings in code), served by `rustwsgi serve django_app`."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY='rustwsgi-test-only-not-secret',  # noqa: S106
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=['*'],
    INSTALLED_APPS=[],
    DATABASES={},
    MIDDLEWARE=[
        'django.middleware.common.CommonMiddleware',
        'django.middleware.csrf.CsrfViewMiddleware',
    ],
    USE_TZ=True,
    LOGGING={
        'version': 1,
        'disable_existing_loggers': False,
        'handlers': {'stderr': {'class': 'logging.StreamHandler'}},
        'loggers': {'django.request': {'handlers': ['stderr'], 'level': 'ERROR', 'propagate': False}},
    },
)

from django.core.handlers.wsgi import WSGIRequest  # noqa: E402
from django.core.signals import request_finished  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import (  # noqa: E402
    FileResponse,
    Http404,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402

_local = threading.local()
_lock = threading.Lock()
_finished = {'count': 0}
_gates: dict[str, threading.Event] = {}


def _on_finished(sender: object, **kwargs: object) -> None:
    with _lock:
        _finished['count'] += 1


request_finished.connect(_on_finished)


def _gate(name: str) -> threading.Event:
    with _lock:
        return _gates.setdefault(name, threading.Event())


def json_view(request: WSGIRequest) -> JsonResponse:
    """JSON GET: echoes the method and the `q` query argument."""
    return JsonResponse({'hello': 'world', 'method': request.method, 'q': request.GET.get('q')})


@csrf_exempt
def form_view(request: WSGIRequest) -> JsonResponse:
    """Form POST without a CSRF token: echoes every field."""
    if request.method != 'POST':
        return JsonResponse({'error': 'POST only'}, status=405)
    return JsonResponse({'fields': dict(request.POST.lists()), 'content_type': request.content_type})


def protected_form_view(request: WSGIRequest) -> JsonResponse:
    """The same form, but CSRF-protected: a POST without a token gets 403 from the middleware."""
    return JsonResponse({'fields': dict(request.POST.lists())})


@csrf_exempt
def upload_view(request: WSGIRequest) -> JsonResponse:
    """Multipart upload via request.FILES: size and sha256 of the `file` part, plus the `note` field."""
    upload = request.FILES['file']
    digest = hashlib.sha256()
    size = 0
    for chunk in upload.chunks():
        digest.update(chunk)
        size += len(chunk)
    return JsonResponse(
        {'filename': upload.name, 'size': size, 'sha256': digest.hexdigest(), 'note': request.POST.get('note')}
    )


@csrf_exempt
def body_view(request: WSGIRequest) -> JsonResponse:
    """Raw body: size and sha256."""
    data = request.body
    return JsonResponse({'size': len(data), 'sha256': hashlib.sha256(data).hexdigest()})


def redirect_view(request: WSGIRequest) -> HttpResponseRedirect:
    """302 to the JSON view."""
    return HttpResponseRedirect('/json/?q=redirected')


def cookies_view(request: WSGIRequest) -> JsonResponse:
    """Three Set-Cookie headers with different attributes."""
    response = JsonResponse({'cookies': 'set'})
    response.set_cookie('alpha', '1')
    response.set_cookie('beta', '2', httponly=True, path='/')
    response.set_cookie('gamma', '3', max_age=120, samesite='Lax')
    return response


def missing_view(request: WSGIRequest) -> HttpResponse:
    """A view that raises Http404."""
    raise Http404('no such thing')


def stream_view(request: WSGIRequest) -> StreamingHttpResponse:
    """A StreamingHttpResponse fed by a generator."""
    count = int(request.GET.get('n', '5'))

    def generate() -> Iterator[bytes]:
        for index in range(count):
            yield f'line {index} of {count}\n'.encode()

    return StreamingHttpResponse(generate(), content_type='text/plain')


def gated_stream_view(request: WSGIRequest) -> StreamingHttpResponse:
    """Yield a first chunk, then wait until /release/?gate=G is requested (at most 30 s)."""
    event = _gate(request.GET['gate'])

    def generate() -> Iterator[bytes]:
        yield b'before-gate\n'
        yield b'released\n' if event.wait(30) else b'gate-timeout\n'

    return StreamingHttpResponse(generate(), content_type='text/plain')


def release_view(request: WSGIRequest) -> HttpResponse:
    """Open the gate named by ?gate=G."""
    _gate(request.GET['gate']).set()
    return HttpResponse('released', content_type='text/plain')


def file_view(request: WSGIRequest) -> FileResponse:
    """FileResponse (Django hands its file to wsgi.file_wrapper)."""
    return FileResponse(Path(request.GET['path']).open('rb'), content_type='application/octet-stream')


def error_view(request: WSGIRequest) -> HttpResponse:
    """An unhandled exception: Django answers 500 and logs the traceback (django.request → stderr)."""
    raise RuntimeError('django boom marker')


def thread_local_view(request: WSGIRequest) -> JsonResponse:
    """Count requests in a module-level threading.local (Django keeps DB connections in one)."""
    _local.count = getattr(_local, 'count', 0) + 1
    return JsonResponse({'thread': threading.get_ident(), 'count': _local.count})


def finished_view(request: WSGIRequest) -> JsonResponse:
    """How many request_finished signals fired so far (Django sends it from the response's close())."""
    with _lock:
        return JsonResponse({'finished': _finished['count']})


urlpatterns = [
    path('json/', json_view),
    path('form/', form_view),
    path('protected-form/', protected_form_view),
    path('upload/', upload_view),
    path('body/', body_view),
    path('redirect/', redirect_view),
    path('cookies/', cookies_view),
    path('missing/', missing_view),
    path('stream/', stream_view),
    path('gated-stream/', gated_stream_view),
    path('release/', release_view),
    path('file/', file_view),
    path('error/', error_view),
    path('thread-local/', thread_local_view),
    path('finished/', finished_view),
]

application = get_wsgi_application()
