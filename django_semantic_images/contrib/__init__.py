"""Integrations with other Django applications (``contrib.wagtail``: Wagtail's images)."""
