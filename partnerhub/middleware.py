from accounts import audit
from accounts.tenancy import choose_membership, memberships_in_network, network_for_host
from partnerhub.clientip import drop_untrusted_forwarded_headers, resolve_client_ip


class ClientIPMiddleware:
    """Sets request.client_ip and the audit context (IP, user agent) for service functions."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.client_ip = resolve_client_ip(request.META)
        drop_untrusted_forwarded_headers(request.META)
        token = audit.set_request_context(
            ip=request.client_ip or None,
            user_agent=request.META.get("HTTP_USER_AGENT", "")[:400],
        )
        try:
            return self.get_response(request)
        finally:
            audit.reset_request_context(token)


class TenancyMiddleware:
    """Resolves the network from the host and the active membership from the session.

    Views read `request.network`, `request.memberships` (the switcher's choices) and
    `request.membership` (None when the user has no active membership in this network).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.network = network_for_host(request.get_host())
        request.memberships = memberships_in_network(request.user, request.network)
        request.membership = choose_membership(request)
        return self.get_response(request)


class PermissionsPolicyMiddleware:
    """Sends the Permissions-Policy header (settings.PERMISSIONS_POLICY) on every response:
    the browser features no PartnerHub page uses are switched off, for frames too."""

    def __init__(self, get_response):
        from django.conf import settings

        self.header = ", ".join(
            f"{feature}=({' '.join(allow)})"
            for feature, allow in settings.PERMISSIONS_POLICY.items())
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if self.header:
            response.headers.setdefault("Permissions-Policy", self.header)
        return response
