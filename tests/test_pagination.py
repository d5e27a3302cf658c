"""CappedPaginator: the same pages as Django's Paginator, with "of many" instead of a full count."""

import pytest
from django.core.paginator import Paginator
from django.template.loader import render_to_string

from accounts.models import Network
from partnerhub.pagination import CappedPaginator
from tests.accounts.factories import NetworkFactory

PER_PAGE, AHEAD = 2, 5


@pytest.fixture
def networks(db):
    NetworkFactory.create_batch(14)  # with the default network: 7 or 8 pages of 2
    return Network.objects.order_by("pk")


def pages(queryset, number):
    capped = CappedPaginator(queryset, PER_PAGE, count_ahead=AHEAD)
    return capped, capped.get_page(number), Paginator(queryset, PER_PAGE).get_page(number)


@pytest.mark.parametrize("number", [None, "", "x", "1.5", "1", "2", "3", "4", "5", "6", "7",
                                    "8", "9", "99", "0", "-1", str(10**30)])
def test_same_page_as_django(networks, number):
    capped, page, expected = pages(networks, number)
    assert list(page.object_list) == list(expected.object_list)
    assert page.number == expected.number
    assert page.has_next() == expected.has_next()
    assert page.has_previous() == expected.has_previous()
    assert (page.start_index(), page.end_index()) == (expected.start_index(),
                                                      expected.end_index())
    if capped.is_capped:
        assert capped.num_pages < expected.paginator.num_pages
    else:
        assert capped.num_pages == expected.paginator.num_pages


def test_counts_only_as_far_ahead_as_asked(networks):
    capped, _, _ = pages(networks, "1")
    assert capped.is_capped and capped.count == AHEAD + 1
    total = networks.count()
    capped, _, _ = pages(networks, str(total // PER_PAGE))  # the end is within reach
    assert not capped.is_capped and capped.count == total


def test_pagination_says_many_when_capped(networks):
    _, page, _ = pages(networks, "1")
    html = render_to_string("components/pagination.html", {"page": page, "querystring": ""})
    assert "Page 1 of many" in html and "page=2" in html
    last = Paginator(networks, PER_PAGE).num_pages
    _, page, _ = pages(networks, str(last))
    html = render_to_string("components/pagination.html", {"page": page, "querystring": ""})
    assert f"Page {last} of {last}" in html and "page=" in html
