from django.urls import path

from integrations import views, webhooks

app_name = "integrations"

urlpatterns = [
    path("integrations/webhooks/<str:provider>/<str:token>/", webhooks.receive,
         name="webhook"),
    path("integrations/crm/", views.connection, name="connection"),
    path("integrations/crm/connect/<str:provider>/", views.connect, name="connect"),
    path("integrations/crm/<uuid:public_id>/test/", views.test, name="test"),
    path("integrations/crm/<uuid:public_id>/disable/", views.disable, name="disable"),
    path("integrations/crm/mapping/", views.mapping, name="mapping"),
    path("integrations/crm/sync/", views.sync_log, name="sync_log"),
    path("integrations/crm/sync/<uuid:public_id>/retry/", views.sync_retry, name="sync_retry"),
    path("referrals/<uuid:public_id>/stage/", views.builtin_stage, name="builtin_stage"),
    path("referrals/<uuid:public_id>/deal/close/", views.deal_close, name="deal_close"),
]
