"""Business actions on programs and referrals. Each checks the actor's permission, runs in one
transaction, writes the audit event and timeline entry, and queues side effects on commit."""

from referrals.services.lifecycle import (
    ReferralData,
    accept_referral,
    apply_deal_outcome,
    assign_referral,
    expire_stale_registrations,
    extend_protection,
    reinstate_registration,
    reject_referral,
    save_draft,
    submit_referral,
    update_referral,
    warn_expiring_registrations,
    withdraw_referral,
)
from referrals.services.programs import decide_enrolment, request_enrolment, save_program
from referrals.services.thread import post_message

__all__ = [
    "ReferralData", "accept_referral", "apply_deal_outcome", "assign_referral",
    "decide_enrolment", "expire_stale_registrations", "extend_protection", "post_message",
    "reinstate_registration", "reject_referral", "request_enrolment", "save_draft",
    "save_program", "submit_referral", "update_referral", "warn_expiring_registrations",
    "withdraw_referral",
]
