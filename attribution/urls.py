from django.urls import path

from attribution.views import attributions, disputes

app_name = "attribution"

urlpatterns = [
    path("attributions/", attributions.attribution_list, name="list"),
    path("attributions/<uuid:public_id>/", attributions.attribution_detail, name="detail"),
    path("attributions/<uuid:public_id>/confirm/", attributions.attribution_confirm,
         name="confirm"),
    path("attributions/<uuid:public_id>/reassign/", attributions.attribution_reassign,
         name="reassign"),
]

# Disputes (attribution/views/disputes.py). Attribution detail routes live above; other
# helpers coordinate by appending only.
urlpatterns += [
    path("disputes/", disputes.dispute_queue, name="dispute_queue"),
    path("disputes/<uuid:public_id>/", disputes.dispute_detail, name="dispute_detail"),
    path("disputes/<uuid:public_id>/respond/", disputes.dispute_respond,
         name="dispute_respond"),
    path("disputes/<uuid:public_id>/message/", disputes.dispute_message,
         name="dispute_message"),
    path("disputes/<uuid:public_id>/review/", disputes.dispute_review, name="dispute_review"),
    path("disputes/<uuid:public_id>/reassign/", disputes.dispute_reassign,
         name="dispute_reassign"),
    path("disputes/<uuid:public_id>/resolve/", disputes.dispute_resolve,
         name="dispute_resolve"),
    path("disputes/<uuid:public_id>/withdraw/", disputes.dispute_withdraw,
         name="dispute_withdraw"),
    path("disputes/<uuid:public_id>/evidence/<uuid:evidence_id>/", disputes.dispute_evidence,
         name="dispute_evidence"),
    path("referrals/<uuid:public_id>/dispute/", disputes.dispute_open_partner,
         name="dispute_open_partner"),
    path("referrals/<uuid:public_id>/disputes/", disputes.referral_disputes,
         name="referral_disputes"),
    path("attributions/<uuid:public_id>/dispute/", disputes.dispute_open_vendor,
         name="dispute_open_vendor"),
]

# Attribution metrics (attribution/views/attributions.py): the dashboard tile's numbers.
urlpatterns += [
    path("attributions/metrics/", attributions.attribution_metrics_tile, name="metrics_tile"),
]
