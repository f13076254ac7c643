"""A single-file Django project: settings in code, one JSON view at /json, no database, DEBUG off."""

from collections.abc import Callable

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY='bench-not-secret',  # noqa: S106 - local benchmark only
        ALLOWED_HOSTS=['*'],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=['django.middleware.common.CommonMiddleware'],
        DATABASES={},
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()

from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path

# Django sends request_finished from the response's close(), which PEP 3333 obliges the server to call; its
# receivers (closing database connections, resetting the URLconf) are part of a request's cost. A server that
# never calls close() skips them, so the view reports it for the runner's probe (which asks again after a pause,
# when a server that closes late has closed too).
_signals = {'started': 0, 'finished': 0}


def _count(kind: str) -> Callable[..., None]:
    def receiver(**kwargs: object) -> None:
        _signals[kind] += 1

    return receiver


_on_started, _on_finished = _count('started'), _count('finished')
request_started.connect(_on_started)
request_finished.connect(_on_finished)


def json_view(request: HttpRequest) -> JsonResponse:
    """The benchmarked view."""
    response = JsonResponse({'message': 'Hello, World!'})
    if _signals['started'] - _signals['finished'] > 1:  # every request but this one should be finished
        response['X-WSGI-Issues'] = 'close() not called on earlier responses (Django request_finished skipped)'
    return response


urlpatterns = [path('json', json_view)]

application = get_wsgi_application()
