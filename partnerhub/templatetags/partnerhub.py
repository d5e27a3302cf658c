from django import template

from partnerhub.money import format_money

register = template.Library()


@register.simple_tag
def money(minor, currency):
    return format_money(minor, currency)


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if hasattr(mapping, "get") else None


@register.filter
def ago(value):
    """'just now' under a minute, else '5 minutes ago'."""
    from django.utils import timezone
    from django.utils.timesince import timesince

    if not value:
        return ""
    if (timezone.now() - value).total_seconds() < 60:
        return "just now"
    return f"{timesince(value)} ago"


@register.filter
def status_label(value):
    from referrals.models import Referral

    return dict(Referral.STATUSES).get(value, value)
