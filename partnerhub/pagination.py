from django.core.paginator import Paginator
from django.utils.functional import cached_property

PAGE_SIZE = 25


class CappedPaginator(Paginator):
    """A Paginator that counts at most `count_cap` rows, so that a page of a huge list does not
    cost a COUNT(*) over all of it. Below the cap everything is exact. Past it `is_capped` is
    true, `count` is the lower bound `count_cap + 1` and the page says "Page N of many"; every
    page within the cap is still exact (full, with a next page). A page past the cap (a deep
    link) or out of range is counted exactly, so it lands where a plain Paginator's would."""

    def __init__(self, object_list, per_page, *, count_cap, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        self.count_cap = count_cap
        self.is_capped = False
        self._count_exactly = False

    def get_page(self, number):
        try:
            wanted = int(number)
        except (TypeError, ValueError):
            wanted = 1
        if not 1 <= wanted <= self.count_cap // self.per_page:
            self._count_exactly = True  # past the cap, or out of range: the last page
        return super().get_page(number)

    @cached_property
    def count(self):
        if self._count_exactly or not hasattr(self.object_list, "order_by"):
            return super().count
        bounded = self.object_list.order_by()[: self.count_cap + 1].count()
        self.is_capped = bounded > self.count_cap
        return bounded


def paginate(request, queryset, per_page: int = PAGE_SIZE, count_cap: int | None = None):
    """A page of `queryset` for ?page=N; out-of-range or junk page numbers give the nearest page.
    With `count_cap`, at most that many rows are counted (see CappedPaginator)."""
    if count_cap:
        paginator = CappedPaginator(queryset, per_page, count_cap=count_cap)
    else:
        paginator = Paginator(queryset, per_page)
    return paginator.get_page(request.GET.get("page"))


def querystring_without_page(request) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()
