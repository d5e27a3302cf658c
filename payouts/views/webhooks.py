"""Stripe's webhook endpoint: /webhooks/stripe/. Register it twice in Stripe's dashboard (for
the platform's events and, as a Connect endpoint, for connected accounts' events) and list
both signing secrets in STRIPE_WEBHOOK_SECRET, comma-separated.

Anything that does not carry a valid, recent signature gets 400 and is not stored; a verified
event is stored once and answered 200 (a redelivery too)."""

from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from payouts import webhooks


@csrf_exempt
@require_POST
def stripe_webhook(request):
    try:
        webhooks.receive(request.body, request.headers.get("Stripe-Signature"))
    except webhooks.BadSignature:
        return HttpResponse("Invalid signature", status=400, content_type="text/plain")
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("webhooks/stripe/", stripe_webhook, name="stripe_webhook"),
]
