import os

from celery import Celery
from celery.signals import worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "partnerhub.settings")

app = Celery("partnerhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_shutdown.connect
def flush_analytics(**kwargs):
    """Deliver queued analytics events before a worker process exits."""
    from integrations.analytics import reset_client

    reset_client()
