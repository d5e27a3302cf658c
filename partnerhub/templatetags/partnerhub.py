from django import template

from partnerhub.money import format_money

register = template.Library()


@register.simple_tag
def money(minor, currency):
    return format_money(minor, currency)


@register.filter
def get_item(mapping, key):
    return mapping.get(key) if hasattr(mapping, "get") else None
