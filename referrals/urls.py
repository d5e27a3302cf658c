from django.urls import path

from referrals.views import detail, imports, lists, programs, submit

app_name = "referrals"

urlpatterns = [
    path("referrals/", lists.referral_list, name="list"),
    path("referrals/export.csv", lists.referral_export, name="export"),
    path("referrals/new/", submit.referral_new, name="new"),
    path("referrals/bulk/", lists.referral_bulk, name="bulk"),
    path("referrals/<uuid:public_id>/", detail.referral_detail, name="detail"),
    path("referrals/<uuid:public_id>/edit/", submit.referral_edit, name="edit"),
    path("referrals/<uuid:public_id>/accept/", detail.referral_accept, name="accept"),
    path("referrals/<uuid:public_id>/reject/", detail.referral_reject, name="reject"),
    path("referrals/<uuid:public_id>/withdraw/", detail.referral_withdraw, name="withdraw"),
    path("referrals/<uuid:public_id>/assign/", detail.referral_assign, name="assign"),
    path("referrals/<uuid:public_id>/extend/", detail.referral_extend, name="extend"),
    path("referrals/<uuid:public_id>/message/", detail.referral_message, name="message"),
    path("programs/", programs.program_list, name="programs"),
    path("programs/new/", programs.program_new, name="program_new"),
    path("programs/<uuid:public_id>/", programs.program_detail, name="program_detail"),
    path("programs/<uuid:public_id>/edit/", programs.program_edit, name="program_edit"),
    path("programs/<uuid:public_id>/enrol/", programs.program_enrol, name="program_enrol"),
    path("enrolments/<uuid:public_id>/decide/", programs.enrolment_decide,
         name="enrolment_decide"),
    path("referrals/import/", imports.import_upload, name="import_upload"),
    path("referrals/import/template.csv", imports.import_template, name="import_template"),
    path("referrals/import/<uuid:public_id>/", imports.import_detail, name="import_detail"),
    path("referrals/import/<uuid:public_id>/confirm/", imports.import_confirm,
         name="import_confirm"),
    path("referrals/import/<uuid:public_id>/progress/", imports.import_progress,
         name="import_progress"),
]
