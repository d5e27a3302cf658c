from django.core.management.base import BaseCommand
from django.db import transaction

from integrations.crypto import CredentialsUnreadable, rotate
from integrations.models import CrmConnection


class Command(BaseCommand):
    help = ("Re-encrypt every stored CRM credential under the first key of "
            "FIELD_ENCRYPTION_KEY. Run after putting a new key in front; then drop the old one.")

    def handle(self, *args, **options):
        done = unreadable = 0
        for pk in CrmConnection.objects.exclude(credentials_encrypted="").values_list(
                "pk", flat=True).iterator():
            with transaction.atomic():
                connection = CrmConnection.objects.select_for_update().get(pk=pk)
                try:
                    connection.credentials_encrypted = rotate(
                        connection.credentials_encrypted)
                except CredentialsUnreadable:
                    unreadable += 1
                    self.stderr.write(f"Connection {connection.public_id}: no configured key "
                                      "opens these credentials; left as is.")
                    continue
                connection.save(update_fields=["credentials_encrypted"])
                done += 1
        self.stdout.write(f"Re-encrypted {done} connection(s); {unreadable} unreadable.")
