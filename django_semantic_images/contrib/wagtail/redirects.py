"""Where a Wagtail admin view of this app goes back to: its ``next``, when that is safe."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme


def next_url_from(request: HttpRequest) -> str:
    """The ``next`` of ``request`` (POST, else GET) if it is on this site, else "". Wagtail's own
    check lets a page served over HTTPS send the editor on to ``http://`` (the same host, unencrypted);
    this one also needs HTTPS then (``require_https``), as Django's login view does."""
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return next_url if next_url and safe else ""
