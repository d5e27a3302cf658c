"""The deal card on a referral's page (vendor side only): where the deal lives (the CRM, the
built-in pipeline, or nowhere else) and the one way to close it there (integrations.closing)."""

from accounts import roles
from accounts.permissions import can
from attribution.models import DealSnapshot
from integrations.builtin.services import WORKABLE, current_stage
from integrations.closing import CRM, MANUAL, PIPELINE, close_mode, outcomes_for
from integrations.deal_forms import CloseDealForm


def crm_panel(membership, referral, close_form=None) -> dict | None:
    """What the vendor sees of this referral's deal: with a CRM, the sync state, the CRM's ids
    and link, the last error, and (for deciders) an override; with the built-in pipeline, the
    deal's stage and where it can move; without either, the deal as closed by hand and the
    form that closes it. None for partners and operators.

    `referral` must come through the referral's own door (get_referral), which this trusts.
    `close_form` is a bound form to show again with its errors.
    """
    if membership is None or membership.organization_id != referral.vendor_id:
        return None
    mode = close_mode(referral.vendor_id)
    connection = mode.connection
    panel = {"mode": mode.kind, "connection": connection, "builtin": mode.kind == PIPELINE,
             "can_manage": can(membership, roles.CRM_MANAGE),
             "deal": (DealSnapshot.objects.filter(referral=referral)
                      .order_by("-received_at", "-pk").first())}
    outcomes = outcomes_for(membership, referral, mode)
    if outcomes:
        panel["close_form"] = close_form or CloseDealForm(
            referral=referral, outcomes=outcomes, reason_required=mode.kind == CRM)
    if mode.kind == PIPELINE:
        stage = current_stage(referral)
        may_update = can(membership, roles.REFERRAL_UPDATE_STAGE, referral)
        panel.update(
            stage=stage, stage_label=connection.stage_labels.get(stage, stage),
            stages=connection.stages, may_update=may_update,
            can_move=may_update and referral.status in WORKABLE)
    elif mode.kind == CRM:
        panel["record"] = referral.sync_records.filter(connection=connection).first()
    elif mode.kind == MANUAL and not outcomes and panel["deal"] is None:
        return None  # nothing to show and nothing to do
    return panel
