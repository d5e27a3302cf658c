# Referral models arrive with the referrals issue (deal registration, conflicts, review).
