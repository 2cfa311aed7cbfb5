"""Property-based requests from the generated OpenAPI schema, against a live server.

schemathesis reads /api/schema/ from a real HTTP server (pytest-django's
``live_server``, real PostgreSQL + pgvector, real models), generates valid and
invalid requests for every operation, and checks every response: no 5xx, status
codes, content types, headers and bodies as the schema documents them.
"""

from __future__ import annotations

from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# OpenAPI can say "a binary file" but not "a decodable image": a schema-valid upload of
# random bytes is rightly a 400, so "valid data is accepted" is not checked for uploads.
# And an extra multipart part that Django's parser drops (a name it cannot read) never reaches
# the view, which refuses every extra field it does see (tested in test_api.py); so "invalid
# data is rejected" is not checked for uploads either. No-5xx and the response checks still are.
EXCLUDED = {"POST /api/photos/search/": [positive_data_acceptance, negative_data_rejection]}

# Per run: 3 operations x 2 modes (valid, invalid), plus valid ones around a stored photo: 7 x 180 requests.
EXAMPLES = 180


def test_generated_requests_get_no_5xx_and_match_the_schema(live_server, sample_photos, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {}}
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {
        "GET /api/photos/search/",
        "POST /api/photos/search/",
        "GET /api/photos/{id}/similar/",
    }
    session = requests.Session()
    statuses: Counter[tuple[str, int]] = Counter()
    failures: dict[tuple[str, str], str] = {}

    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    runs = [(op, mode, {}) for op in operations for mode in (positive, negative)]
    # Random ids rarely exist: also search around a stored photo.
    similar = next(op for op in operations if "similar" in op.label)
    runs.append((similar, positive, {"path_parameters": {"id": sample_photos["chelsea"].pk}}))
    for operation, mode, fixed in runs:

        @given(case=operation.as_strategy(generation_mode=mode, **fixed))
        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            label = case.operation.label
            response = case.call(session=session)
            statuses[(label, response.status_code)] += 1
            try:
                case.validate_response(response, excluded_checks=EXCLUDED.get(label))
            except (AssertionError, BaseExceptionGroup) as exc:  # collect every kind of failure, report them all
                kinds = " ".join(line.strip() for line in str(exc).splitlines() if line.strip().startswith("- "))
                failures.setdefault((label, kinds), f"{response.request.url} -> {response.status_code}: {exc}")

        run()

    total = sum(statuses.values())
    print(f"\n{total} generated requests; statuses by operation: {dict(sorted(statuses.items()))}")
    assert total >= 1000
    assert not [key for key in statuses if key[1] >= 500], statuses
    assert not failures, "\n\n".join(failures.values())
    # The generator reached the real search, not only the error paths.
    assert statuses[("GET /api/photos/search/", 200)] > 50
    assert statuses[("GET /api/photos/{id}/similar/", 200)] > 50
