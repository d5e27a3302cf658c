from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts import twofactor
from accounts.forms import EmailLoginForm
from accounts.models import Organization
from accounts.tenancy import switch_membership


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = EmailLoginForm
    redirect_authenticated_user = True

    def form_valid(self, form):
        user = form.get_user()
        if twofactor.is_enrolled(user) or twofactor.required_for(user, self.request.network):
            # Not logged in yet: the code (or enrolment) comes first.
            return twofactor.begin_second_step(self.request, user, self.get_success_url(),
                                               user.backend)
        response = super().form_valid(form)
        identify(user)
        return response


def identify(user):
    from integrations import analytics

    analytics.identify(user, traits={"memberships": user.memberships.filter(
        status="active").count()})


@login_required
def no_membership(request):
    if request.membership is not None:
        return redirect("home")
    # Tell a rejected applicant why, instead of a generic "no access".
    rejected = (Organization.objects.filter(
        network=request.network, memberships__user=request.user,
        status=Organization.REJECTED).order_by("-rejected_at").first()
        if request.network else None)
    return render(request, "accounts/no_membership.html", {"rejected": rejected}, status=403)


@login_required
@require_POST
def switch(request):
    if switch_membership(request, request.POST.get("membership", "")):
        messages.success(request, f"Switched to {request.membership.organization.name}.")
    else:
        messages.error(request, "That membership is not available.")
    # Always land on the dashboard: the page the user was on belongs to the previous
    # organization and would (rightly) be a 404 for the new one.
    return redirect("home")
