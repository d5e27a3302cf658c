from django.core.paginator import Paginator
from django.utils.functional import cached_property

PAGE_SIZE = 25


class CappedPaginator(Paginator):
    """A Paginator that counts rows only up to `count_ahead` past the start of the requested
    page, so that a page of a huge list does not cost a COUNT(*) over all of it (the page itself
    already costs reading up to its OFFSET). When the list ends within that reach the count is
    exact and the page says "Page N of M", as before. Otherwise `is_capped` is true, `count` and
    `num_pages` are lower bounds and the page says "Page N of many"; the page's rows, its number
    and has_next/has_previous are still exact. Junk or out-of-range numbers land where a plain
    Paginator's would (an out-of-range number is counted exactly to find the last page)."""

    MAX_PAGE = 10**7  # past this, count exactly (and keep LIMIT within bigint)

    def __init__(self, object_list, per_page, *, count_ahead, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        self.count_ahead = max(count_ahead, int(per_page))
        self.is_capped = False
        self._count_limit = None  # None: count exactly

    def get_page(self, number):
        try:
            wanted = int(number)
        except (TypeError, ValueError):
            wanted = 1  # Paginator.get_page shows the first page for junk
        if 1 <= wanted <= self.MAX_PAGE:
            self._count_limit = (wanted - 1) * int(self.per_page) + self.count_ahead
        return super().get_page(number)

    @cached_property
    def count(self):
        if self._count_limit is None or not hasattr(self.object_list, "order_by"):
            return super().count
        bounded = self.object_list.order_by()[: self._count_limit + 1].count()
        self.is_capped = bounded > self._count_limit
        return bounded


def paginate(request, queryset, per_page: int = PAGE_SIZE, count_ahead: int | None = None):
    """A page of `queryset` for ?page=N; out-of-range or junk page numbers give the nearest page.
    With `count_ahead`, rows are counted only that far past the page (see CappedPaginator)."""
    if count_ahead:
        paginator = CappedPaginator(queryset, per_page, count_ahead=count_ahead)
    else:
        paginator = Paginator(queryset, per_page)
    return paginator.get_page(request.GET.get("page"))


def querystring_without_page(request) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()
