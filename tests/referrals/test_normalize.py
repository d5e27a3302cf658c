"""The same customer account normalizes to the same domain and name however a partner types it,
and different accounts stay different (so conflicts are neither missed nor invented)."""

import pytest

from referrals.normalize import normalize_company_name, normalize_domain

DOMAINS = [
    # (typed by the partner, registrable domain)
    ("acme.com", "acme.com"),
    ("www.acme.com", "acme.com"),
    ("www.eu.acme.co.uk", "acme.co.uk"),
    ("https://www.eu.acme.co.uk/x", "acme.co.uk"),
    ("shop.acme.com", "acme.com"),
    ("a.b.c.acme.com", "acme.com"),
    ("http://acme.com", "acme.com"),
    ("https://acme.com", "acme.com"),
    ("http://shop.acme.com/path?q=1", "acme.com"),
    ("https://acme.com/pricing/enterprise#plans", "acme.com"),
    ("acme.com/pricing", "acme.com"),
    ("  acme.com/pricing  ", "acme.com"),
    ("https://acme.com:8443/login", "acme.com"),
    ("www.acme.co.uk:443", "acme.co.uk"),
    ("https://user:secret@acme.com/", "acme.com"),
    ("http://acme.com?next=www.other.com", "acme.com"),
    ("HTTPS://WWW.ACME.COM/", "acme.com"),
    ("WWW.Acme.CO.UK", "acme.co.uk"),
    ("ACME.DE", "acme.de"),
    ("mail.acme.co.uk.", "acme.co.uk"),  # a fully qualified name with the root dot
    # Multi-label public suffixes.
    ("acme.com.au", "acme.com.au"),
    ("www.acme.com.au", "acme.com.au"),
    ("https://app.eu.acme.com.au/login", "acme.com.au"),
    ("acme.co.jp", "acme.co.jp"),
    ("acme.co.nz", "acme.co.nz"),
    ("acme.com.br", "acme.com.br"),
    ("acme.gov.uk", "acme.gov.uk"),
    ("acme.k12.ca.us", "acme.k12.ca.us"),
    # Private or reserved TLDs keep the host minus www.
    ("www.acme.example", "acme.example"),
    # Nothing registrable: no domain at all, so no accidental domain conflict.
    ("", ""),
    ("   ", ""),
    ("localhost", ""),
    ("acme", ""),
    ("192.168.1.1", ""),
    ("not a url", ""),
]


@pytest.mark.parametrize("typed,expected", DOMAINS, ids=[d[0] or "<empty>" for d in DOMAINS])
def test_domain_is_the_registrable_domain(typed, expected):
    assert normalize_domain(typed) == expected


@pytest.mark.parametrize("a,b", [
    ("https://www.acme.co.uk/", "eu.acme.co.uk"),
    ("http://ACME.com", "https://shop.acme.com/cart"),
    ("acme.com.au", "https://www.acme.com.au/contact"),
])
def test_variants_of_one_site_normalize_identically(a, b):
    assert normalize_domain(a) == normalize_domain(b) != ""


@pytest.mark.parametrize("a,b", [
    ("acme.co.uk", "acme.com"),
    ("acme.com.au", "acme.com"),
    ("acme.com", "acme-corp.com"),
    ("acme.co.uk", "co.uk"),
])
def test_different_sites_stay_different(a, b):
    assert normalize_domain(a) != normalize_domain(b)


def test_customers_on_a_shared_hosting_suffix_are_different_accounts():
    """Two Shopify stores (or GitHub Pages / Heroku apps) are two customers: the public suffix
    list's private section makes `myshopify.com` a suffix, so the registrable domain is the
    store's own name. Collapsing them to `myshopify.com` would flag every store as a conflict
    with the first one registered (and block the same partner's second store outright)."""
    assert normalize_domain("acme.myshopify.com") != normalize_domain("globex.myshopify.com")
    assert normalize_domain("https://acme.myshopify.com/") == "acme.myshopify.com"
    assert normalize_domain("acme.github.io") == "acme.github.io"
    assert normalize_domain("acme.herokuapp.com") != normalize_domain("other.herokuapp.com")


def test_international_domain_matches_its_punycode_form():
    """`bücher.de` and `xn--bcher-kva.de` are one domain: typed either way it is one account."""
    assert normalize_domain("https://www.bücher.de/") == normalize_domain("xn--bcher-kva.de")


NAMES = [
    # (typed by the partner, normalized name)
    ("Acme", "acme"),
    ("ACME", "acme"),
    ("acme", "acme"),
    ("Acme Inc", "acme"),
    ("Acme Inc.", "acme"),
    ("Acme, Inc.", "acme"),
    ("ACME INC.", "acme"),
    ("Acme Incorporated", "acme"),
    ("Acme Corporation", "acme"),
    ("Acme Corp.", "acme"),
    ("Acme Co", "acme"),
    ("Acme Company Limited", "acme"),
    ("Acme LLC", "acme"),
    ("Acme L.L.C.", "acme"),
    ("Acme Ltd", "acme"),
    ("Acme Ltd.", "acme"),
    ("Acme Limited", "acme"),
    ("Acme GmbH", "acme"),
    ("Acme GmbH & Co. KG", "acme"),
    ("Acme S.A.", "acme"),
    ("Acme SA", "acme"),
    ("Acme S.A.S.", "acme"),
    ("Acme B.V.", "acme"),
    ("Acme BV", "acme"),
    ("Acme N.V.", "acme"),
    ("Acme AG", "acme"),
    ("Acme Pty Ltd", "acme"),
    ("Acme Pty. Ltd.", "acme"),
    ("Acme Pte. Ltd.", "acme"),
    ("Acme plc", "acme"),
    ("Acme AB", "acme"),
    ("Acme Sp. z o.o.", "acme"),
    # Accents and other scripts' compatibility forms.
    ("Acmé", "acme"),
    ("Acmé Inc.", "acme"),
    ("ACMÉ S.A.", "acme"),
    ("Société Générale S.A.", "societe generale"),
    ("Nestlé S.A.", "nestle"),
    ("Müller GmbH & Co. KG", "muller"),
    ("Ｆｕｌｌｗｉｄｔｈ Inc", "fullwidth"),
    # Punctuation and whitespace.
    ("  Acme   Widgets  ", "acme widgets"),
    ("Acme-Widgets Ltd", "acme widgets"),
    ("Acme_Widgets", "acme widgets"),
    ("O'Reilly Media, Inc.", "o reilly media"),
    ("Acme (Europe) Ltd", "acme europe"),
    ("Acme Widgets!", "acme widgets"),
    # "&" is punctuation, spaced or not.
    ("Procter & Gamble Co.", "procter gamble"),
    ("Procter&Gamble", "procter gamble"),
    ("Johnson & Johnson", "johnson johnson"),
    ("AT&T Inc.", "at t"),
    # Words that merely look like suffixes stay when they are not at the end.
    ("Co-operative Bank", "co operative bank"),
    ("Acme Holdings Inc", "acme holdings"),
    # A company literally named like a legal form keeps its name.
    ("AG", "ag"),
    ("Inc.", "inc"),
    ("", ""),
]


@pytest.mark.parametrize("typed,expected", NAMES, ids=[n[0] or "<empty>" for n in NAMES])
def test_company_name_normalization(typed, expected):
    assert normalize_company_name(typed) == expected


@pytest.mark.parametrize("variants", [
    ["Acme Inc", "ACME, Inc.", "Acme Corporation", "acme", "Acmé Ltd.", "ACME GmbH"],
    ["Brightpath Pty Ltd", "BRIGHTPATH PTY. LTD.", "Brightpath"],
    ["Müller AG", "Muller", "MÜLLER AG"],
])
def test_name_variants_are_one_account(variants):
    assert len({normalize_company_name(v) for v in variants}) == 1


@pytest.mark.parametrize("a,b", [
    ("Acme", "Acme Widgets"),
    ("Acme Inc", "Apex Inc"),
    ("Johnson & Johnson", "Johnson"),
])
def test_different_companies_stay_different(a, b):
    assert normalize_company_name(a) != normalize_company_name(b)
