"""A single-file Django project: settings in code, one JSON view at /json, no database, DEBUG off."""

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

from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path


def json_view(request: HttpRequest) -> JsonResponse:
    """The benchmarked view."""
    return JsonResponse({'message': 'Hello, World!'})


urlpatterns = [path('json', json_view)]

application = get_wsgi_application()
