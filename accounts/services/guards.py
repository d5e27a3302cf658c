from accounts.errors import PermissionDenied
from accounts.permissions import can


def require(membership, action, obj=None):
    if not can(membership, action, obj):
        raise PermissionDenied()
