from django.apps import AppConfig


class PartnerhubConfig(AppConfig):
    name = "partnerhub"
    verbose_name = "PartnerHub"
