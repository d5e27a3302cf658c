from functools import wraps

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect

from accounts.permissions import can


def membership_required(view):
    """Logged in and holding a usable membership in this network; otherwise explain why."""

    @login_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if request.membership is None:
            return redirect("accounts:no_membership")
        return view(request, *args, **kwargs)

    return wrapper


def require_permission(action: str):
    """The active membership's role must grant `action`; otherwise 404 (the page does not
    exist for this role, just as an out-of-scope object does not)."""

    def decorator(view):
        @membership_required
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not can(request.membership, action):
                raise Http404
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
