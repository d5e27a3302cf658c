"""`can(membership, action, obj)`: the one permission check, reading the role table."""

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.http import Http404

from accounts import roles

# Extra object rules for actions whose reach is narrower than the role's read scope.
_OBJECT_RULES = {
    # Members are managed only inside one's own organization, even by network-wide roles.
    roles.MEMBERS_MANAGE: lambda m, obj: _organization_id(obj) == m.organization_id,
}


def _organization_id(obj):
    if obj.__class__.__name__ == "Organization":
        return obj.pk
    return getattr(obj, "organization_id", None)


def permissions_of(membership) -> frozenset:
    if membership is None or membership.status != "active":
        return frozenset()
    status = membership.organization.status
    if status == "active":
        return membership.role_def.permissions
    # An applicant may look at its review status; suspended and rejected orgs see nothing.
    return roles.PENDING_PERMISSIONS if status == "pending" else frozenset()


def can(membership, action: str, obj=None) -> bool:
    """May this membership perform `action` (on `obj`, when given)?

    The object check reuses the model's `visible_to`, so what a role may act on is never wider
    than what it may list.
    """
    if action not in permissions_of(membership):
        return False
    if obj is None:
        return True
    rule = _OBJECT_RULES.get(action)
    if rule is not None and not rule(membership, obj):
        return False
    return type(obj).objects.visible_to(membership).filter(pk=obj.pk).exists()


def get_object_for(membership, queryset_or_model, public_id, action: str | None = None):
    """Fetch one object by its public id through `visible_to`, or 404.

    Missing, out of scope and not permitted all give the same 404, so an id never confirms that
    a row exists elsewhere.
    """
    queryset = getattr(queryset_or_model, "objects", queryset_or_model)
    if action is not None and action not in permissions_of(membership):
        raise Http404
    try:
        obj = queryset.visible_to(membership).get(public_id=public_id)
    except (ObjectDoesNotExist, ValidationError, ValueError) as exc:
        raise Http404 from exc
    rule = _OBJECT_RULES.get(action)
    if rule is not None and not rule(membership, obj):
        raise Http404
    return obj
