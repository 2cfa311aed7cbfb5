"""Property-based requests from the generated OpenAPI schema, against a live server.

schemathesis reads /api/schema/ from a real HTTP server (pytest-django's
``live_server``, real PostgreSQL + pgvector, real models), generates valid and
invalid requests for every operation, and checks every response: no 5xx, status
codes, content types, headers and bodies as the schema documents them.

The suite runs a fixed, derandomized 1,760 requests. ``make fuzz`` runs the same checks
with a random seed and many more cases (``test_fuzz_with_a_random_seed``, skipped unless
``SEMANTIC_IMAGES_FUZZ_CASES`` is set); see docs/api.md for its last result.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import seed as hypothesis_seed
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

OPERATIONS = {
    "GET /api/photos/",
    "GET /api/photos/search/",
    "POST /api/photos/search/",
    "GET /api/photos/{id}/similar/",
    "GET /api/photos/duplicates/",
}

# OpenAPI can say "a binary file" but not "a decodable image": a schema-valid upload of
# random bytes is rightly a 400, so "valid data is accepted" is not checked for uploads.
# And an extra multipart part that Django's parser drops (a name it cannot read) never reaches
# the view, which refuses every extra field it does see (tested in test_api.py); so "invalid
# data is rejected" is not checked for uploads either. No-5xx and the response checks still are.
EXCLUDED = {"POST /api/photos/search/": [positive_data_acceptance, negative_data_rejection]}

# Per run: 5 operations x 2 modes (valid, invalid), plus valid ones around a stored photo: 11 x 160 requests.
EXAMPLES = 160


@dataclass
class Outcome:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    # One example request per kind of failure, and how many requests failed that way.
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.statuses.items() if status >= 500)


def run_against_schema(
    live_server, sample_photos, settings, examples: int, seed: int | None = None, progress: bool = False
) -> Outcome:
    """Generate ``examples`` requests per operation and mode; derandomized without ``seed``."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {}}
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == OPERATIONS
    session = requests.Session()
    outcome = Outcome()

    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    runs = [(op, mode, {}) for op in operations for mode in (positive, negative)]
    # Random ids rarely exist: also search around a stored photo.
    similar = next(op for op in operations if "similar" in op.label)
    runs.append((similar, positive, {"path_parameters": {"id": sample_photos["chelsea"].pk}}))
    for index, (operation, mode, fixed) in enumerate(runs):

        @given(case=operation.as_strategy(generation_mode=mode, **fixed))
        @hypothesis_settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=seed is None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            label = case.operation.label
            response = case.call(session=session, timeout=60)  # a loaded CI machine is slow, not broken
            outcome.statuses[(label, response.status_code)] += 1
            try:
                case.validate_response(response, excluded_checks=EXCLUDED.get(label))
            except (AssertionError, BaseExceptionGroup) as exc:  # collect every kind of failure, report them all
                kinds = " ".join(line.strip() for line in str(exc).splitlines() if line.strip().startswith("- "))
                outcome.failed[(label, kinds)] += 1
                outcome.failures.setdefault((label, kinds), f"{response.request.url} -> {response.status_code}: {exc}")

        if seed is not None:
            run = hypothesis_seed(seed + index)(run)
        run()
        if progress:
            print(
                f"  run {index + 1}/{len(runs)} ({operation.label}, {mode.value}): {outcome.total} requests so far, "
                f"{outcome.server_errors} 5xx, {sum(outcome.failed.values())} contract failures",
                flush=True,
            )
    return outcome


def assert_keeps_the_contract(outcome: Outcome, reached: int = 50) -> None:
    assert not outcome.server_errors, outcome.statuses
    assert not outcome.failures, "\n\n".join(outcome.failures.values())
    # The generator reached the real searches (more than ``reached`` answers each), not only the error paths.
    for label in (
        "GET /api/photos/search/",
        "GET /api/photos/{id}/similar/",
        "GET /api/photos/",
        "GET /api/photos/duplicates/",
    ):
        assert outcome.statuses[(label, 200)] > reached, (label, dict(outcome.statuses))


def test_generated_requests_get_no_5xx_and_match_the_schema(live_server, sample_photos, settings):
    outcome = run_against_schema(live_server, sample_photos, settings, EXAMPLES)
    print(f"\n{outcome.total} generated requests; statuses by operation: {dict(sorted(outcome.statuses.items()))}")
    assert outcome.total >= 1000
    assert_keeps_the_contract(outcome)


FUZZ_CASES = int(os.environ.get("SEMANTIC_IMAGES_FUZZ_CASES") or 0)


@pytest.mark.skipif(not FUZZ_CASES, reason="make fuzz: set SEMANTIC_IMAGES_FUZZ_CASES")
def test_fuzz_with_a_random_seed(live_server, sample_photos, settings):
    """``make fuzz``: at least SEMANTIC_IMAGES_FUZZ_CASES requests, seed SEMANTIC_IMAGES_FUZZ_SEED or random."""
    seed = int(os.environ.get("SEMANTIC_IMAGES_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nfuzz seed: {seed} (rerun with SEED={seed})", flush=True)
    runs = 2 * len(OPERATIONS) + 1
    per_run = math.ceil(FUZZ_CASES / runs)
    outcome = run_against_schema(live_server, sample_photos, settings, per_run, seed, True)
    print(
        f"fuzz seed {seed}: {outcome.total} requests, {outcome.server_errors} 5xx, "
        f"{sum(outcome.failed.values())} contract failures in {len(outcome.failures)} kinds"
    )
    print(f"statuses by operation: {dict(sorted(outcome.statuses.items()))}")
    for key, example in outcome.failures.items():
        print(f"\n{outcome.failed[key]} x {key[0]}: {example}")
    assert_keeps_the_contract(outcome, reached=min(50, per_run // 3))  # a short run reaches fewer
