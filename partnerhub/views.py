from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect, render

from partnerhub.dashboards import dashboard_context


@login_required
def home(request):
    if request.membership is None:
        return redirect("accounts:no_membership")
    return render(request, "dashboard.html", dashboard_context(request.membership))


def healthz(request):
    """Liveness and database reachability for the load balancer and compose health checks."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
