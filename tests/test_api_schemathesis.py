"""Property-based requests from the generated OpenAPI schema, against a live server.

schemathesis reads /api/schema/ from a real HTTP server (pytest-django's
``live_server``, real PostgreSQL + pgvector, real models), generates valid and
invalid requests for every operation, and checks every response: no 5xx, status
codes, content types, headers and bodies as the schema documents them.

The suite runs a fixed, derandomized 1,760 requests. ``make fuzz`` runs the same checks
with a random seed and many more cases (``test_fuzz_with_a_random_seed``, skipped unless
``SEMANTIC_IMAGES_FUZZ_CASES`` is set); see docs/api.md for its last result. The run itself
is tests/schemathesis_run.py, shared with the Wagtail search API's (tests/wagtail/test_api_fuzz.py).
"""

from __future__ import annotations

import math

import pytest

from tests.schemathesis_run import (
    FUZZ_CASES,
    UPLOAD_EXCLUSIONS,
    Outcome,
    assert_keeps_the_contract,
    fuzz_seed,
    run_against_schema,
    runs_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

OPERATIONS = {
    "GET /api/photos/",
    "GET /api/photos/search/",
    "POST /api/photos/search/",
    "GET /api/photos/{id}/similar/",
    "GET /api/photos/duplicates/",
}
EXCLUDED = {"POST /api/photos/search/": UPLOAD_EXCLUSIONS}
#: The operations whose 200s are counted: the generator must reach the real searches.
REACHED = (
    "GET /api/photos/search/",
    "GET /api/photos/{id}/similar/",
    "GET /api/photos/",
    "GET /api/photos/duplicates/",
)

# Per run: 5 operations x 2 modes (valid, invalid), plus valid ones around a stored photo: 11 x 160 requests.
EXAMPLES = 160


def run(live_server, sample_photos, settings, examples: int, seed: int | None = None) -> Outcome:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {}}
    return run_against_schema(
        f"{live_server.url}/api/schema/?format=json",
        OPERATIONS,
        examples,
        anchor=("similar", sample_photos["chelsea"].pk),
        excluded=EXCLUDED,
        seed=seed,
        progress=seed is not None,
    )


def test_generated_requests_get_no_5xx_and_match_the_schema(live_server, sample_photos, settings):
    outcome = run(live_server, sample_photos, settings, EXAMPLES)
    print(f"\n{outcome.total} generated requests; statuses by operation: {dict(sorted(outcome.statuses.items()))}")
    assert outcome.total >= 1000
    assert_keeps_the_contract(outcome, REACHED, reached=50)


@pytest.mark.skipif(not FUZZ_CASES, reason="make fuzz: set SEMANTIC_IMAGES_FUZZ_CASES")
def test_fuzz_with_a_random_seed(live_server, sample_photos, settings):
    """``make fuzz``: at least SEMANTIC_IMAGES_FUZZ_CASES requests, seed SEMANTIC_IMAGES_FUZZ_SEED or random."""
    seed = fuzz_seed()
    print(f"\nfuzz seed: {seed} (rerun with SEED={seed})", flush=True)
    per_run = math.ceil(FUZZ_CASES / runs_for(OPERATIONS))
    outcome = run(live_server, sample_photos, settings, per_run, seed)
    print(outcome.summary(seed))
    assert_keeps_the_contract(outcome, REACHED, reached=min(50, per_run // 3))  # a short run reaches fewer
