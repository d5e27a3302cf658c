"""Writing the audit log. Service functions call `record()`; the request's IP and user agent
come from a context variable the middleware sets, so services never need the request."""

import json
from contextvars import ContextVar

from django.core.serializers.json import DjangoJSONEncoder

_request_context: ContextVar[dict | None] = ContextVar("audit_request_context", default=None)


def set_request_context(*, ip: str | None, user_agent: str):
    return _request_context.set({"ip": ip, "user_agent": user_agent})


def reset_request_context(token) -> None:
    _request_context.reset(token)


def _network_id_of(target):
    for path in ("network_id", "organization.network_id"):
        obj = target
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if obj is not None:
            return obj
    return None


class _AuditEncoder(DjangoJSONEncoder):
    def default(self, o):
        try:
            return super().default(o)
        except TypeError:
            return str(o)  # countries, enums, model instances: their readable form


def _jsonable(value):
    return None if value is None else json.loads(json.dumps(value, cls=_AuditEncoder))


def record(action: str, target, *, actor=None, before=None, after=None, network_id=None):
    """Append one audit event.

    `actor` is a Membership (the usual case), a User (no membership, e.g. an applicant), or
    None for the system itself (scheduled jobs, auto-approval).
    """
    from accounts.models import AuditEvent, Membership

    membership = actor if isinstance(actor, Membership) else None
    user = membership.user if membership else actor
    if network_id is None:
        network_id = (
            membership.organization.network_id if membership else _network_id_of(target)
        )
    context = _request_context.get() or {}
    return AuditEvent.objects.create(
        network_id=network_id,
        actor=user,
        actor_email=getattr(user, "email", "") or "system",
        membership=membership,
        organization_id=membership.organization_id if membership else None,
        role=membership.role if membership else "",
        action=action,
        target_type=target._meta.model_name,
        target_id=str(getattr(target, "public_id", target.pk)),
        target_label=str(target)[:200],
        before=_jsonable(before),
        after=_jsonable(after),
        ip=context.get("ip"),
        user_agent=context.get("user_agent", ""),
    )
