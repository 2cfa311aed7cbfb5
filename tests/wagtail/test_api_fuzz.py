"""Property-based requests against the package's REST search API over Wagtail images.

schemathesis generates requests from its OpenAPI schema (/api/wagtail/schema/) and sends them
to a live server as a superuser (an anonymous caller may choose no image), with the checks of
tests/test_api_schemathesis.py (tests/schemathesis_run.py). ``make fuzz`` runs them with a
random seed and more cases. Wagtail's images API v2 has no schema: test_api_v2_fuzz.py.
"""

from __future__ import annotations

import math

import pytest
import requests

from tests.schemathesis_run import (
    FUZZ_CASES,
    UPLOAD_EXCLUSIONS,
    Outcome,
    assert_keeps_the_contract,
    fuzz_seed,
    run_against_schema,
    runs_for,
)

# serialized_rollback, as the browser tests: a transactional test without it lets the flush after it
# create the content types again, and the next test that restores the serialized database (Wagtail's
# root page and collection) then collides with them (IntegrityError at its setup).
pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True), pytest.mark.slow]

OPERATIONS = {
    "GET /api/wagtail/images/",
    "GET /api/wagtail/images/search/",
    "POST /api/wagtail/images/search/",
    "GET /api/wagtail/images/{id}/similar/",
    "GET /api/wagtail/images/duplicates/",
}
EXCLUDED = {"POST /api/wagtail/images/search/": UPLOAD_EXCLUSIONS}
REACHED = (
    "GET /api/wagtail/images/",
    "GET /api/wagtail/images/search/",
    "GET /api/wagtail/images/{id}/similar/",
    "GET /api/wagtail/images/duplicates/",
)

# 5 operations x 2 modes, plus valid ones around a stored image: 11 x 36 = 396 requests.
EXAMPLES = 36


def run(live_server, sample_images, django_user_model, settings, examples: int, seed: int | None = None) -> Outcome:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {}}
    django_user_model.objects.create_superuser("fuzz", "fuzz@example.com", "password")
    session = requests.Session()
    session.auth = ("fuzz", "password")  # HTTP basic: DRF's default authenticators take it
    return run_against_schema(
        f"{live_server.url}/api/wagtail/schema/?format=json",
        OPERATIONS,
        examples,
        anchor=("similar", sample_images["chelsea"].pk),
        excluded=EXCLUDED,
        session=session,
        seed=seed,
        progress=seed is not None,
    )


def test_generated_search_api_requests_get_no_5xx_and_match_the_schema(
    live_server, sample_images, django_user_model, settings
):
    outcome = run(live_server, sample_images, django_user_model, settings, EXAMPLES)
    print(f"\n{outcome.total} generated requests; statuses by operation: {dict(sorted(outcome.statuses.items()))}")
    assert outcome.total >= runs_for(OPERATIONS) * EXAMPLES * 0.9
    assert_keeps_the_contract(outcome, REACHED, reached=10)


@pytest.mark.skipif(not FUZZ_CASES, reason="make fuzz: set SEMANTIC_IMAGES_FUZZ_CASES")
def test_fuzz_search_api_with_a_random_seed(live_server, sample_images, django_user_model, settings):
    """``make fuzz``: at least SEMANTIC_IMAGES_FUZZ_CASES requests, seed SEMANTIC_IMAGES_FUZZ_SEED or random."""
    seed = fuzz_seed()
    print(f"\nfuzz seed: {seed} (rerun with SEED={seed})", flush=True)
    per_run = math.ceil(FUZZ_CASES / runs_for(OPERATIONS))
    outcome = run(live_server, sample_images, django_user_model, settings, per_run, seed)
    print(outcome.summary(seed))
    assert_keeps_the_contract(outcome, REACHED, reached=min(10, per_run // 10))
