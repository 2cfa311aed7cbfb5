"""Shared by the schemathesis tests (tests/test_api_schemathesis.py, tests/wagtail/test_api_fuzz.py):
generate requests from an OpenAPI schema served by a live server, send them, and collect every
status and every failed check, so that a run reports all its failures at once."""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import seed as hypothesis_seed
from hypothesis import settings as hypothesis_settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

# OpenAPI can say "a binary file" but not "a decodable image": a schema-valid upload of
# random bytes is rightly a 400, so "valid data is accepted" is not checked for uploads.
# And an extra multipart part that Django's parser drops (a name it cannot read) never reaches
# the view, which refuses every extra field it does see (tested in test_api.py); so "invalid
# data is rejected" is not checked for uploads either. No-5xx and the response checks still are.
UPLOAD_EXCLUSIONS = [positive_data_acceptance, negative_data_rejection]

#: ``make fuzz``: how many requests to send in all (0: the fuzz tests are skipped) and the seed.
FUZZ_CASES = int(os.environ.get("SEMANTIC_IMAGES_FUZZ_CASES") or 0)


def fuzz_seed() -> int:
    """SEMANTIC_IMAGES_FUZZ_SEED, or a random one."""
    return int(os.environ.get("SEMANTIC_IMAGES_FUZZ_SEED") or random.SystemRandom().randrange(2**32))


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

    def summary(self, seed: int) -> str:
        lines = [
            f"fuzz seed {seed}: {self.total} requests, {self.server_errors} 5xx, "
            f"{sum(self.failed.values())} contract failures in {len(self.failures)} kinds",
            f"statuses by operation: {dict(sorted(self.statuses.items()))}",
        ]
        lines += [f"\n{self.failed[key]} x {key[0]}: {example}" for key, example in self.failures.items()]
        return "\n".join(lines)


def generation_settings(examples: int, *, derandomize: bool) -> hypothesis_settings:
    """Hypothesis's settings for a fuzz run: ``examples`` cases, no deadline or example database
    (a loaded machine is slow, and every run starts afresh), no shrinking, no health checks."""
    return hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def run_against_schema(
    schema_url: str,
    operations_expected: set[str],
    examples: int,
    *,
    anchor: tuple[str, int],
    excluded: Mapping[str, list[Any]] | None = None,
    session: requests.Session | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> Outcome:
    """Generate ``examples`` requests per operation and mode (valid, invalid), plus valid ones
    with ``anchor`` (an operation whose label contains ``anchor[0]``, its ``id`` set to
    ``anchor[1]``: random ids rarely exist); derandomized without ``seed``."""
    schema = schemathesis.openapi.from_url(schema_url)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == operations_expected
    session = session or requests.Session()
    excluded = excluded or {}
    outcome = Outcome()

    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    runs = [(op, mode, {}) for op in operations for mode in (positive, negative)]
    around = next(op for op in operations if anchor[0] in op.label)
    runs.append((around, positive, {"path_parameters": {"id": anchor[1]}}))
    for index, (operation, mode, fixed) in enumerate(runs):

        @given(case=operation.as_strategy(generation_mode=mode, **fixed))
        @generation_settings(examples, derandomize=seed is None)
        def run(case: schemathesis.Case) -> None:
            label = case.operation.label
            response = case.call(session=session, timeout=60)  # a loaded CI machine is slow, not broken
            outcome.statuses[(label, response.status_code)] += 1
            try:
                case.validate_response(response, excluded_checks=excluded.get(label))
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


def runs_for(operations: set[str]) -> int:
    """How many runs ``run_against_schema`` makes: each operation valid and invalid, plus the anchor's."""
    return 2 * len(operations) + 1


def assert_keeps_the_contract(outcome: Outcome, labels: Iterable[str], reached: int) -> None:
    """No 5xx, no failed check, and more than ``reached`` 200s for each of ``labels``: the
    generator reached the real searches, not only the error paths."""
    assert not outcome.server_errors, outcome.statuses
    assert not outcome.failures, "\n\n".join(outcome.failures.values())
    for label in labels:
        assert outcome.statuses[(label, 200)] > reached, (label, dict(outcome.statuses))
