"""The CRM card on a referral's page (vendor side only)."""

from accounts import roles
from accounts.permissions import can
from integrations.builtin.services import current_stage
from integrations.models import CrmConnection
from integrations.sync import live_connection
from referrals.models import Referral

WORKABLE = (Referral.ACCEPTED, Referral.WON, Referral.LOST)


def crm_panel(membership, referral) -> dict | None:
    """What the vendor sees of this referral in its CRM: the sync state, the CRM's ids and
    link, the last error; with the built-in pipeline, the deal's stage and (for those who work
    deals) where it can move. None for partners, operators and vendors without a CRM.

    `referral` must come through the referral's own door (get_referral), which this trusts.
    """
    if membership is None or membership.organization_id != referral.vendor_id:
        return None
    connection = live_connection(referral.vendor_id)
    if connection is None:
        return None
    panel = {"connection": connection, "builtin": connection.provider == CrmConnection.BUILTIN,
             "can_manage": can(membership, roles.CRM_MANAGE)}
    if panel["builtin"]:
        stage = current_stage(referral)
        may_update = can(membership, roles.REFERRAL_UPDATE_STAGE, referral)
        panel.update(
            stage=stage, stage_label=connection.stage_labels.get(stage, stage),
            stages=connection.stages, may_update=may_update,
            can_move=may_update and referral.status in WORKABLE)
    else:
        panel["record"] = referral.sync_records.filter(connection=connection).first()
    return panel
