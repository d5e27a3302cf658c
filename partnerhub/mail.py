"""Templated email: every message has a subject, a text and an HTML template under
templates/emails/<name>.{subject.txt,txt,html}. Rendered inside the caller's transaction (so it
sees the data being written), sent by a Celery task after commit."""

from django.conf import settings
from django.db import transaction
from django.template.loader import render_to_string


def render_email(name: str, context: dict) -> tuple[str, str, str]:
    context = {"site_url": settings.SITE_URL, **context}
    subject = " ".join(render_to_string(f"emails/{name}.subject.txt", context).split())
    text = render_to_string(f"emails/{name}.txt", context)
    html = render_to_string(f"emails/{name}.html", context)
    return subject, text, html


def send_templated_email(to: list[str] | str, name: str, context: dict) -> None:
    from partnerhub.tasks import send_email

    recipients = [to] if isinstance(to, str) else list(to)
    if not recipients:
        return
    subject, text, html = render_email(name, context)
    transaction.on_commit(lambda: send_email.delay(recipients, subject, text, html))
