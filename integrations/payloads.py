from integrations.providers.base import ReferralPayload
from partnerhub.money import from_minor
from referrals.models import Referral


def payload_for(referral: Referral, connection, external_ids: dict | None = None
                ) -> ReferralPayload:
    first, _, last = (referral.contact_name or "").strip().partition(" ")
    assignee = next(iter(referral.assignments.all()), None)
    owner = connection.owner_mapping.get(assignee.user.email, "") if assignee else ""
    return ReferralPayload(
        referral_id=str(referral.public_id),
        company_name=referral.company_name,
        domain=referral.domain,
        website=referral.website,
        country=str(referral.country or ""),
        contact_first_name=first,
        contact_last_name=last or first,
        contact_email=referral.contact_email,
        contact_phone=referral.contact_phone,
        contact_title=referral.contact_title,
        amount=(f"{from_minor(referral.amount_minor, referral.currency)}"
                if referral.amount_minor is not None else ""),
        currency=referral.currency,
        expected_close=referral.expected_close,
        notes=referral.notes,
        partner_name=referral.partner.name,
        deal_name=f"{referral.company_name} (referred by {referral.partner.name})",
        owner_id=str(owner),
        external_ids=dict(external_ids or {}),
    )
