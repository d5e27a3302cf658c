"""Webhook entry point: /integrations/webhooks/<provider>/<token>/.

The token in the URL finds the connection; the provider's own module then authenticates the
delivery (HubSpot v3 signature, Pipedrive basic auth) and answers 401 for anything it cannot
verify, storing nothing.
"""

from importlib import import_module

from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from integrations.models import CrmConnection

WEBHOOK_PROVIDERS = {"hubspot", "pipedrive"}


@csrf_exempt
@require_POST
def receive(request, provider: str, token: str):
    if provider not in WEBHOOK_PROVIDERS:
        return HttpResponse(status=404)
    connection = (CrmConnection.objects.live().select_related("vendor")
                  .filter(provider=provider, webhook_token=token).first())
    if connection is None:
        return HttpResponse(status=404)
    return import_module(f"integrations.{provider}.webhooks").handle(request, connection)
