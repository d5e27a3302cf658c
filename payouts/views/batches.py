"""Placeholder: filled in by the payouts work."""

urlpatterns = []
